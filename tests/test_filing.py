"""filing.ingest(): filing rules, quarantine reasons, duplicates, hostile input, failures, recovery."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from pacslite.core import audit, storage
from pacslite.ris import patients
from pacslite.pacs import filing
from pacslite.pacs.index import Source
from tests import databases
from tests.conftest import EXAM_FORM, count
from tests.dicomkit import CT_SMALL, dataset_bytes, make_ct

SOURCE = Source("CT01", "10.0.0.5")


def register(app, conn, **changes) -> patients.Registration:
    data = {**EXAM_FORM, **changes}
    return patients.register_exam(conn, audit.SYSTEM, app.config, data, data, confirm_demographics=True)


def ct_bytes(tmp_path: Path, **fields) -> bytes:
    path = tmp_path / f"{generate_uid()}.dcm"
    make_ct(path, **fields)
    return path.read_bytes()


def ingest(app, conn, data: bytes) -> filing.Outcome:
    return filing.ingest_bytes(conn, app.config["STORAGE_DIR"], data, SOURCE)


def files_outside_tmp(app) -> list[Path]:
    root = Path(app.config["STORAGE_DIR"]) / filing.CATEGORY
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_filed_by_preassigned_study_uid(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    outcome = ingest(app, conn, ct_bytes(tmp_path, study_uid=reg.study_instance_uid, patient_id="P0001",
                                         name="ZHANG^SAN=张^三", sex="M", birth_date="19800203"))
    assert (outcome.result, outcome.accession_number) == (filing.FILED, reg.accession_number)
    exam = patients.get_exam(conn, reg.accession_number)
    assert (exam["status"], exam["series_count"], exam["instance_count"]) == ("in_progress", 1, 1)
    assert exam["images_first_at"] and exam["images_last_at"]
    stored = conn.execute("SELECT storage_path, sha256 FROM instances").fetchone()
    path = storage.resolve(app.config["STORAGE_DIR"], stored["storage_path"])
    assert storage.sha256_file(path)[1] == stored["sha256"]
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'image.file' AND actor = 'ae:CT01'"
                        " AND address = '10.0.0.5' AND patient_id = 'P0001'").fetchone()[0] == 1


def test_filed_by_accession_and_patient_id_and_later_instances_follow(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    study, series = generate_uid(), generate_uid()
    first = ingest(app, conn, ct_bytes(tmp_path, study_uid=study, series_uid=series, accession=reg.accession_number,
                                       patient_id="P0001", name="Zhang San"))
    # the second image lost its accession number on the way; it follows its study
    second = ingest(app, conn, ct_bytes(tmp_path, study_uid=study, series_uid=series, patient_id="P0001"))
    third = ingest(app, conn, ct_bytes(tmp_path, study_uid=study, accession=reg.accession_number, patient_id="P0001"))
    assert {first.result, second.result, third.result} == {filing.FILED}
    exam = patients.get_exam(conn, reg.accession_number)
    assert (exam["series_count"], exam["instance_count"]) == (2, 3)


@pytest.mark.parametrize("fields, reason", [
    ({"accession": ""}, "no_accession"),
    ({"accession": "A26112400019"}, "unknown_accession"),
    ({"patient_id": "P0002"}, "patient_id_mismatch"),
    ({"name": "LI^SI"}, "demographics_mismatch"),
    ({"name": "李四"}, "demographics_mismatch"),
    ({"sex": "F"}, "demographics_mismatch"),
    ({"birth_date": "19800302"}, "demographics_mismatch"),
])
def test_quarantine_reasons(app, conn, tmp_path, fields, reason) -> None:
    reg = register(app, conn)
    values = {"accession": reg.accession_number, "patient_id": "P0001", "name": "ZHANG^SAN", "sex": "M",
              "birth_date": "19800203", **fields}
    outcome = ingest(app, conn, ct_bytes(tmp_path, **values))
    assert (outcome.result, outcome.reason) == (filing.QUARANTINED, reason)
    exam = patients.get_exam(conn, reg.accession_number)
    assert (exam["status"], exam["instance_count"]) == ("scheduled", 0)
    study = conn.execute("SELECT * FROM studies").fetchone()
    assert (study["quarantine_reason"], study["exam_ref"], study["calling_ae"]) == (reason, None, "CT01")


def test_a_mismatch_on_the_preassigned_study_uid_is_quarantined_too(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    outcome = ingest(app, conn, ct_bytes(tmp_path, study_uid=reg.study_instance_uid, patient_id="P0001",
                                         name="WANG^WU", sex="M"))
    assert outcome.reason == "demographics_mismatch"


def test_names_are_compared_after_decoding_their_character_set(app, conn, tmp_path) -> None:
    reg = register(app, conn, name="单田芳", patient_id="P0009")
    outcome = ingest(app, conn, ct_bytes(tmp_path, accession=reg.accession_number, patient_id="P0009",
                                         name="单田芳", charset="GB18030"))
    assert outcome.result == filing.FILED
    reg2 = register(app, conn, name="单田芳", patient_id="P0009")
    assert ingest(app, conn, ct_bytes(tmp_path, accession=reg2.accession_number, patient_id="P0009",
                                      name="SHAN^TIANFANG")).result == filing.FILED


def test_images_for_a_cancelled_exam_are_quarantined(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    patients.cancel_exam(conn, audit.SYSTEM, reg.accession_number, {"reason": "patient left"})
    outcome = ingest(app, conn, ct_bytes(tmp_path, accession=reg.accession_number, patient_id="P0001"))
    assert outcome.reason == "exam_cancelled"


def test_duplicates(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    sop = generate_uid()
    data = ct_bytes(tmp_path, sop_uid=sop, accession=reg.accession_number, patient_id="P0001")
    assert ingest(app, conn, data).result == filing.FILED
    first = conn.execute("SELECT * FROM instances").fetchone()
    assert ingest(app, conn, data).result == filing.DUPLICATE
    assert (count(conn, "instances"), count(conn, "instance_conflicts"), len(files_outside_tmp(app))) == (1, 0, 1)
    other = ct_bytes(tmp_path, sop_uid=sop, accession=reg.accession_number, patient_id="P0001", name="OTHER")
    assert (ingest(app, conn, other).result, count(conn, "instances")) == (filing.CONFLICT, 1)
    conflict = conn.execute("SELECT * FROM instance_conflicts").fetchone()
    root = app.config["STORAGE_DIR"]
    assert storage.resolve(root, conflict["storage_path"]).read_bytes() == other
    assert storage.resolve(root, first["storage_path"]).read_bytes() == data
    assert dict(conn.execute("SELECT * FROM instances").fetchone()) == dict(first)
    assert patients.get_exam(conn, reg.accession_number)["instance_count"] == 1


@pytest.mark.parametrize("fields", [{"sop_uid": "../../x"}, {"study_uid": "1." + "2" * 70},
                                    {"series_uid": "1.2.3/../../etc"}])
def test_hostile_uids_are_refused_and_change_nothing(app, conn, tmp_path, fields) -> None:
    data = ct_bytes(tmp_path, **fields)
    with pytest.raises(filing.IngestError) as refused:
        ingest(app, conn, data)
    assert refused.value.status == filing.DATA_SET_MISMATCH
    assert (count(conn, "instances"), count(conn, "studies"), files_outside_tmp(app)) == (0, 0, [])
    assert list(storage.tmp_dir(app.config["STORAGE_DIR"]).iterdir()) == []


def _with_meta(dataset: bytes) -> bytes:
    whole = CT_SMALL.read_bytes()
    return whole[:len(whole) - len(dataset_bytes(CT_SMALL))] + dataset


@pytest.mark.parametrize("data, status", [
    (b"", filing.CANNOT_UNDERSTAND),
    (b"not dicom at all", filing.CANNOT_UNDERSTAND),
    (b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff", filing.CANNOT_UNDERSTAND),
    # the whole file is walked before its header is used: what does not parse cannot be understood
    (_with_meta(bytes(range(256)) * 4), filing.CANNOT_UNDERSTAND),  # a valid file meta, garbage after it
    (_with_meta(b"\x08\x00\x16\x00UI\x40\x00" + b"1.2.3"), filing.CANNOT_UNDERSTAND),  # cut in a value
])
def test_malformed_data_is_refused(app, conn, data, status) -> None:
    with pytest.raises(filing.IngestError) as refused:
        ingest(app, conn, data)
    assert refused.value.status == status
    assert (count(conn, "instances"), count(conn, "studies"), files_outside_tmp(app)) == (0, 0, [])


def test_control_characters_never_reach_the_index_raw(app, conn, tmp_path) -> None:
    ingest(app, conn, ct_bytes(tmp_path, accession="X1", name="EVIL\x1b[2J^<script>alert(1)</script>"))
    name = conn.execute("SELECT patient_name FROM studies").fetchone()[0]
    assert "\x1b" not in name and "\ufffd" in name


def test_a_failed_commit_leaves_no_file_and_no_row(app, conn, tmp_path) -> None:
    reg = register(app, conn)
    databases.refuse_inserts(conn, "instances")
    with pytest.raises(filing.IngestError) as refused:
        ingest(app, conn, ct_bytes(tmp_path, accession=reg.accession_number, patient_id="P0001"))
    assert refused.value.status == filing.OUT_OF_RESOURCES
    assert (count(conn, "instances"), count(conn, "studies"), files_outside_tmp(app)) == (0, 0, [])
    assert patients.get_exam(conn, reg.accession_number)["status"] == "scheduled"


def test_recover_removes_leftovers_and_keeps_what_was_committed(app, conn, tmp_path) -> None:
    root = app.config["STORAGE_DIR"]
    reg = register(app, conn)
    ingest(app, conn, ct_bytes(tmp_path, accession=reg.accession_number, patient_id="P0001"))
    kept = storage.resolve(root, conn.execute("SELECT storage_path FROM instances").fetchone()[0])
    leftover_tmp = storage.write_tmp(root, b"half")
    orphan = storage.resolve(root, storage.place(root, storage.write_tmp(root, b"never committed"), "dicom", ".dcm"))
    assert filing.recover(conn, root) == (1, 1)
    assert kept.exists() and not orphan.exists() and not leftover_tmp.exists()


def test_the_quarantine_page_and_api_show_hostile_header_values_escaped(app, conn, tmp_path, client_as) -> None:
    ingest(app, conn, ct_bytes(tmp_path, accession="<b>X1</b>", patient_id="P<i>", name="<script>alert(1)</script>"))
    page = client_as("technologist", username="tech").get("/quarantine/").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "&lt;b&gt;X1&lt;/b&gt;" in page and "Unknown accession number" in page
    assert client_as("registrar", username="desk").get("/quarantine/").status_code == 403
