"""Nothing acknowledged is lost: the real process killed mid-transfer, and a full disk."""
from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from pydicom import dcmread

from pacslite.core import storage
from pacslite.pacs import filing
from tests.conftest import flask_cli, wait_for
from tests.dicomkit import echoscu, make_ct, store_results, storescu
from tests.server import Pacs


@pytest.fixture
def start_pacs() -> Iterator[Callable[..., Pacs]]:
    """Start pacslite (STORESCU configured) in an instance folder; stopped after the test."""
    started: list[Pacs] = []

    def start(instance: Path, **options: Any) -> Pacs:
        added = flask_cli(instance, "ae", "add", "STORESCU", "--host", "127.0.0.1")
        assert added.returncode == 0, added.stderr
        started.append(Pacs(instance, **options))
        return started[-1]

    yield start
    for pacs in started:
        if pacs.server.process.poll() is None:
            pacs.server.stop()


def _study(directory: Path, count: int, size: int = 0, **ids: str) -> dict[str, str]:
    """``count`` CT images of one study, as files: {path: SOP Instance UID}."""
    directory.mkdir()
    files = {}
    study_uid = series_uid = None
    for number in range(1, count + 1):
        path = directory / f"{number:04d}.dcm"
        ds = make_ct(path, study_uid=study_uid, series_uid=series_uid, instance_number=number, size=size,
                     seed=number, **ids)
        study_uid, series_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID
        files[str(path)] = ds.SOPInstanceUID
    return files


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _check_index_matches_disk(pacs: Pacs, store: Path) -> dict[str, str]:
    """Every row has its file with its hash; every stored file has its row. {SOP UID: path}."""
    rows = pacs.query("SELECT sop_instance_uid, storage_path, sha256 FROM instances")
    for row in rows:
        path = store / row["storage_path"]  # not storage.resolve: it would follow /proc/<pid>/root to /
        assert path.is_file(), f"row without a file: {row['storage_path']}"
        assert storage.sha256_file(path)[1] == row["sha256"], row["storage_path"]
        assert dcmread(path).SOPInstanceUID == row["sop_instance_uid"]
    on_disk = _files_under(store / filing.CATEGORY) if (store / filing.CATEGORY).exists() else set()
    assert on_disk == {Path(r["storage_path"]).relative_to(filing.CATEGORY).as_posix() for r in rows}, \
        "files without a row"
    return {r["sop_instance_uid"]: r["storage_path"] for r in rows}


PART_OF_A_FILE = 512 * 512 * 2  # the pixel data of one 512×512 16-bit image


def _partly_written(tmp: Path) -> bool:
    for entry in tmp.iterdir():
        try:
            size = entry.stat().st_size
        except FileNotFoundError:  # placed in the meantime
            continue
        if 0 < size < PART_OF_A_FILE:
            return True
    return False


def _kill_while_receiving(pacs: Pacs, sender: subprocess.Popen, after: int) -> list[str]:
    """SIGKILL the server in the middle of receiving a file, once ``after`` images were
    acknowledged: when its temporary area holds a partly written file. storescu's output."""
    output: list[str] = []
    acknowledged = threading.Semaphore(0)

    def read() -> None:
        for line in sender.stdout:
            output.append(line)
            if "Received Store Response (Success)" in line:
                acknowledged.release()

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(after):
        assert acknowledged.acquire(timeout=60), "storescu stopped early:\n" + "".join(output)
    tmp = storage.tmp_dir(pacs.settings["STORAGE_DIR"])
    deadline = time.monotonic() + 60
    while not _partly_written(tmp):
        assert time.monotonic() < deadline and sender.poll() is None, "never saw a file being received"
    pacs.server.stop(signal.SIGKILL)
    reader.join(timeout=60)
    sender.wait(timeout=60)
    return output


def test_no_acknowledged_image_is_lost_when_the_server_is_killed(tmp_path, start_pacs) -> None:
    pacs = start_pacs(tmp_path / "instance")
    reg = pacs.register(patient_id="KILL01", name="张三")
    files = _study(tmp_path / "study", 100, size=512, accession=reg.accession_number, patient_id="KILL01",
                   name="ZHANG^SAN", sex="M", birth_date="19800203")
    sender = subprocess.Popen(["storescu", "-v", "-aet", "STORESCU", "-aec", "PACSLITE", "127.0.0.1",
                               str(pacs.port), *files], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = store_results("".join(_kill_while_receiving(pacs, sender, after=40)))
    acknowledged = {files[p] for p, r in results.items() if r == "Success"}
    assert 40 <= len(acknowledged) < len(files), "the kill must land in the middle of the run"

    assert _filed_audits(pacs) == [], "the association never ended: nothing audited yet"

    pacs.restart()
    store = Path(pacs.settings["STORAGE_DIR"])
    assert not any(storage.tmp_dir(store).iterdir()), "start-up leaves the temporary area empty"
    assert any("start-up: removed 1 temporary" in line for line in pacs.server.output), pacs.server.output
    indexed = _check_index_matches_disk(pacs, store)
    assert acknowledged <= indexed.keys(), "an acknowledged image is missing"
    # the cut-off association is audited at start-up: one row for the study, every committed image counted
    [recovered] = _filed_audits(pacs)
    assert (recovered["images"], recovered.get("recovered")) == (len(indexed), True)
    assert any("start-up: audited 1 deliveries" in line for line in pacs.server.output), pacs.server.output

    # the modality sends the rest again: the study is complete, nothing twice
    resent = storescu(pacs.port, [Path(p) for p, sop in files.items() if sop not in acknowledged])
    assert set(store_results(resent.stdout + resent.stderr).values()) == {"Success"}, resent.stderr
    assert len(_check_index_matches_disk(pacs, store)) == 100
    exam = pacs.query("SELECT status, series_count, instance_count FROM exams WHERE accession_number = ?",
                      reg.accession_number)[0]
    assert tuple(exam) == ("in_progress", 1, 100)
    wait_for(lambda: len(_filed_audits(pacs)) == 2, "the second association's audit row")
    assert [(a["images"], a.get("recovered", False)) for a in _filed_audits(pacs)] == [
        (len(indexed), True), (100 - len(indexed), False)]
    assert pacs.server.stop() == 0


def _filed_audits(pacs: Pacs) -> list[dict[str, Any]]:
    return [json.loads(r[0]) for r in pacs.query(
        "SELECT detail FROM audit_log WHERE action = 'image.file' ORDER BY id")]


def test_a_delivery_is_audited_once_per_study_and_each_image_keeps_its_provenance(tmp_path, start_pacs) -> None:
    pacs = start_pacs(tmp_path / "instance")
    reg = pacs.register(patient_id="ARR01", name="张三")
    filed = _study(tmp_path / "filed", 3, accession=reg.accession_number, patient_id="ARR01", name="ZHANG^SAN",
                   sex="M", birth_date="19800203")
    held = _study(tmp_path / "held", 2, accession="A00000000000", patient_id="ARR02", name="LI^SI")
    sent = storescu(pacs.port, [Path(p) for p in [*filed, *held]])
    assert set(store_results(sent.stdout + sent.stderr).values()) == {"Success"}, sent.stderr

    def audits() -> list[Any]:
        return pacs.query("SELECT action, actor, address, target, patient_id, detail FROM audit_log"
                          " WHERE action IN ('image.file', 'image.quarantine') ORDER BY id")
    wait_for(lambda: len(audits()) == 2, "one audit row per study when the association ends")
    (file_row, quarantine_row) = audits()
    study_of = {uid: dcmread(path).StudyInstanceUID for group in (filed, held) for path, uid in group.items()}
    series_of = {uid: dcmread(path).SeriesInstanceUID for group in (filed, held) for path, uid in group.items()}
    assert tuple(file_row)[:5] == ("image.file", "ae:STORESCU", "127.0.0.1", f"exam:{reg.accession_number}", "ARR01")
    detail = json.loads(file_row["detail"])
    assert (detail["images"], detail["study"], detail["series"]) == (
        3, study_of[next(iter(filed.values()))], {series_of[next(iter(filed.values()))]: 3})
    assert "recovered" not in detail
    held_study = study_of[next(iter(held.values()))]
    assert tuple(quarantine_row)[:5] == ("image.quarantine", "ae:STORESCU", "127.0.0.1", f"study:{held_study}",
                                         "ARR02")
    assert {k: json.loads(quarantine_row["detail"])[k] for k in ("images", "reason")} == {
        "images": 2, "reason": "unknown_accession"}
    # each instance keeps where it came from: calling AE and time in its row, the address in its arrival
    provenance = pacs.query("SELECT i.sop_instance_uid, i.calling_ae, a.address, a.source FROM instances i"
                            " JOIN arrivals a ON a.id = i.arrival_ref")
    assert {r[0]: tuple(r)[1:] for r in provenance} == {
        uid: ("STORESCU", "127.0.0.1", "STORESCU") for uid in [*filed.values(), *held.values()]}
    assert pacs.query("SELECT COUNT(*) FROM arrivals WHERE closed_at IS NULL")[0][0] == 0
    assert pacs.server.stop() == 0


MOUNT_TMPFS = 'mount -t tmpfs -o size="$1" pacslite-full "$2" && shift 2 && exec "$@"'


def test_a_full_disk_answers_out_of_resources_and_leaves_nothing_half_written(tmp_path, start_pacs) -> None:
    """The storage folder is a 1 MiB filesystem of its own (a tmpfs in a private mount namespace)."""
    instance = tmp_path / "instance"
    store = instance / "storage"
    store.mkdir(parents=True)
    pacs = start_pacs(instance, wrapper=("unshare", "--mount", "--map-root-user", "sh", "-c", MOUNT_TMPFS, "sh",
                                    "1m", str(store)))
    seen = Path(f"/proc/{pacs.server.process.pid}/root") / store.relative_to("/")  # the server's view of it
    reg = pacs.register(patient_id="FULL01", name="张三")
    files = _study(tmp_path / "study", 12, size=256, accession=reg.accession_number, patient_id="FULL01",
                   name="ZHANG^SAN", sex="M", birth_date="19800203")  # 128 KiB each: more than fits
    sent = storescu(pacs.port, [Path(p) for p in files])
    results = list(store_results(sent.stdout + sent.stderr).items())
    # storescu stops at the first refusal, the one that filled the disk in the middle of its file
    assert [r for _, r in results[:-1]] == ["Success"] * (len(results) - 1) and len(results) > 1, results
    assert results[-1][1] == "Refused: OutOfResources", results  # 0xA700
    stored = {files[p] for p, _ in results[:-1]}
    again = storescu(pacs.port, [Path(results[-1][0])])  # a new association, the disk still full
    assert list(store_results(again.stdout + again.stderr).values()) == ["Refused: OutOfResources"]

    assert not any(storage.tmp_dir(seen).iterdir()), "a refused image left a partial file"
    indexed = _check_index_matches_disk(pacs, seen)
    assert indexed.keys() == stored
    exam = pacs.query("SELECT instance_count FROM exams WHERE accession_number = ?", reg.accession_number)[0]
    assert exam[0] == len(stored)

    # the pages and the DICOM service keep working
    with urllib.request.urlopen(pacs.server.url + "/login", timeout=30) as page:
        assert page.status == 200
    token = pacs.token("full_api", "technologist")
    assert pacs.api(f"/api/v1/exams/{reg.accession_number}", token)["images"]["instances"] == len(stored)
    assert echoscu(pacs.port, aet="STORESCU").returncode == 0
    assert pacs.server.stop() == 0
