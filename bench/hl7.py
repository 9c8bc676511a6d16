#!/usr/bin/env python3
"""HL7 v2 over MLLP against the real process (`python app.py`): 1,000 ADT^A04 and 1,000
ORM^O01 (new orders) over one connection and over four at once, messages a second and the ACK
latency (median, p95, as the HIS waits for it); then a merge (ADT^A40) of a patient with
2,000 filed images: the ACK, the time until C-FIND by the new ID finds the study (consistent
answers), and until every stored file has been rewritten.

    .venv/bin/python bench/hl7.py [--messages 1000] [--images 2000]
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not bench/: this file's name would hide the hl7 package

from bench.ingest import machine  # noqa: E402
from pacslite.hl7 import codec  # noqa: E402
from tests import hl7kit, server as pacs_server  # noqa: E402
from tests.conftest import flask_cli  # noqa: E402
from tests.dicomkit import make_ct, qr_findscu, store_results, storescu  # noqa: E402


def exchange(port: int, messages: list[str]) -> list[float]:
    """Send each message on one connection and wait for its ACK; the seconds each took."""
    took = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for message in messages:
            started = time.perf_counter()
            sock.sendall(hl7kit.START + message.encode() + hl7kit.END)
            ack = hl7kit.unframe(hl7kit.receive_all(sock, sock.recv(65536)))
            took.append(time.perf_counter() - started)
            if codec.ack_code(ack) != "AA":  # the light reading: the client must not be the bottleneck
                raise SystemExit(f"not accepted: {ack[:300]!r}")
    return took


def run(port: int, batches: list[list[str]]) -> tuple[float, list[float]]:
    """The batches over as many connections at once; (messages a second, every latency)."""
    latencies: list[list[float]] = [[] for _ in batches]
    threads = [threading.Thread(target=lambda i=i: latencies[i].extend(exchange(port, batches[i])))
               for i in range(len(batches))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [t for batch in latencies for t in batch]
    return len(flat) / elapsed, flat


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


def messages(kind: str, start: int, count: int) -> list[str]:
    if kind == "ADT":
        return [hl7kit.adt("A04", hl7kit.pid(f"B{n:06d}", "王小明", national_id=""), control=f"ADT-{n}")
                for n in range(start, start + count)]
    return [hl7kit.orm("NW", f"BORD{n:06d}", hl7kit.pid(f"B{n:06d}", "王小明"), control=f"ORM-{n}")
            for n in range(start, start + count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pacslite-hl7-"))
    instance = work / "instance"
    assert flask_cli(instance, "ae", "add", "STORESCU").returncode == 0
    assert flask_cli(instance, "ae", "add", "WORKSTATION", "--may", "query").returncode == 0
    pacs = pacs_server.Pacs(instance, PACSLITE_HL7_SENDERS=json.dumps({"HIS": {"hosts": ["127.0.0.1"]}}))
    rows = []
    try:
        n = args.messages
        for kind, offset in (("ADT", 0), ("ORM", 0)):
            rate, took = run(pacs.hl7_port, [messages(kind, offset, n)])
            rows.append((f"{n} {kind} over 1 connection", rate, took))
        for kind, offset in (("ADT", n), ("ORM", n)):
            quarter = n // 4
            rate, took = run(pacs.hl7_port, [messages(kind, offset + i * quarter, quarter) for i in range(4)])
            rows.append((f"{n} {kind} over 4 connections", rate, took))
        for line in machine():
            print(line)
        print(f"{'what':34} {'msg/s':>7} {'median ms':>10} {'p95 ms':>8}")
        for what, rate, took in rows:
            print(f"{what:34} {rate:7.0f} {statistics.median(took) * 1000:10.1f} {p95(took) * 1000:8.1f}")

        # a merge of a patient with many images
        exchange(pacs.hl7_port, [hl7kit.orm("NW", "MERGE1", hl7kit.pid("MB0001", "李四"), control="MERGE-ORDER")])
        accession = pacs.query("SELECT accession_number FROM exams WHERE placer_order_number = 'MERGE1'")[0][0]
        files = []
        for number in range(1, args.images + 1):
            path = work / "images" / f"{number}.dcm"
            path.parent.mkdir(exist_ok=True)
            make_ct(path, study_uid="1.2.826.0.1.3680043.8.498.1",
                    series_uid=f"1.2.826.0.1.3680043.8.498.{number // 500 + 2}", instance_number=number, accession=accession, patient_id="MB0001", name="LI^SI", sex="M",
                    birth_date="19800203", size=32, seed=number)
            files.append(path)
        sent = storescu(pacs.port, files)
        assert set(store_results(sent.stdout + sent.stderr).values()) == {"Success"}
        exchange(pacs.hl7_port, [hl7kit.adt("A04", hl7kit.pid("MB0002", "李四"), control="MERGE-SURVIVOR")])
        started = time.perf_counter()
        exchange(pacs.hl7_port, ["\r".join([hl7kit.msh("ADT^A40^ADT_A39", "MERGE-A40"), "EVN|A40",
                                            hl7kit.pid("MB0002", "李四"), "MRG|MB0001^^^HOSP^PI"])])
        acked = time.perf_counter() - started
        result, answers = qr_findscu(pacs.port, "S", ["QueryRetrieveLevel=STUDY", "PatientID=MB0002",
                                                      "NumberOfStudyRelatedInstances"], work / "find")
        consistent = time.perf_counter() - started
        found = int(answers[0].NumberOfStudyRelatedInstances) if answers else 0
        conn = pacs.conn()
        while conn.execute("SELECT files_done_at FROM patient_merges").fetchone()[0] is None:
            time.sleep(0.2)
        rewritten = time.perf_counter() - started
        conn.close()
        print(f"merge (ADT^A40) of a patient with {args.images} images: ACK {acked * 1000:.0f} ms;"
              f" C-FIND by the new ID finds {found} images at {consistent:.2f} s;"
              f" every file rewritten at {rewritten:.1f} s ({args.images / (rewritten - acked):.0f} files/s)")
    finally:
        pacs.server.stop()


if __name__ == "__main__":
    main()
