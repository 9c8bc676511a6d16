"""The test HIS: HL7 v2 messages as a hospital information system sends them, over python-hl7's
MLLP client, and their acknowledgements read by an independent parser (hl7apy)."""
from __future__ import annotations

import itertools
import socket

from hl7.client import MLLPClient
from hl7apy.parser import parse_message

START, END = b"\x0b", b"\x1c\r"
_ids = itertools.count(1)


def control_id() -> str:
    return f"MSG{next(_ids):06d}"


def msh(kind: str, control: str | None = None, *, sender: str = "HIS", charset: str = "UNICODE UTF-8",
        version: str = "2.4") -> str:
    return (f"MSH|^~\\&|{sender}|HOSP|PACSLITE|RADIOLOGY|20261205090000||{kind}|{control or control_id()}|P|{version}"
            f"||||||{charset}")


def pid(patient_id: str, name: str = "张三", birth_date: str = "19800203", sex: str = "M", *,
        phone: str = "13800000000", national_id: str = "") -> str:
    ids = f"{patient_id}^^^HOSP^PI" + (f"~{national_id}^^^CHN^NNCHN" if national_id else "")
    return f"PID|1||{ids}||{name}||{birth_date}|{sex}|||||{phone}"


def adt(event: str, patient: str, control: str | None = None, **options: str) -> str:
    return "\r".join([msh(f"ADT^{event}^ADT_A01", control, **options), "EVN|" + event + "|20261205090000", patient])


def fields(name: str, values: dict[int, str]) -> str:
    """A segment from {field number: value}: the numbers as HL7 counts them."""
    return "|".join([name, *(values.get(n, "") for n in range(1, max(values) + 1))])


def orm(control_code: str, placer: str, patient: str, *, procedure: str = "CT001^胸部CT平扫^L", modality: str = "CT",
        when: str = "202612050930", priority: str = "R", patient_class: str = "O", ward: str = "",
        control: str | None = None, status: str = "", reason: str = "", **options: str) -> str:
    """ORM^O01 with one order: PV1, ORC (control code, placer number, status, timing, physician,
    department, reason), OBR (procedure, clinical information, modality in OBR-24)."""
    return "\r".join([
        msh("ORM^O01^ORM_O01", control, **options), patient,
        fields("PV1", {1: "1", 2: patient_class, 3: ward, 19: f"V{placer}"}),
        fields("ORC", {1: control_code, 2: placer, 4: f"{placer}G", 5: status, 7: f"^^^{when}^^{priority}",
                       9: "20261205085000", 12: "D001^李^医生", 16: f"^{reason}" if reason else "",
                       17: "呼吸内科^呼吸内科"}),
        fields("OBR", {1: "1", 2: placer, 4: procedure, 13: "咳嗽两周", 16: "D001^李^医生", 24: modality}),
    ])


def send(port: int, message: str, encoding: str = "utf-8") -> bytes:
    """One message over MLLP (python-hl7's client); the acknowledgement's bytes, unframed."""
    with MLLPClient("127.0.0.1", port, encoding=encoding) as client:
        return unframe(receive_all(client.socket, client.send_message(message)))


def receive_all(sock: socket.socket, first: bytes) -> bytes:
    data = first
    while not data.endswith(END):
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data


def unframe(data: bytes) -> bytes:
    assert data.startswith(START) and data.endswith(END), data[:200]
    return data[1:-2]


def ack_of(data: bytes, encoding: str = "utf-8"):
    """The acknowledgement as hl7apy reads it (an independent parser), with its MSA and ERR."""
    return parse_message(data.decode(encoding).replace("\r\n", "\r"), find_groups=False)


def ack_code(data: bytes, encoding: str = "utf-8") -> str:
    return ack_of(data, encoding).msa.msa_1.value


class TestHis:
    """The hospital information system's receiving side: python-hl7's asyncio MLLP server on a
    port of its own, answering each message AA (or ``answer``) with python-hl7's create_ack, and
    keeping what it received (decoded with ``encoding``). ``stop()`` takes it down, ``start()``
    brings it back on the same port."""

    __test__ = False  # not a test class

    def __init__(self, port: int, encoding: str = "utf-8") -> None:
        self.port, self.encoding = port, encoding
        self.received: list[str] = []
        self.answer = "AA"
        self._loop = None
        self._thread = None
        self._server = None

    def start(self) -> "TestHis":
        import asyncio
        import threading

        import hl7
        from hl7.mllp import start_hl7_server

        ready = threading.Event()

        async def on_client(reader, writer) -> None:
            try:
                while not writer.is_closing():
                    text = (await reader.readblock()).decode(self.encoding)  # as sent, not re-serialised
                    self.received.append(text)
                    message = hl7.parse(text)
                    writer.writemessage(message.create_ack(self.answer, application="HIS", facility="HOSP"))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(start_hl7_server(on_client, "127.0.0.1", self.port,
                                                                     encoding=self.encoding))
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the test HIS did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def messages(self, kind: str) -> list:
        """What arrived of this type (ORU^R01, ORM^O01), read by hl7apy, an independent parser."""
        return [parse_message(text.replace("\n", "\r"), find_groups=False) for text in self.received
                if text.split("|")[8].startswith(kind)]
