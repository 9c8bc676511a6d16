#!/usr/bin/env python3
"""Ingest throughput: pacslite, DCMTK's storescp and Orthanc, on the same files and machine.

Generates N synthetic 512×512 16-bit CT images of one registered exam and sends them with
DCMTK's storescu over 1 and over 4 parallel associations to each receiver, each time into an
empty store. Prints images/s and the ratios pacslite/Orthanc and pacslite/storescp, and what
the full-dataset check (every element parsed before 0x0000) costs an image.

    bin/bench              # installs dcmtk, orthanc and iproute2, then runs this with N=500
    .venv/bin/python bench/ingest.py --count 1000

The whole run happens in a private network namespace (``unshare --net --map-root-user``):
Orthanc and storescp cannot be told to listen on loopback only, and there nobody else can
reach them. pacslite runs as ``app.py`` with every durability rule in force (fsync, rename,
directory fsync, index and audit committed before the answer) and files every image to the
exam; storescp writes files without fsync; Orthanc runs with its defaults (SyncStorageArea on).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import flask_cli, free_port  # noqa: E402  (after the path is set)
from tests.dicomkit import echoscu, make_ct  # noqa: E402
from tests.server import Pacs  # noqa: E402

NAMESPACE_FLAG = "PACSLITE_BENCH_IN_NAMESPACE"
PATIENT = {"patient_id": "BENCH01", "name": "张三", "sex": "M", "birth_date": "1980-02-03"}  # as registered
HEADER = {"patient_id": "BENCH01", "name": "ZHANG^SAN", "sex": "M", "birth_date": "19800203"}  # as a modality sends
PARALLEL = (1, 4)


@dataclass
class Result:
    seconds: float
    images: int

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def enter_private_network() -> None:
    """Re-run this script in its own network namespace with only the loopback interface up."""
    # Debian's DCMTK leaves Nagle's algorithm on unless TCP_NODELAY=1 is set; with it on, every
    # image waits ~40 ms for a delayed ACK (storescp: 22 images/s instead of hundreds). Set
    # for storescu, storescp and Orthanc alike, as a department's installation should.
    os.environ["TCP_NODELAY"] = "1"
    if os.environ.get(NAMESPACE_FLAG):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    os.environ[NAMESPACE_FLAG] = "1"
    os.execvp("unshare", ["unshare", "--net", "--map-root-user", sys.executable, *sys.argv])


def wait_for_echo(port: int, aec: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while echoscu(port, aet="STORESCU", aec=aec).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.1)


def send(port: int, aec: str, files: list[Path], parallel: int) -> float:
    """Send ``files`` with ``parallel`` storescu processes (one association each); seconds taken."""
    shares = [files[i::parallel] for i in range(parallel)]
    started = time.perf_counter()
    senders = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", aec, "127.0.0.1", str(port),
                                 *map(str, share)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for share in shares]
    errors = [sender.communicate()[1] for sender in senders]
    seconds = time.perf_counter() - started
    if any(sender.returncode for sender in senders):
        raise SystemExit("storescu failed:\n" + "\n".join(errors))
    return seconds


# ---------------------------------------------------------------- receivers

def checked(receiver: str, stored: int, files: list[Path], seconds: float) -> Result:
    """The result, once the receiver is known to have kept every image."""
    if stored != len(files):
        raise SystemExit(f"{receiver} kept {stored} of {len(files)} images")
    return Result(seconds, stored)


def fresh_pacslite(work: Path, name: str) -> Pacs:
    instance = work / name
    added = flask_cli(instance, "ae", "add", "STORESCU", "--host", "127.0.0.1")
    if added.returncode:
        raise SystemExit(added.stderr)
    return Pacs(instance)


def run_pacslite(work: Path, files: list[Path], parallel: int, accession: str) -> Result:
    pacs = fresh_pacslite(work, f"pacslite-{parallel}")
    try:
        registered = pacs.register(**PATIENT)
        if registered.accession_number != accession:
            raise SystemExit("the accession number changed between runs (midnight?): run again")
        seconds = send(pacs.port, "PACSLITE", files, parallel)
        filed = pacs.query("SELECT instance_count FROM exams WHERE accession_number = ?", accession)[0][0]
    finally:
        pacs.server.stop()
    return checked("pacslite", filed, files, seconds)


def run_storescp(work: Path, files: list[Path], parallel: int) -> Result:
    out = work / f"storescp-{parallel}"
    out.mkdir()
    port = free_port()
    process = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_echo(port, "STORESCP", process, "storescp")
        seconds = send(port, "STORESCP", files, parallel)
    finally:
        process.terminate()
        process.wait()
    return checked("storescp", sum(1 for _ in out.iterdir()), files, seconds)


def run_orthanc(work: Path, files: list[Path], parallel: int) -> Result:
    home = work / f"orthanc-{parallel}"
    home.mkdir()
    dicom_port, http_port = free_port(), free_port()
    config = {"Name": "bench", "StorageDirectory": str(home / "storage"), "IndexDirectory": str(home / "index"),
              "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "Plugins": [],
              "RemoteAccessAllowed": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
              "DicomAlwaysAllowEcho": True}
    (home / "orthanc.json").write_text(json.dumps(config))
    log = (home / "orthanc.log").open("w")
    process = subprocess.Popen(["Orthanc", str(home / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_echo(dicom_port, "ORTHANC", process, "Orthanc")
        seconds = send(dicom_port, "ORTHANC", files, parallel)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=30) as answer:
            stored = json.load(answer)["CountInstances"]
    finally:
        process.terminate()
        process.wait()
        log.close()
    return checked("Orthanc", stored, files, seconds)


# ---------------------------------------------------------------- the full-dataset check's share

def check_cost(work: Path, files: list[Path]) -> tuple[float, float]:
    """Median milliseconds, per image, of the full-dataset check (wellformed.check_file) and of
    the whole ingest that includes it (filing.ingest, in this process, into a fresh store)."""
    from pacslite.core import db, storage
    from pacslite.pacs import filing, wellformed
    from pacslite import create_app
    from pacslite.pacs.index import Source
    from tests.conftest import INDEPENDENT_OF_HOST_AND_HOUR
    with contextlib.redirect_stdout(io.StringIO()):  # its first start prints an admin password
        app = create_app({"INSTANCE_DIR": str(work / "check-cost"), **INDEPENDENT_OF_HOST_AND_HOUR})
    store = app.config["STORAGE_DIR"]
    conn = db.connect(app.config["DATABASE"])
    checks, ingests = [], []
    try:
        for path in files:
            tmp = storage.tmp_dir(store) / path.name
            shutil.copyfile(path, tmp)
            started = time.perf_counter()
            wellformed.check_file(tmp)
            checks.append(time.perf_counter() - started)
            started = time.perf_counter()
            filing.ingest(conn, store, tmp, Source("BENCH", "127.0.0.1"))
            ingests.append(time.perf_counter() - started)
    finally:
        conn.close()
    return statistics.median(checks) * 1000, statistics.median(ingests) * 1000


# ---------------------------------------------------------------- the run

def make_study(directory: Path, count: int, accession: str) -> list[Path]:
    directory.mkdir()
    files = []
    study_uid = series_uid = None
    for number in range(1, count + 1):
        path = directory / f"{number:05d}.dcm"
        ds = make_ct(path, study_uid=study_uid, series_uid=series_uid, accession=accession, size=512,
                     instance_number=number, seed=number, **HEADER)
        study_uid, series_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID
        files.append(path)
    return files


def first_accession(work: Path) -> str:
    """The accession number a fresh installation gives its first exam today."""
    pacs = fresh_pacslite(work, "pacslite-probe")
    try:
        return pacs.register(**PATIENT).accession_number
    finally:
        pacs.server.stop()


def machine() -> Iterator[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    yield f"date      {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    yield f"machine   {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"
    for command in (["Orthanc", "--version"], ["storescp", "--version"]):
        yield f"{command[0]:<10}{subprocess.run(command, capture_output=True, text=True).stdout.splitlines()[0]}"
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    yield f"pacslite  {revision.stdout.strip() or 'unknown revision'}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="images per run (default 500)")
    parser.add_argument("--workdir", type=Path, help="where files and stores go (default: a new temporary folder)")
    args = parser.parse_args()
    enter_private_network()
    work = Path(tempfile.mkdtemp(prefix="pacslite-bench-", dir=args.workdir))
    try:
        accession = first_accession(work)
        print(f"generating {args.count} CT images of 512×512 16-bit ...", flush=True)
        files = make_study(work / "study", args.count, accession)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        receivers: dict[str, Callable[[int], Result]] = {
            "pacslite": lambda n: run_pacslite(work, files, n, accession),
            "storescp": lambda n: run_storescp(work, files, n),
            "Orthanc": lambda n: run_orthanc(work, files, n),
        }
        rates: dict[str, dict[int, float]] = {}
        for name, receive in receivers.items():
            for parallel in PARALLEL:
                result = receive(parallel)
                rates.setdefault(name, {})[parallel] = result.rate
                print(f"  {name:<9} {parallel} association(s): {result.images} images in {result.seconds:6.2f} s",
                      flush=True)
        print()
        for line in machine():
            print(line)
        print(f"files     {args.count} images, {megabytes:.0f} MB, sent with storescu (DCMTK)")
        print()
        print(f"{'images/s':<22}" + "".join(f"{n} assoc.".rjust(12) for n in PARALLEL))
        for name in receivers:
            print(f"{name:<22}" + "".join(f"{rates[name][n]:12.0f}" for n in PARALLEL))
        for other in ("Orthanc", "storescp"):
            print(f"{'pacslite/' + other:<22}" + "".join(f"{rates['pacslite'][n] / rates[other][n]:12.2f}"
                                                       for n in PARALLEL))
        check, ingest = check_cost(work, files)
        print()
        print(f"full-dataset check (wellformed.check_file): {check:.3f} ms an image, {100 * check / ingest:.1f} %"
              f" of ingest's {ingest:.2f} ms (in-process, median); at the 1-association rate above an image"
              f" takes {1000 / rates['pacslite'][1]:.2f} ms, so the check is"
              f" {100 * check * rates['pacslite'][1] / 1000:.1f} % of it")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
