"""Key images (关键图像, issue 32): marked with a note and a window, at most six; on the final
signature a Key Object Selection document is stored in the study (filed like any image; DCMTK's
dsrdump reads it as the structured report it is, movescu moves it to a workstation, dicom3tools' dciodvfy finds nothing wrong); an amendment that keeps them stores none, one
that changes them stores a new one and keeps the old."""
from __future__ import annotations

import subprocess

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from pacslite.core import audit, storage
from pacslite.core.validation import Conflict
from pacslite.pacs import filing, key_images
from pacslite.pacs.index import Source
from pacslite.ris import patients, reports
from tests.conftest import make_user
from tests.dicomkit import make_ct
from tests.test_reports import register

RAD = audit.Actor("dr_key")
TEXTS = {"findings": "右肺上叶结节。", "impression": "右肺上叶结节，建议随访。", "result_class": "abnormal"}


@pytest.fixture
def exam(app, conn, tmp_path):
    make_user(conn, "dr_key", "radiologist")
    accession = register(app, conn)
    found = patients.get_exam(conn, accession)
    series_uid = generate_uid()
    for number in range(1, 9):
        path = tmp_path / f"{number}.dcm"
        make_ct(path, study_uid=found["study_instance_uid"], series_uid=series_uid, accession=accession,
                patient_id="P0001", instance_number=number, size=32, seed=number)
        assert filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(),
                                   Source("CT01", "10.0.0.5")).result == filing.FILED
    return patients.get_exam(conn, accession)


def instances(conn) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM instances ORDER BY CAST(instance_number AS INTEGER)")]


def sign(app, conn, exam) -> None:
    current = reports.latest(conn, exam["id"])
    reports.sign(conn, RAD, patients.get_exam(conn, exam["accession_number"]),
                 {**TEXTS, "level": "final", "revision": str(current["revision"] if current else 0)}, app.config)


def kos_files(app, conn) -> list:
    return [dcmread(storage.resolve(app.config["STORAGE_DIR"], r[0])) for r in conn.execute(
        "SELECT storage_path FROM instances WHERE sop_class_uid = ? ORDER BY id", (key_images.KOS_SOP_CLASS,))]


def test_key_images_become_a_key_object_selection_document_in_the_study(app, conn, exam) -> None:
    ids = instances(conn)
    key_images.mark(conn, RAD, ids[2], {"note": "结节", "center": "-600", "width": "1500"})
    key_images.mark(conn, RAD, ids[5], {"note": "", "center": "", "width": ""})
    key_images.mark(conn, RAD, ids[2], {"note": "结节 8 mm", "center": "40", "width": "400"})  # again: changed
    marked = key_images.of_exam(conn, exam["id"])
    assert [(k["instance_ref"], k["note"], k["center"]) for k in marked] == [(ids[2], "结节 8 mm", 40), (ids[5], "", None)]
    assert key_images.store_due(conn, app.config) == 0  # nothing signed yet
    sign(app, conn, exam)
    assert key_images.store_due(conn, app.config) == 1
    assert key_images.store_due(conn, app.config) == 0
    (kos,) = kos_files(app, conn)
    # filed to the exam, in its study, like any image
    row = conn.execute("SELECT st.exam_ref, st.study_instance_uid FROM instances i JOIN series se ON se.id = i.series_ref"
                       " JOIN studies st ON st.id = se.study_ref WHERE i.sop_instance_uid = ?",
                       (kos.SOPInstanceUID,)).fetchone()
    assert tuple(row) == (exam["id"], exam["study_instance_uid"])
    assert kos.Modality == "KO" and kos.ConceptNameCodeSequence[0].CodeValue == "113000"
    images = [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in kos.ContentSequence
              if item.ValueType == "IMAGE"]
    uids = dict(conn.execute("SELECT id, sop_instance_uid FROM instances").fetchall())
    assert images == [uids[ids[2]], uids[ids[5]]]
    assert [item.TextValue for item in kos.ContentSequence if item.ValueType == "TEXT"] == ["1: 结节 8 mm"]
    evidence = kos.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == exam["study_instance_uid"]
    assert [r.ReferencedSOPInstanceUID for r in evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence] == images
    # DCMTK reads it as a structured report: its tree, the title and both images
    path = storage.resolve(app.config["STORAGE_DIR"], conn.execute(
        "SELECT storage_path FROM instances WHERE sop_instance_uid = ?", (kos.SOPInstanceUID,)).fetchone()[0])
    dumped = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
    assert dumped.returncode == 0, dumped.stderr
    assert "Key Object Selection Document" in dumped.stdout and "Of Interest" in dumped.stdout
    assert dumped.stdout.count("IMAGE") == 2 and "warning" not in dumped.stderr.lower(), dumped.stderr
    # and dicom3tools' validator of the IOD finds nothing to say but its name
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    assert (checked.stdout + checked.stderr).split() == ["KeyObjectSelectionDocument"], checked.stdout + checked.stderr


def test_an_amendment_stores_a_new_document_only_when_the_key_images_changed(app, conn, exam) -> None:
    ids = instances(conn)
    key_images.mark(conn, RAD, ids[0], {"note": "a"})
    sign(app, conn, exam)
    assert key_images.store_due(conn, app.config) == 1
    reports.amend(conn, RAD, patients.get_exam(conn, exam["accession_number"]), {"reason": "措辞"})
    sign(app, conn, exam)
    assert key_images.store_due(conn, app.config) == 0 and len(kos_files(app, conn)) == 1  # the same key images
    reports.amend(conn, RAD, patients.get_exam(conn, exam["accession_number"]), {"reason": "补充关键图像"})
    key_images.mark(conn, RAD, ids[1], {"note": "b"})
    sign(app, conn, exam)
    assert key_images.store_due(conn, app.config) == 1
    old, new = kos_files(app, conn)  # the old one kept
    assert len([i for i in new.ContentSequence if i.ValueType == "IMAGE"]) == 2
    assert len([i for i in old.ContentSequence if i.ValueType == "IMAGE"]) == 1
    assert [d["version"] for d in key_images.documents_of(conn, exam["id"])] == [1, 3]


def test_at_most_six_key_images_and_only_filed_ones(app, conn, exam) -> None:
    ids = instances(conn)
    for instance in ids[:6]:
        key_images.mark(conn, RAD, instance, {})
    with pytest.raises(Conflict):
        key_images.mark(conn, RAD, ids[6], {})
    key = key_images.of_exam(conn, exam["id"])[0]
    key_images.unmark(conn, RAD, key["id"])
    key_images.mark(conn, RAD, ids[6], {"note": "x" * 500})
    assert len(key_images.of_exam(conn, exam["id"])[-1]["note"]) == key_images.NOTE_MAX
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action LIKE 'report.key_image%'").fetchone()[0] == 8


def test_marked_from_the_page_listed_beside_the_report_and_printed(app, conn, exam, client_as) -> None:
    from tests.conftest import csrf_token
    rad = client_as("radiologist", username="dr_key")
    ids = instances(conn)
    token = csrf_token(rad, f"/exams/{exam['accession_number']}/report")
    marked = rad.post(f"/instances/{ids[3]}/key", data={"frame": "0", "center": "40", "width": "400", "note": "<b>结节</b>"},
                      headers={"X-CSRFToken": token})
    assert marked.status_code == 200 and marked.get_data(as_text=True) == "Marked as a key image."
    listed = rad.get(f"/exams/{exam['accession_number']}/key-images").get_data(as_text=True)
    assert f"/instances/{ids[3]}/render.png?frame=0&amp;wc=40.0&amp;ww=400.0" in listed
    assert "&lt;b&gt;结节&lt;/b&gt;" in listed and "<b>结节" not in listed
    assert client_as("registrar").get(f"/exams/{exam['accession_number']}/key-images").status_code == 403
    assert client_as("technologist").post(f"/instances/{ids[4]}/key", data={},
                                          headers={"X-CSRFToken": token}).status_code == 403
    sign(app, conn, exam)
    printed = rad.get(f"/exams/{exam['accession_number']}/report/print").get_data(as_text=True)
    assert 'id="printed-keys"' in printed and f"/instances/{ids[3]}/render.png" in printed
    key = key_images.of_exam(conn, exam["id"])[0]
    removed = rad.post(f"/exams/{exam['accession_number']}/key-images/{key['id']}/remove",
                       headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert removed.status_code == 200 and key_images.of_exam(conn, exam["id"]) == []


def test_a_workstation_moves_the_key_object_document_with_movescu(tmp_path) -> None:
    from tests.test_retrieve import in_namespace
    result = in_namespace(tmp_path, "key_objects")
    assert result["stored"] and result["moved"] == 0, result["log"]
    assert result["received"] == [[key_images.KOS_SOP_CLASS, result["kos"]]]
