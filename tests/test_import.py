"""Imports: scanned images, non-conformant DICOM, folders, ZIPs, patient CDs, and bad input."""
from __future__ import annotations

import io
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import data_manager, get_testdata_file
from pydicom.dataset import Dataset

from pacslite.core import audit, storage
from pacslite.ris import patients
from pacslite.pacs import importing


def fixes_of(line: importing.Line) -> list[str]:
    """A report line's fixes in English, as the command line prints them."""
    return [importing.english(fix) for fix in line.fixes]
from tests import databases
from tests.conftest import EXAM_FORM, flask_cli
from tests.dicomkit import make_ct

ACTOR = audit.Actor("tech_zhou")
CD = Path(data_manager.DATA_ROOT) / "test_files" / "dicomdirtests"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def register(app, conn, **changes) -> patients.Registration:
    data = {**EXAM_FORM, **changes}
    return patients.register_exam(conn, audit.SYSTEM, app.config, data, data, confirm_demographics=True)


def stored(app, conn, sop_uid: str | None = None) -> list[Dataset]:
    rows = conn.execute("SELECT storage_path FROM instances" + (" WHERE sop_instance_uid = ?" if sop_uid else ""),
                        (sop_uid,) if sop_uid else ()).fetchall()
    return [dcmread(storage.resolve(app.config["STORAGE_DIR"], r[0])) for r in rows]


def image_file(path: Path, fmt: str, mode: str = "RGB", frames: int = 1) -> Path:
    pictures = [Image.fromarray((np.random.default_rng(n).integers(0, 255, (60, 80, 3))).astype(np.uint8))
                .convert(mode) for n in range(frames)]
    pictures[0].save(path, format=fmt, save_all=frames > 1, append_images=pictures[1:])
    return path


def test_scanned_images_become_secondary_capture_of_the_exam(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    folder = tmp_path / "scans"
    folder.mkdir()
    image_file(folder / "page1.jpg", "JPEG")
    image_file(folder / "page2.png", "PNG", "L")
    image_file(folder / "film.bmp", "BMP")
    image_file(folder / "pages.tif", "TIFF", "RGB", frames=2)
    target = importing.target_for(conn, reg.accession_number)
    report = importing.import_path(conn, ACTOR, app.config, folder, target)
    assert [(line.name, line.result) for line in report.lines] == [
        ("film.bmp", "filed"), ("page1.jpg", "filed"), ("page2.png", "filed"), ("pages.tif [1]", "filed"),
        ("pages.tif [2]", "filed")]
    exam = patients.get_exam(conn, reg.accession_number)
    assert (exam["instance_count"], exam["series_count"]) == (5, 1)
    for ds in stored(app, conn):
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.ConversionType == "SI"
        assert (ds.PatientID, str(ds.PatientName), ds.AccessionNumber, ds.SpecificCharacterSet) == \
            ("P0001", "ZHANG^SAN=张^三", reg.accession_number, "ISO_IR 192")
        assert ds.ImageComments.startswith("Converted by pacslite from ")
        assert (ds.Rows, ds.Columns) == (60, 80) and ds.pixel_array.shape[:2] == (60, 80)
    rooted = importing.target_for(conn, reg.accession_number, uid_root="1.2.826.0.1.3680043.10.999")
    importing.import_path(conn, ACTOR, app.config, folder / "page1.jpg", rooted)
    newest = conn.execute("SELECT sop_instance_uid FROM instances ORDER BY id DESC").fetchone()[0]
    assert newest.startswith("1.2.826.0.1.3680043.10.999.")  # new UIDs under the configured root
    no_exam = importing.import_path(conn, ACTOR, app.config, folder / "page1.jpg", importing.Target())
    assert [(line.result, importing.english(line.reason)) for line in no_exam.lines] == \
        [("failed", "choose the exam these scanned images belong to")]


@pytest.mark.parametrize("name", ["ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm",
                                  "MR_small_implicit.dcm", "MR_small_bigendian.dcm"])
def test_non_conformant_dicom_is_repaired_and_filed(app, conn, name) -> None:
    reg = register(app, conn)
    original = dcmread(get_testdata_file(name), force=True)
    report = importing.import_path(conn, ACTOR, app.config, Path(get_testdata_file(name)),
                                   importing.target_for(conn, reg.accession_number))
    [line] = report.lines
    assert line.result == "filed", line
    assert f"filed to exam {reg.accession_number}" in fixes_of(line)
    assert ("no file meta information: added" in fixes_of(line)) == ("NoMeta" in name)
    [ds] = stored(app, conn)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert (ds.PatientID, ds.AccessionNumber) == ("P0001", reg.accession_number)
    kept = ds.OriginalAttributesSequence[-1]
    assert kept.ReasonForTheAttributeModification == "COERCE"
    assert kept.ModifiedAttributesSequence[0].PatientID == original.get("PatientID", "")


def test_missing_uids_are_generated_and_recorded(app, conn, tmp_path) -> None:
    path = tmp_path / "bad.dcm"
    ds = make_ct(path)
    del ds.SOPInstanceUID, ds.SeriesInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds.save_as(path)
    report = importing.import_path(conn, ACTOR, app.config, path, importing.Target())
    [line] = report.lines
    assert "SOP Instance UID missing or invalid: generated" in fixes_of(line)
    assert "Series Instance UID missing or invalid: generated" in fixes_of(line)
    assert line.result == "quarantined"  # no exam chosen, no accession number: stored safely
    [stored_ds] = stored(app, conn)
    recorded = stored_ds.OriginalAttributesSequence[0]
    assert recorded.ReasonForTheAttributeModification == "CORRECT"
    assert "SOPInstanceUID" in recorded.ModifiedAttributesSequence[0]


def _with_raw_name(tmp_path: Path, name: str, raw_name: bytes, charset: str | None) -> Path:
    path = tmp_path / name
    ds = make_ct(path, charset=charset or "ISO_IR 192", name="QQQQ")
    if charset is None:
        del ds.SpecificCharacterSet
    ds.save_as(path)
    data = path.read_bytes()
    padded = raw_name + (b" " if len(raw_name) % 2 else b"")
    length = len(padded).to_bytes(2, "little")
    marker = b"\x10\x00\x10\x00PN\x04\x00QQQQ"
    assert marker in data
    path.write_bytes(data.replace(marker, b"\x10\x00\x10\x00PN" + length + padded))
    return path


@pytest.mark.parametrize("charset, encoding, fixed", [(None, "utf-8", "ISO_IR 192"),
                                                      ("ISO_IR 100", "gb18030", "GB18030")])
def test_an_undeclared_or_wrong_character_set_is_found(app, conn, tmp_path, charset, encoding, fixed) -> None:
    path = _with_raw_name(tmp_path, "name.dcm", "张三".encode(encoding), charset)
    [line] = importing.import_path(conn, ACTOR, app.config, path, importing.Target()).lines
    assert f"character set {charset or 'undeclared'}: {fixed}" in fixes_of(line)
    [ds] = stored(app, conn)
    assert (ds.SpecificCharacterSet, str(ds.PatientName)) == (fixed, "张三")


def test_a_folder_twice_skips_what_is_stored_and_bad_files_change_nothing(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    make_ct(folder / "a.dcm", accession=reg.accession_number, patient_id="P0001")
    make_ct(folder / "sub" / "b.dcm", accession=reg.accession_number, patient_id="P0001")
    (folder / "notes.txt").write_text("not an image")
    good = (folder / "a.dcm").read_bytes()
    (folder / "sub" / "truncated.dcm").write_bytes(good[:len(good) // 2])
    first = importing.import_path(conn, ACTOR, app.config, folder, importing.Target())
    assert {(line.name, line.result) for line in first.lines} == {
        ("a.dcm", "filed"), ("sub/b.dcm", "filed"), ("notes.txt", "failed"), ("sub/truncated.dcm", "failed")}
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 2
    again = importing.import_path(conn, ACTOR, app.config, folder, importing.Target())
    assert sorted(line.result for line in again.lines) == ["duplicate", "duplicate", "failed", "failed"]
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 2


def test_a_hostile_zip_is_refused_line_by_line_or_whole(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    ct = tmp_path / "ct.dcm"
    make_ct(ct, accession=reg.accession_number, patient_id="P0001")
    archive = tmp_path / "cd.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../escape.dcm", ct.read_bytes())
        z.writestr("/etc/absolute.dcm", ct.read_bytes())
        z.write(ct, "images/ct.dcm")
    report = importing.import_path(conn, ACTOR, app.config, archive, importing.Target())
    assert {(line.name, line.result) for line in report.lines} == {
        ("../../escape.dcm", "failed"), ("/etc/absolute.dcm", "failed"), ("images/ct.dcm", "filed")}
    assert not (tmp_path.parent / "escape.dcm").exists()
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.dcm", b"\0" * 5_000_000)
    small = {**app.config, "IMPORT_MAX_BYTES": 1_000_000}
    before = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    [refused] = importing.import_path(conn, ACTOR, small, bomb, importing.Target()).lines
    assert refused.result == "failed" and "expand beyond" in importing.english(refused.reason)
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == before


def test_a_patient_cd_is_imported_under_the_local_patient_id(app, conn, tmp_path) -> None:
    reg = register(app, conn, patient_id="LOCAL01")
    medium = tmp_path / "cd"
    shutil.copytree(CD, medium)
    listed = importing.read_cd(medium)
    assert {p["patient_id"]: sum(s["images"] for s in p["studies"]) for p in listed} == {"77654033": 7,
                                                                                          "98890234": 24}
    target = importing.target_for(conn, reg.accession_number, {"77654033": "LOCAL01"})
    report = importing.import_path(conn, ACTOR, app.config, medium, target)
    # the mapped patient's images go to the exam; the other outside patient is imported as it
    # is, and so quarantined: nobody's images are filed to an exam the user did not map them to
    assert report.counts() == {"filed": 7, "quarantined": 24}
    outside = [line for line in report.lines if "outside patient ID 77654033: local LOCAL01" in fixes_of(line)]
    assert len(outside) == 7
    copies = [ds for ds in stored(app, conn) if any(
        item.ModifiedAttributesSequence[0].get("PatientID") == "77654033"
        for item in ds.get("OriginalAttributesSequence", []))]
    assert len(copies) == 7 and {ds.PatientID for ds in copies} == {"LOCAL01"}


def test_a_dicomdir_pointing_outside_the_medium_is_refused(app, conn, tmp_path) -> None:
    medium = tmp_path / "cd"
    shutil.copytree(CD, medium)
    dicomdir = medium / "DICOMDIR"
    data = dicomdir.read_bytes()
    inside = b"77654033\\CR1\\6154"
    assert inside in data
    dicomdir.write_bytes(data.replace(inside, b"..\\..\\..\\..\\tmp\\x", 1))  # same length, offsets intact
    report = importing.import_path(conn, ACTOR, app.config, medium, importing.Target())
    assert [(line.name, line.result, importing.english(line.reason)) for line in report.lines] == \
        [("DICOMDIR", "failed", "the DICOMDIR points outside the medium: refused")]
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0
    with pytest.raises(ValueError, match="outside the medium"):
        importing.read_cd(medium)


def test_the_command_imports_and_prints_its_report(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    scan = image_file(tmp_path / "scan.jpg", "JPEG")
    result = flask_cli(tmp_path / "instance", "import", str(scan), "--accession", reg.accession_number)
    assert result.returncode == 0, result.stderr
    assert "filed        scan.jpg  (converted from JPG to Secondary Capture)" in result.stdout
    assert "imported: 1 filed" in result.stdout
    unknown = flask_cli(tmp_path / "instance", "import", str(scan), "--accession", "NOSUCH")
    assert unknown.returncode != 0 and "No exam has the accession number NOSUCH" in unknown.stderr


def test_the_import_page_stages_runs_and_refuses_odd_names(app, conn, tmp_path, client_as) -> None:
    from pacslite.core import jobs
    reg = register(app, conn)
    tech = client_as("technologist")
    scan = image_file(tmp_path / "scan.png", "PNG")
    token = tech.get("/import/").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    response = tech.post("/import/", data={"csrf_token": token, "accession": reg.accession_number,
                                           "files": [(scan.open("rb"), "scans/scan.png"),
                                                     (io.BytesIO(b"x"), "../escape.png")]},
                         content_type="multipart/form-data")
    assert response.status_code == 302
    import_id = int(response.location.rsplit("/", 1)[1])
    jobs.run_until_idle(conn, app.config)
    page = tech.get(f"/import/{import_id}").get_data(as_text=True)
    assert "scans/scan.png" in page and "a file name pacslite does not accept: refused" in page
    assert patients.get_exam(conn, reg.accession_number)["instance_count"] == 1
    assert not (tmp_path / "instance" / "escape.png").exists()
    assert client_as("registrar").get("/import/").status_code == 403


# ---------------------------------------------------------------- memory and limits (issue 13, case 11)

#: Runs ``flask`` and, as the interpreter exits, prints its own peak resident memory (VmHWM).
#: Not the rusage of the child: Linux carries the parent's peak over a (v)fork and exec, so
#: a child of a big pytest process would report pytest's memory.
PEAK_WRAPPER = """
import atexit, sys
def report():
    peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
    sys.stdout.write(f"PEAK-KIB {peak}\\n")
atexit.register(report)
from flask.cli import main
sys.argv = ["flask", *sys.argv[1:]]
main()
"""


def import_peak_mib(instance: Path, *args: str) -> tuple[float, str]:
    """``flask --app app import ARGS`` in its own process: (its peak resident memory in MiB, output)."""
    import os
    import re
    import subprocess
    import sys

    from tests.conftest import INDEPENDENT_OF_HOST_AND_HOUR, ROOT
    env = {**os.environ, "PACSLITE_INSTANCE_DIR": str(instance), **databases.env_for(instance),
           **{f"PACSLITE_{k}": str(v) for k, v in INDEPENDENT_OF_HOST_AND_HOUR.items()}}
    done = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, "--app", "app", "import", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    peak = re.search(r"PEAK-KIB (\d+)", done.stdout)
    assert peak, done.stdout
    return int(peak.group(1)) / 1024, done.stdout


def big_dicom_member(archive: zipfile.ZipFile, name: str, frames: int, **fields) -> None:
    """A multi-frame 1024 × 1024 16-bit image (2 MiB a frame) written into the ZIP as it is made."""
    header = make_ct(Path(archive.filename).with_suffix(".header.dcm"), **fields)
    header.NumberOfFrames = frames
    header.Rows = header.Columns = 1024
    del header.PixelData
    out = io.BytesIO()
    header.save_as(out, enforce_file_format=True)
    with archive.open(name, "w", force_zip64=True) as member:
        member.write(out.getvalue())
        member.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (frames * 2 * 1024 * 1024).to_bytes(4, "little"))
        for _ in range(frames):
            member.write(bytes(2 * 1024 * 1024))


def test_imports_hold_one_block_or_one_page_in_memory_whatever_they_hold(app, conn, tmp_path) -> None:
    """A ZIP of 300 MB of zeros plus a 300 MB image, and an 8-page TIFF of 27 MB pages: memory
    grows by less than 200 MB over importing one small scan (it grew by 576 and 654 MB)."""
    reg = register(app, conn)
    instance = Path(app.config["INSTANCE_DIR"])
    small = image_file(tmp_path / "small.jpg", "JPEG")
    baseline, _ = import_peak_mib(instance, str(small), "--accession", reg.accession_number)

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.dcm", "w", force_zip64=True) as member:
            for _ in range(300):
                member.write(bytes(1024 * 1024))
        big_dicom_member(archive, "big.dcm", 150, patient_id="P0001")
    assert bomb.stat().st_size < 2 * 1024 * 1024
    peak, output = import_peak_mib(instance, str(bomb), "--accession", reg.accession_number)
    assert "filed        big.dcm" in output and "failed       zeros.dcm" in output, output
    assert peak - baseline < 200, f"the ZIP took {peak - baseline:.0f} MiB more than a small scan"

    pages = [Image.fromarray(np.full((3000, 3000, 3), n * 30, dtype=np.uint8)) for n in range(8)]
    tiff = tmp_path / "pages.tif"
    pages[0].save(tiff, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    del pages
    peak, output = import_peak_mib(instance, str(tiff), "--accession", reg.accession_number)
    assert output.count("filed        pages.tif [") == 8, output
    assert peak - baseline < 200, f"the TIFF took {peak - baseline:.0f} MiB more than a small scan"
    [big] = [ds for ds in stored(app, conn) if ds.get("NumberOfFrames") == 150]
    assert big.AccessionNumber == reg.accession_number and len(big.PixelData) == 150 * 2 * 1024 * 1024


def test_the_zip_limit_counts_over_the_whole_import(app, conn, tmp_path) -> None:
    """A folder of ZIPs each under IMPORT_MAX_BYTES was read in full."""
    folder = tmp_path / "zips"
    folder.mkdir()
    ct = make_ct(tmp_path / "ct.dcm", size=256)
    for n in range(3):
        with zipfile.ZipFile(folder / f"part{n}.zip", "w") as archive:
            ct.SOPInstanceUID = f"1.2.826.0.1.3680043.10.999.{n}"
            ct.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID
            out = io.BytesIO()
            ct.save_as(out, enforce_file_format=True)
            archive.writestr(f"ct{n}.dcm", out.getvalue())
    size = len(out.getvalue())
    limited = {**app.config, "IMPORT_MAX_BYTES": 2 * size + 100}
    report = importing.import_path(conn, ACTOR, limited, folder, importing.Target())
    assert [(line.name, line.result) for line in report.lines] == [
        ("part0.zip/ct0.dcm", "quarantined"), ("part1.zip/ct1.dcm", "quarantined"), ("part2.zip", "failed")]
    assert "expand beyond" in importing.english(report.lines[2].reason)


def test_an_upload_named_like_a_folder_of_another_gets_its_own_line(app, conn, tmp_path, client_as) -> None:
    """``ok.dcm`` and ``ok.dcm/y.dcm`` in one upload answered 500."""
    from pacslite.core import jobs
    tech = client_as("technologist")
    ct = make_ct(tmp_path / "ct.dcm")
    token = tech.get("/import/").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    response = tech.post("/import/", data={"csrf_token": token, "accession": "",
                                           "files": [(ct.filename and open(tmp_path / "ct.dcm", "rb"), "ok.dcm"),
                                                     (io.BytesIO(b"second"), "ok.dcm/y.dcm")]},
                         content_type="multipart/form-data")
    assert response.status_code == 302
    import_id = int(response.location.rsplit("/", 1)[1])
    jobs.run_until_idle(conn, app.config)
    lines = {line.name: line for line in importing.lines_of(importing.get_import(conn, import_id))}
    assert lines["ok.dcm"].result == "quarantined"
    assert lines["ok.dcm/y.dcm"].result == "failed" and "has this name already" in importing.english(lines["ok.dcm/y.dcm"].reason)
