#!/usr/bin/env python3
"""DICOMweb: pacslite against Orthanc's DICOMweb plugin, on the same study and machine.

One N-image CT study (default 300, 512×512 16-bit) is stored in both, then over HTTP:

1. QIDO-RS study search by patient ID, repeated (requests/s);
2. WADO-RS of the whole study with ``transfer-syntax=*`` (the stored bytes), best of 3 (MB/s);
3. WADO-RS series metadata, repeated (requests/s; and the first time, in seconds): what OHIF
   asks for first. pacslite caches what it reads from the files, so the first time is slower.

Each figure with the ratio pacslite/Orthanc (target for 2: at least 1). Runs in a private
network namespace (Orthanc cannot be told to listen on loopback only).

    bin/bench            # installs dcmtk, orthanc, orthanc-dicomweb, then runs this among the others
    .venv/bin/python bench/dicomweb.py [--count 300] [--repeat 100]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (HEADER, PATIENT, enter_private_network, first_accession, fresh_pacslite, machine,  # noqa: E402
                          make_study, send, wait_for_echo)
from tests.conftest import free_port  # noqa: E402
from tests.server import Pacs  # noqa: E402

ORTHANC_PLUGINS = "/usr/share/orthanc/plugins"
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class Target:
    """A DICOMweb server under test: its root URL and the headers every request carries."""

    def __init__(self, name: str, root: str, headers: dict[str, str]) -> None:
        self.name, self.root, self.headers = name, root, headers
        self.session = requests.Session()
        self.session.headers.update(headers)

    def get(self, path: str, accept: str, **params: str) -> requests.Response:
        response = self.session.get(self.root + path, headers={"Accept": accept}, params=params, timeout=600,
                                    stream=True)
        if response.status_code != 200:
            raise SystemExit(f"{self.name}: {path} answered {response.status_code}: {response.text[:300]}")
        return response


def rate(repeat: int, action: Callable[[], int]) -> float:
    """Requests per second of ``action`` done ``repeat`` times in a row."""
    started = time.perf_counter()
    for _ in range(repeat):
        action()
    return repeat / (time.perf_counter() - started)


def measure(target: Target, study_uid: str, series_uid: str, count: int, repeat: int) -> dict[str, float]:
    def search() -> int:
        found = target.get("/studies", "application/dicom+json", PatientID=HEADER["patient_id"]).json()
        if len(found) != 1:
            raise SystemExit(f"{target.name}: the study search found {len(found)} studies")
        return len(found)

    def metadata() -> int:
        found = target.get(f"/studies/{study_uid}/series/{series_uid}/metadata", "application/dicom+json").json()
        if len(found) != count:
            raise SystemExit(f"{target.name}: metadata of {len(found)} instances, not {count}")
        return len(found)

    def retrieve() -> tuple[float, int]:
        started = time.perf_counter()
        response = target.get(f"/studies/{study_uid}", ANY_SYNTAX)
        size = sum(len(chunk) for chunk in response.iter_content(1024 * 1024))
        return time.perf_counter() - started, size

    search()
    started = time.perf_counter()
    metadata()  # the first time: nothing cached yet
    cold = time.perf_counter() - started
    runs = [retrieve() for _ in range(3)]
    seconds, size = min(runs)
    return {"qido": rate(repeat, search), "metadata": rate(max(repeat // 10, 3), metadata),
            "wado_mb_s": size / seconds / 1e6, "wado_s": seconds, "wado_mb": size / 1e6, "metadata_cold_s": cold}


def pacslite_target(work: Path, files: list[Path], accession: str) -> tuple[Target, Pacs]:
    pacs = fresh_pacslite(work, "pacslite")
    if pacs.register(**PATIENT).accession_number != accession:
        raise SystemExit("the accession number changed between runs (midnight?): run again")
    send(pacs.port, "PACSLITE", files, 4)
    token = pacs.token("bench_reader", "radiologist")
    return Target("pacslite", pacs.server.url + "/dicom-web", {"Authorization": f"Bearer {token}"}), pacs


def orthanc_target(work: Path, files: list[Path]) -> tuple[Target, subprocess.Popen]:
    home = work / "orthanc"
    home.mkdir()
    dicom_port, http_port = free_port(), free_port()
    config = {"Name": "bench", "StorageDirectory": str(home / "storage"), "IndexDirectory": str(home / "index"),
              "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port, "Plugins": [ORTHANC_PLUGINS],
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
              "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (home / "orthanc.json").write_text(json.dumps(config))
    log = (home / "orthanc.log").open("w")
    process = subprocess.Popen(["Orthanc", str(home / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    wait_for_echo(dicom_port, "ORTHANC", process, "Orthanc")
    send(dicom_port, "ORTHANC", files, 4)
    return Target("Orthanc", f"http://127.0.0.1:{http_port}/dicom-web", {}), process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="images in the study (default 300)")
    parser.add_argument("--repeat", type=int, default=100, help="QIDO searches timed (default 100)")
    args = parser.parse_args()
    enter_private_network()
    work = Path(tempfile.mkdtemp(prefix="pacslite-dicomweb-"))
    results = {}
    try:
        accession = first_accession(work)
        print(f"generating {args.count} CT images of 512×512 16-bit ...", flush=True)
        files = make_study(work / "study", args.count, accession)
        from pydicom import dcmread
        first = dcmread(files[0], stop_before_pixels=True)
        study_uid, series_uid = first.StudyInstanceUID, first.SeriesInstanceUID
        target, pacs = pacslite_target(work, files, accession)
        try:
            results["pacslite"] = measure(target, study_uid, series_uid, args.count, args.repeat)
        finally:
            pacs.server.stop()
        target, orthanc = orthanc_target(work, files)
        try:
            results["Orthanc"] = measure(target, study_uid, series_uid, args.count, args.repeat)
        finally:
            orthanc.terminate()
            orthanc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    for line in machine():
        print(line)
    print(f"study     {args.count} images of 512×512 16-bit, {results['pacslite']['wado_mb']:.0f} MB in pacslite,"
          f" {results['Orthanc']['wado_mb']:.0f} MB in Orthanc (multipart bodies)")
    print()
    ours, theirs = results["pacslite"], results["Orthanc"]
    for label, key, unit, target in (("QIDO-RS study search", "qido", "requests/s", ""),
                                     ("WADO-RS study, transfer-syntax=*", "wado_mb_s", "MB/s", "   (target >= 1)"),
                                     ("WADO-RS series metadata", "metadata", "requests/s", "")):
        print(f"{label:<34} pacslite {ours[key]:8.1f} {unit:<11} Orthanc {theirs[key]:8.1f} {unit:<11}"
              f" pacslite/Orthanc {ours[key] / theirs[key]:.2f}{target}")
    print(f"{'  the first metadata of the series':<34} pacslite {ours['metadata_cold_s']:8.2f} s{'':10}"
          f" Orthanc {theirs['metadata_cold_s']:8.2f} s")


if __name__ == "__main__":
    main()
