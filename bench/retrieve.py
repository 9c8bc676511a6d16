#!/usr/bin/env python3
"""Retrieve and query: pacslite against Orthanc, on the same files and machine.

1. C-MOVE of one N-image CT study (default 300, 512×512 16-bit) from pacslite and from Orthanc
   to the same DCMTK storescp, timed by movescu: images/s and the ratio pacslite/Orthanc.
2. A STUDY-level C-FIND by patient name on a database of a department's two years (default
   200,000 exams and studies, varied Chinese names), in-process through ``qr.find``: the
   median milliseconds of each kind of query.

    bin/bench            # runs bench/ingest.py, then this
    .venv/bin/python bench/retrieve.py [--count 300] [--exams 200000]

Part 1 runs in a private network namespace (Orthanc and storescp cannot be told to listen on
loopback only), with TCP_NODELAY=1 for the DCMTK programs and Orthanc (see bench/ingest.py).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (HEADER, PATIENT, enter_private_network, first_accession, machine, make_study,  # noqa: E402
                          send, wait_for_echo)
from tests.conftest import flask_cli, free_port  # noqa: E402
from tests.dicomkit import run  # noqa: E402
from tests.server import Pacs  # noqa: E402


def movescu(port: int, aec: str, destination: str, study_uid: str) -> float:
    started = time.perf_counter()
    done = run(["movescu", "-S", "-aet", "WORKSTATION", "-aec", aec, "-aem", destination, "-k",
                "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port)],
               timeout=900)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"movescu from {aec} failed:\n{done.stderr[-2000:]}")
    return seconds


class Destination:
    """DCMTK storescp, writing what it receives."""

    def __init__(self, work: Path, name: str) -> None:
        self.port, self.folder = free_port(), work / name
        self.folder.mkdir()
        self.process = subprocess.Popen(["storescp", "--max-pdu", "131072", "-aet", "DEST", "-od", str(self.folder),
                                         str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_echo(self.port, "DEST", self.process, "storescp")

    def received(self) -> int:
        return sum(1 for _ in self.folder.iterdir())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def move_from_pacslite(work: Path, files: list[Path], study_uid: str, accession: str) -> float:
    destination = Destination(work, "from-pacslite")
    instance = work / "pacslite"
    for args in (["STORESCU"], ["WORKSTATION", "--may", "query,retrieve"],
                 ["DEST", "--host", "127.0.0.1", "--port", str(destination.port), "--may", ""]):
        added = flask_cli(instance, "ae", "add", *args)
        if added.returncode:
            raise SystemExit(added.stderr)
    pacs = Pacs(instance)
    try:
        if pacs.register(**PATIENT).accession_number != accession:
            raise SystemExit("the accession number changed between runs (midnight?): run again")
        send(pacs.port, "PACSLITE", files, 4)
        seconds = movescu(pacs.port, "PACSLITE", "DEST", study_uid)
    finally:
        pacs.server.stop()
        destination.stop()
    if destination.received() != len(files):
        raise SystemExit(f"pacslite moved {destination.received()} of {len(files)} images")
    return seconds


def move_from_orthanc(work: Path, files: list[Path], study_uid: str) -> float:
    destination = Destination(work, "from-orthanc")
    home = work / "orthanc"
    home.mkdir()
    dicom_port, http_port = free_port(), free_port()
    config = {"Name": "bench", "StorageDirectory": str(home / "storage"), "IndexDirectory": str(home / "index"),
              "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "Plugins": [],
              "RemoteAccessAllowed": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
              "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowMove": True,
              "DicomModalities": {"dest": ["DEST", "127.0.0.1", destination.port]}}
    (home / "orthanc.json").write_text(json.dumps(config))
    log = (home / "orthanc.log").open("w")
    process = subprocess.Popen(["Orthanc", str(home / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_echo(dicom_port, "ORTHANC", process, "Orthanc")
        send(dicom_port, "ORTHANC", files, 4)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=30) as answer:
            if json.load(answer)["CountInstances"] != len(files):
                raise SystemExit("Orthanc did not keep every image")
        seconds = movescu(dicom_port, "ORTHANC", "DEST", study_uid)
    finally:
        process.terminate()
        process.wait()
        log.close()
        destination.stop()
    if destination.received() != len(files):
        raise SystemExit(f"Orthanc moved {destination.received()} of {len(files)} images")
    return seconds


# ---------------------------------------------------------------- C-FIND at paper scale

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = ["小明", "建国", "秀英", "桂英", "志强", "海燕", "丽华", "国强", "红梅", "晓东", "玉兰", "伟", "芳", "敏", "静",
         "磊", "洋", "勇", "军", "杰", "娟", "涛", "明", "超", "霞", "平", "刚", "桂兰", "文", "辉"]


def fill(conn, count: int) -> None:
    """``count`` patients, each with one exam and one filed study of one series (direct SQL)."""
    from pacslite.core import clock, names
    rng = random.Random(7)
    readings = {}
    for surname in SURNAMES:
        for given in GIVEN:
            pinyin, initials = names.pinyin_of(surname + given)
            readings[surname + given] = (pinyin, initials)
    pool = list(readings)
    now = clock.to_db(clock.now())
    patients, exams, studies, series = [], [], [], []
    for n in range(1, count + 1):
        name = rng.choice(pool)
        pinyin, initials = readings[name]
        patients.append((n, f"P{n:08d}", name, pinyin, initials, "M", "1980-01-01", now, now))
        exams.append((n, f"B{n:011d}", n, "CT", "CT", "outpatient", "CT", "routine", now, f"2.25.1{n}",
                      "final", 1, 10, now, "bench", now))
        studies.append((n, f"2.25.1{n}", n, f"B{n:011d}", f"P{n:08d}", "20260101", "胸部CT", now))
        series.append((n, n, f"2.25.2{n}", "CT", now))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO patients (id, patient_id, name, name_pinyin, name_initials, sex, birth_date,"
                     " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", patients)
    conn.executemany("INSERT INTO exams (id, accession_number, patient_ref, modality, dicom_modality, source,"
                     " procedure, priority, scheduled_at, study_instance_uid, status, series_count, instance_count,"
                     " registered_at, registered_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     exams)
    conn.executemany("INSERT INTO studies (id, study_instance_uid, exam_ref, accession_number, patient_id, study_date,"
                     " study_description, first_received_at, last_received_at, series_count, instance_count)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?8, ?8, 1, 10)", studies)
    conn.executemany("INSERT INTO series (id, study_ref, series_instance_uid, modality, first_received_at,"
                     " last_received_at, instance_count) VALUES (?, ?, ?, ?, ?5, ?5, 10)", series)
    conn.execute("COMMIT")


def time_queries(exams: int, runs: int = 5) -> list[tuple[str, int, float]]:
    from pydicom.dataset import Dataset

    from pacslite.core import db
    from pacslite.pacs import qr
    from pacslite import create_app
    work = Path(tempfile.mkdtemp(prefix="pacslite-qr-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            app = create_app({"INSTANCE_DIR": str(work), "DEFAULT_LANGUAGE": "en"})
        conn = db.connect(app.config["DATABASE"])
        fill(conn, exams)
        results = []
        for label, key, value in (("exact pinyin name WANG^XIAOMING", "PatientName", "WANG^XIAOMING"),
                                  ("pinyin prefix ZHANG*", "PatientName", "ZHANG*"),
                                  ("ideographs 王小*", "PatientName", "王小*"),
                                  ("patient ID", "PatientID", f"P{exams // 2:08d}"),
                                  ("wildcard without a prefix *XIAOMING", "PatientName", "*XIAOMING")):
            timings, found = [], 0
            for _ in range(runs):
                identifier = Dataset()
                identifier.SpecificCharacterSet = "ISO_IR 192"
                identifier.QueryRetrieveLevel = "STUDY"
                setattr(identifier, key, value)
                identifier.StudyInstanceUID = ""
                identifier.AccessionNumber = ""
                identifier.ModalitiesInStudy = ""
                started = time.perf_counter()
                found = sum(1 for _ in itertools.islice(
                    qr.find(conn, app.config, identifier, qr.STUDY_ROOT, "ISO_IR 192"), app.config["QR_MAX_ANSWERS"]))
                timings.append(time.perf_counter() - started)
            results.append((label, found, statistics.median(timings) * 1000))
        conn.close()
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="images in the moved study (default 300)")
    parser.add_argument("--exams", type=int, default=200_000, help="exams for the C-FIND timing (default 200,000)")
    args = parser.parse_args()
    enter_private_network()
    work = Path(tempfile.mkdtemp(prefix="pacslite-retrieve-"))
    try:
        accession = first_accession(work)
        print(f"generating {args.count} CT images of 512×512 16-bit ...", flush=True)
        files = make_study(work / "study", args.count, accession)
        from pydicom import dcmread
        study_uid = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        pacslite_s = move_from_pacslite(work, files, study_uid, accession)
        orthanc_s = move_from_orthanc(work, files, study_uid)
        print(f"filling {args.exams} exams for the C-FIND timing ...", flush=True)
        queries = time_queries(args.exams)
        print()
        for line in machine():
            print(line)
        print(f"files     {args.count} images of one study, {HEADER['patient_id']}, sent on to DCMTK storescp")
        print()
        print(f"C-MOVE of the study      pacslite {args.count / pacslite_s:7.0f} images/s ({pacslite_s:.2f} s)"
              f"   Orthanc {args.count / orthanc_s:7.0f} images/s ({orthanc_s:.2f} s)"
              f"   pacslite/Orthanc {orthanc_s / pacslite_s:.2f}   (target >= 1)")
        print(f"STUDY C-FIND on {args.exams} exams, median of 5 (target < 50 ms):")
        for label, found, ms in queries:
            print(f"  {label:<40} {found:>5} answers  {ms:8.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
