"""HL7 under pressure, against the real process: a SIGKILL in the middle of a burst loses no
acknowledged message and applies none twice; a flood stays bounded and the pages answer."""
from __future__ import annotations

import json
import signal
import socket
import threading
import urllib.request

from tests import hl7kit, server as pacs_server
from tests.hl7kit import ack_code, orm, pid

SENDERS = json.dumps({"HIS": {"hosts": ["127.0.0.1"]}})


def orders_burst(count: int) -> list[bytes]:
    return [hl7kit.START + orm("NW", f"KILL{n:04d}", pid(f"K{n:05d}", "张三"), control=f"KILL-{n:04d}").encode()
            + hl7kit.END for n in range(count)]


def test_a_kill_in_the_middle_of_a_burst_loses_no_acknowledged_order_and_applies_none_twice(tmp_path) -> None:
    pacs = pacs_server.Pacs(tmp_path / "instance", PACSLITE_HL7_SENDERS=SENDERS)
    burst = orders_burst(60)
    acknowledged: list[int] = []
    try:
        with socket.create_connection(("127.0.0.1", pacs.hl7_port), timeout=30) as sock:
            for n, frame in enumerate(burst):
                sock.sendall(frame)
                if n == 30:  # the 31st is on its way: the process dies under it
                    pacs.server.stop(signal.SIGKILL)
                    break
                answer = hl7kit.unframe(hl7kit.receive_all(sock, sock.recv(65536)))
                assert ack_code(answer) == "AA"
                acknowledged.append(n)
        assert len(acknowledged) == 30
        pacs.restart()
        placed = {row[0] for row in pacs.query("SELECT placer_order_number FROM exams")}
        assert {f"KILL{n:04d}" for n in acknowledged} <= placed  # nothing acknowledged is lost
        # the HIS sends everything again (it saw no answer for the rest): each applied once
        with socket.create_connection(("127.0.0.1", pacs.hl7_port), timeout=30) as sock:
            for frame in burst:
                sock.sendall(frame)
                assert ack_code(hl7kit.unframe(hl7kit.receive_all(sock, sock.recv(65536)))) == "AA"
        rows = pacs.query("SELECT placer_order_number, COUNT(*) FROM exams GROUP BY placer_order_number")
        assert len(rows) == 60 and {row[1] for row in rows} == {1}
        assert pacs.query("SELECT COUNT(*), SUM(attempts) FROM hl7_messages")[0][:] == (60, 60)
        registered = pacs.query("SELECT COUNT(*) FROM audit_log WHERE action = 'exam.register'")[0][0]
        assert registered == 60
    finally:
        pacs.server.stop()


def test_a_flood_is_bounded_and_the_pages_answer_meanwhile(tmp_path) -> None:
    """Three senders (the per-address limit) send 200 messages each as fast as they can; a fourth
    connection is refused; the login page answers during the flood; every message is answered."""
    pacs = pacs_server.Pacs(tmp_path / "instance", PACSLITE_HL7_SENDERS=SENDERS,
                            PACSLITE_HL7_MAX_CONNECTIONS_PER_ADDRESS="3")
    answered: list[int] = []
    started = threading.Barrier(4)

    def flood(sender: int) -> None:
        with socket.create_connection(("127.0.0.1", pacs.hl7_port), timeout=60) as sock:
            started.wait()
            codes = []
            for n in range(200):
                message = hl7kit.adt("A08", pid(f"F{sender}{n:04d}", "李四"), control=f"FLOOD-{sender}-{n}")
                sock.sendall(hl7kit.START + message.encode() + hl7kit.END)
                codes.append(ack_code(hl7kit.unframe(hl7kit.receive_all(sock, sock.recv(65536)))))
            answered.append(codes.count("AA"))

    try:
        threads = [threading.Thread(target=flood, args=(s,)) for s in range(3)]
        for thread in threads:
            thread.start()
        started.wait()
        extra = socket.create_connection(("127.0.0.1", pacs.hl7_port), timeout=30)
        assert extra.recv(10) == b""  # the fourth connection from this address: closed at once
        extra.close()
        with urllib.request.urlopen(pacs.server.url + "/login", timeout=30) as page:
            assert page.status == 200
        for thread in threads:
            thread.join(120)
        assert answered == [200, 200, 200]
        assert pacs.query("SELECT COUNT(*) FROM patients")[0][0] == 600
    finally:
        pacs.server.stop()
