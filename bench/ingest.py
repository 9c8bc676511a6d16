#!/usr/bin/env python3
"""Ingest throughput: pacslite, DCMTK's storescp and Orthanc, on the same files and machine.

Generates N synthetic 512×512 16-bit CT images of one registered exam and sends them with
DCMTK's storescu over 1 and over 4 parallel associations to each receiver, each time into an
empty store: pacslite on SQLite (one process) and on PostgreSQL with 1, 2 and 4 receiving
processes sharing the DICOM port (SHARE_PORTS), storescp and Orthanc; the median of --repeat
runs. Prints images/s, the ratios to Orthanc and storescp, the CPU milliseconds each image cost
(the receiver's processes; PostgreSQL's server separately), and what the full-dataset check
(every element parsed before 0x0000) costs an image.

    bin/bench              # installs dcmtk, orthanc, postgresql and iproute2, then runs this with N=500
    .venv/bin/python bench/ingest.py --count 1000 --repeat 3

The whole run happens in a private network namespace (``unshare --net --map-root-user``):
Orthanc and storescp cannot be told to listen on loopback only, and there nobody else can
reach them. pacslite runs as ``app.py`` with every durability rule in force (fsync, rename,
directory fsync, index and audit committed before the answer) and files every image to the
exam; storescp writes files without fsync; Orthanc runs with its defaults (SyncStorageArea on).
PostgreSQL is a private cluster started before the namespace (reached through its Unix
socket), with its defaults (fsync and synchronous_commit on).
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

from tests import databases  # noqa: E402  (after the path is set)
from tests.conftest import INDEPENDENT_OF_HOST_AND_HOUR, free_port  # noqa: E402
from tests.dicomkit import echoscu, make_ct  # noqa: E402
from tests.server import Pacs, start  # noqa: E402

NAMESPACE_FLAG = "PACSLITE_BENCH_IN_NAMESPACE"
PATIENT = {"patient_id": "BENCH01", "name": "张三", "sex": "M", "birth_date": "1980-02-03"}  # as registered
HEADER = {"patient_id": "BENCH01", "name": "ZHANG^SAN", "sex": "M", "birth_date": "19800203"}  # as a modality sends
PARALLEL = (1, 4)
PROCESSES = (1, 2, 4)  # pacslite processes receiving on PostgreSQL
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    seconds: float
    images: int
    cpu_seconds: float = 0.0  # the receiver's processes
    database_cpu_seconds: float = 0.0  # PostgreSQL's server

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes (all their threads) used so far, and that of their
    children that ended (PostgreSQL's server: its backends come and go)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICK


def postgres_pids() -> list[int]:
    """PostgreSQL's server processes (only the benchmark's private cluster runs here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def enter_private_network(with_postgresql: bool) -> None:
    """Run this script again in its own network namespace with only the loopback interface up
    (PostgreSQL's private cluster started first, outside it, and stopped after it)."""
    # Debian's DCMTK leaves Nagle's algorithm on unless TCP_NODELAY=1 is set; with it on, every
    # image waits ~40 ms for a delayed ACK (storescp: 22 images/s instead of hundreds). Set
    # for storescu, storescp and Orthanc alike, as a department's installation should.
    os.environ["TCP_NODELAY"] = "1"
    if os.environ.get(NAMESPACE_FLAG):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    os.environ[NAMESPACE_FLAG] = "1"
    if with_postgresql:
        databases.server(durable=True)
        os.environ["PACSLITE_TEST_POSTGRESQL_VIA_SOCKET"] = "1"
    done = subprocess.run(["unshare", "--net", "--map-root-user", sys.executable, *sys.argv])
    sys.exit(done.returncode)  # the cluster is stopped on the way out (atexit)


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


def flask(instance: Path, database: str, *args: str) -> None:
    env = {**os.environ, "PACSLITE_INSTANCE_DIR": str(instance), "PACSLITE_DATABASE_URL": database,
           **{f"PACSLITE_{k}": str(v) for k, v in INDEPENDENT_OF_HOST_AND_HOUR.items()}}
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise SystemExit(done.stderr)


def fresh_pacslite(work: Path, name: str, processes: int = 0) -> tuple[Pacs, list]:
    """pacslite in a new instance folder: on SQLite (``processes`` 0), else on a new PostgreSQL
    database with that many processes sharing the DICOM and HTTP ports."""
    instance = work / name
    database = databases.new_database(instance) if processes else ""
    flask(instance, database, "ae", "add", "STORESCU", "--host", "127.0.0.1")
    if not processes:
        return Pacs(instance), []
    shared = {"PACSLITE_SHARE_PORTS": "1", "PACSLITE_DICOM_PORT": str(free_port()),
              "PACSLITE_HTTP_PORT": str(free_port()), "PACSLITE_HL7_PORT": "-1", "PACSLITE_DICOM_TLS_PORT": "-1"}
    pacs = Pacs(instance, database=database, **shared)
    others = [start(instance, PACSLITE_DATABASE_URL=database, **shared) for _ in range(processes - 1)]
    return pacs, others


def run_pacslite(work: Path, files: list[Path], parallel: int, accession: str, processes: int = 0) -> Result:
    pacs, others = fresh_pacslite(work, f"pacslite-{processes}-{parallel}-{time.monotonic_ns()}", processes)
    servers = [pacs.server, *others]
    try:
        registered = pacs.register(**PATIENT)
        if registered.accession_number != accession:
            raise SystemExit("the accession number changed between runs (midnight?): run again")
        pids = [server.process.pid for server in servers]
        before, database_before = cpu_seconds(pids), cpu_seconds(postgres_pids())
        seconds = send(pacs.port, "PACSLITE", files, parallel)
        cpu, database_cpu = cpu_seconds(pids) - before, cpu_seconds(postgres_pids()) - database_before
        filed = pacs.query("SELECT instance_count FROM exams WHERE accession_number = ?", accession)[0][0]
    finally:
        for server in reversed(servers):
            server.stop()
    result = checked("pacslite", filed, files, seconds)
    result.cpu_seconds, result.database_cpu_seconds = cpu, database_cpu if processes else 0.0
    return result


def run_storescp(work: Path, files: list[Path], parallel: int) -> Result:
    out = work / f"storescp-{parallel}-{time.monotonic_ns()}"
    out.mkdir()
    port = free_port()
    process = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_echo(port, "STORESCP", process, "storescp")
        before = cpu_seconds([process.pid])
        seconds = send(port, "STORESCP", files, parallel)
        cpu = cpu_seconds([process.pid]) - before
    finally:
        process.terminate()
        process.wait()
    result = checked("storescp", sum(1 for _ in out.iterdir()), files, seconds)
    result.cpu_seconds = cpu
    return result


def run_orthanc(work: Path, files: list[Path], parallel: int) -> Result:
    home = work / f"orthanc-{parallel}-{time.monotonic_ns()}"
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
        before = cpu_seconds([process.pid])
        seconds = send(dicom_port, "ORTHANC", files, parallel)
        cpu = cpu_seconds([process.pid]) - before
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=30) as answer:
            stored = json.load(answer)["CountInstances"]
    finally:
        process.terminate()
        process.wait()
        log.close()
    result = checked("Orthanc", stored, files, seconds)
    result.cpu_seconds = cpu
    return result


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
    pacs, _ = fresh_pacslite(work, "pacslite-probe")
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


def median_result(results: list[Result]) -> Result:
    """The run with the median rate (its CPU figures with it)."""
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="images per run (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, the median is shown (default 3)")
    parser.add_argument("--no-postgresql", action="store_true", help="pacslite on SQLite only")
    parser.add_argument("--workdir", type=Path, help="where files and stores go (default: a new temporary folder)")
    parser.add_argument("--only", metavar="TEXT", help="only the receivers whose name holds TEXT (and Orthanc,"
                        " the measure of the ratios): 'PG', 'SQLite', 'storescp'")
    args = parser.parse_args()
    enter_private_network(not args.no_postgresql)
    work = Path(tempfile.mkdtemp(prefix="pacslite-bench-", dir=args.workdir))
    try:
        accession = first_accession(work)
        print(f"generating {args.count} CT images of 512×512 16-bit ...", flush=True)
        files = make_study(work / "study", args.count, accession)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        receivers: dict[str, Callable[[int], Result]] = {
            "pacslite SQLite": lambda n: run_pacslite(work, files, n, accession),
        }
        if not args.no_postgresql:
            for processes in PROCESSES:
                receivers[f"pacslite PG ×{processes}"] = (
                    lambda n, p=processes: run_pacslite(work, files, n, accession, processes=p))
        receivers["storescp"] = lambda n: run_storescp(work, files, n)
        receivers["Orthanc"] = lambda n: run_orthanc(work, files, n)
        if args.only:
            receivers = {name: receive for name, receive in receivers.items()
                         if args.only in name or name == "Orthanc"}
        results: dict[str, dict[int, Result]] = {}
        for name, receive in receivers.items():
            for parallel in PARALLEL:
                runs = []
                for _ in range(args.repeat):
                    runs.append(receive(parallel))
                    print(f"  {name:<18} {parallel} association(s): {runs[-1].images} images in"
                          f" {runs[-1].seconds:6.2f} s", flush=True)
                results.setdefault(name, {})[parallel] = median_result(runs)
        print()
        for line in machine():
            print(line)
        print(f"files     {args.count} images, {megabytes:.0f} MB, sent with storescu (DCMTK); median of"
              f" {args.repeat} runs")
        print()
        columns = "".join(f"{n} assoc.".rjust(10) for n in PARALLEL)
        print(f"{'':<22}{'images/s':>20}{'/Orthanc':>20}{'CPU ms/image':>20}{'+PostgreSQL':>20}")
        print(f"{'':<22}{columns}{columns}{columns}{columns}")
        orthanc = results["Orthanc"]
        for name in receivers:
            row = results[name]
            print(f"{name:<22}" + "".join(f"{row[n].rate:10.0f}" for n in PARALLEL)
                  + "".join(f"{row[n].rate / orthanc[n].rate:10.2f}" for n in PARALLEL)
                  + "".join(f"{1000 * row[n].cpu_seconds / row[n].images:10.2f}" for n in PARALLEL)
                  + "".join(f"{1000 * row[n].database_cpu_seconds / row[n].images:10.2f}" for n in PARALLEL))
        if "pacslite SQLite" not in results or "storescp" not in results:
            return
        sqlite = results["pacslite SQLite"]
        print(f"{'pacslite SQLite/storescp':<22}" + "".join(
            f"{sqlite[n].rate / results['storescp'][n].rate:10.2f}" for n in PARALLEL))
        check, ingest = check_cost(work, files)
        print()
        print(f"full-dataset check (wellformed.check_file): {check:.3f} ms an image, {100 * check / ingest:.1f} %"
              f" of ingest's {ingest:.2f} ms (in-process, median); at the 1-association rate above an image"
              f" takes {1000 / sqlite[1].rate:.2f} ms, so the check is"
              f" {100 * check * sqlite[1].rate / 1000:.1f} % of it")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
