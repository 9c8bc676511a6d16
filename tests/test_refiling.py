"""Re-filing: ranked candidates, moving a study with its headers rewritten, undo, reject."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from pacslite.core import audit, storage
from pacslite.ris import aes, patients, users
from pacslite.pacs import filing, refiling
from pacslite.pacs.index import Source
from tests.conftest import EXAM_FORM, count, csrf_token
from tests.dicomkit import make_ct

SOURCE = Source("CT01", "10.0.0.5")


def register(app, conn, **changes) -> patients.Registration:
    data = {**EXAM_FORM, **changes}
    return patients.register_exam(conn, audit.SYSTEM, app.config, data, data, confirm_demographics=True)


def send(app, conn, tmp_path, n: int = 2, study_uid: str | None = None, **fields) -> str:
    """``n`` images of one study ingested as a modality would send them; the study UID."""
    study_uid = study_uid or generate_uid()
    for number in range(n):
        path = tmp_path / f"{generate_uid()}.dcm"
        make_ct(path, study_uid=study_uid, instance_number=number + 1, **fields)
        filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), SOURCE)
    return study_uid


def typo_of(accession: str) -> str:
    return accession[:-3] + str((int(accession[-3]) + 1) % 10) + accession[-2:]


def study_of(conn, study_uid: str):
    return conn.execute("SELECT * FROM studies WHERE study_instance_uid = ?", (study_uid,)).fetchone()


def stored_files(app, conn, study_id: int) -> list[Path]:
    return [storage.resolve(app.config["STORAGE_DIR"], i["storage_path"])
            for i in refiling.instances_of_study(conn, study_id)]


def post(client, path: str, data: dict):
    return client.post(path, data={**data, "csrf_token": csrf_token(client, "/exams")})


def test_the_right_exam_is_ranked_first_for_a_typo(app, conn, tmp_path) -> None:
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "modality": "CT"})
    right = register(app, conn, patient_id="P0001", station_ae="CT01")
    register(app, conn, patient_id="P0002", name="李四", sex="F", birth_date="1990-01-01")
    register(app, conn, patient_id="P0003", name="王五")
    uid = send(app, conn, tmp_path, accession=typo_of(right.accession_number), patient_id="P0001",
               name="ZHANG^SAN", sex="M", birth_date="19800203")
    study = study_of(conn, uid)
    assert study["quarantine_reason"] == "unknown_accession"
    ranked = refiling.candidates(conn, study, app.config["TIMEZONE"])
    assert ranked[0].exam["accession_number"] == right.accession_number
    assert {"accession_typo", "patient_id_equal", "name_similar", "same_modality", "station_is_caller"} <= \
        set(ranked[0].reasons)
    assert all(c.score < ranked[0].score for c in ranked[1:])


def test_another_patients_demographics_with_this_exams_accession_ranks_the_accessions_exam_first(app, conn, tmp_path,
                                                                                                   client_as) -> None:
    """Issue 28: a console kept the previous patient's demographics and the technologist scanned
    the next patient's receipt. The previous patient's exam (a matching patient block, 65 before)
    was ranked above the scanned accession's (50), and the near-accession bonus went to exams two
    edits away although one matched exactly. Now the exact, check-digit-valid accession leads; the
    previous patient's exam, already holding its own study from this station, counts against."""
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "modality": "CT"})
    previous = register(app, conn, patient_id="P0101", name="张伟", sex="M", birth_date="1970-05-06",
                        station_ae="CT01")
    send(app, conn, tmp_path, accession=previous.accession_number, patient_id="P0101", name="ZHANG^WEI", sex="M",
         birth_date="19700506")
    following = [register(app, conn, patient_id=f"P01{n:02d}", name=name, sex=sex, birth_date=birth,
                          station_ae="CT01")
                 for n, (name, sex, birth) in enumerate((("李娜", "F", "1985-01-02"), ("王强", "M", "1991-03-04"),
                                                         ("赵敏", "F", "1960-07-08")), start=2)]
    right = following[1]
    uid = send(app, conn, tmp_path, accession=right.accession_number, patient_id="P0101", name="ZHANG^WEI", sex="M",
               birth_date="19700506")
    study = study_of(conn, uid)
    assert study["quarantine_reason"] is not None  # never filed silently
    ranked = refiling.candidates(conn, study, app.config["TIMEZONE"])
    assert ranked[0].exam["accession_number"] == right.accession_number, [
        (c.exam["accession_number"], c.score, c.reasons, c.against) for c in ranked]
    assert "accession_equal" in ranked[0].reasons and "awaiting_images" in ranked[0].reasons
    held = next(c for c in ranked if c.exam["accession_number"] == previous.accession_number)
    assert "holds_study_from_caller" in held.against and "patient_id_equal" in held.reasons
    assert not any("accession_close" in c.reasons or "accession_typo" in c.reasons for c in ranked)
    assert refiling.is_clear(ranked)

    # a clear first candidate is filed with one click from the quarantine: audited, undoable
    tech = client_as("technologist")
    listed = tech.get(f"/quarantine/studies/{study['id']}/candidates", headers={"HX-Request": "true"})
    assert 'name="one_click"' in listed.get_data(as_text=True)
    done = post(tech, f"/studies/{study['id']}/file", {"accession_number": right.accession_number, "one_click": "1"})
    assert done.status_code == 302
    assert study_of(conn, uid)["exam_ref"] == patients.get_exam(conn, right.accession_number)["id"]
    row = conn.execute("SELECT detail FROM audit_log WHERE action = 'image.refile'").fetchone()
    assert json.loads(row["detail"])["reason"].startswith("one click: the most likely exam (score ")
    refiling.undo_refiling(conn, audit.SYSTEM, conn.execute("SELECT MAX(id) FROM refilings").fetchone()[0],
                           {"reason": "checking the undo"})
    assert study_of(conn, uid)["exam_ref"] is None


def test_close_candidates_are_not_clear(app, conn, tmp_path, client_as) -> None:
    """Twins registered for the same CT, a study with neither accession nor patient ID: the
    two are nearly equally likely, and the quarantine must not offer one click."""
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "modality": "CT"})
    for patient_id, name in (("P0201", "陈静"), ("P0202", "陈敏")):
        register(app, conn, patient_id=patient_id, name=name, sex="F", birth_date="2001-02-03", station_ae="CT01")
    uid = send(app, conn, tmp_path, accession="", patient_id="", name="CHEN^JING", sex="F", birth_date="20010203")
    study = study_of(conn, uid)
    ranked = refiling.candidates(conn, study, app.config["TIMEZONE"])
    assert len(ranked) >= 2 and not refiling.is_clear(ranked), [(c.score, c.reasons) for c in ranked]
    page = client_as("technologist").get(f"/studies/{study['id']}").get_data(as_text=True)
    assert "The first candidates are close" in page and "most likely" not in page
    choices = page[page.index('id="file-to-candidate"'):]
    assert 'name="accession_number"' in choices and "checked" not in choices[:choices.index("</fieldset>")]
    assert 'name="one_click"' not in page
    refused = post(client_as("technologist"), f"/studies/{study['id']}/file",
                   {"accession_number": ranked[0].exam["accession_number"], "one_click": "1"})
    assert refused.status_code == 409 and "compare the images" in refused.get_data(as_text=True)
    assert study_of(conn, uid)["exam_ref"] is None and count(conn, "refilings") == 0


def test_refile_rewrites_the_headers_keeps_the_originals_and_can_be_undone(app, conn, tmp_path, client_as) -> None:
    exam = register(app, conn)
    typo = typo_of(exam.accession_number)
    uid = send(app, conn, tmp_path, accession=typo, patient_id="P0001", name="ZHANG^SAN", charset="ISO_IR 100")
    study = study_of(conn, uid)
    originals = {p: storage.sha256_file(p)[1] for p in stored_files(app, conn, study["id"])}
    admin = client_as("admin")

    refused = post(admin, f"/studies/{study['id']}/refile", {"accession_number": exam.accession_number, "reason": ""})
    assert refused.status_code == 400 and study_of(conn, uid)["exam_ref"] is None
    assert count(conn, "refilings") == 0

    done = post(admin, f"/studies/{study['id']}/refile", {"accession_number": exam.accession_number,
                                                         "reason": "Typo at the CT console"})
    assert done.status_code == 302
    moved = study_of(conn, uid)
    assert (moved["exam_ref"], moved["quarantine_reason"], moved["accession_number"]) == \
        (patients.get_exam(conn, exam.accession_number)["id"], None, exam.accession_number)
    filed = patients.get_exam(conn, exam.accession_number)
    assert (filed["status"], filed["series_count"], filed["instance_count"]) == ("in_progress", 2, 2)

    for path in stored_files(app, conn, study["id"]):
        ds = dcmread(path)
        assert (ds.AccessionNumber, ds.PatientID, str(ds.PatientName), ds.PatientSex, ds.PatientBirthDate) == \
            (exam.accession_number, "P0001", "ZHANG^SAN=张^三", "M", "19800203")
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        item = ds.OriginalAttributesSequence[-1]
        old = item.ModifiedAttributesSequence[0]
        assert (old.AccessionNumber, str(old.PatientName), old.SpecificCharacterSet) == (typo, "ZHANG^SAN",
                                                                                         "ISO_IR 100")
        assert (item.ReasonForTheAttributeModification, item.ModifyingSystem, item.SourceOfPreviousValues) == \
            ("CORRECT", "pacslite", "CT01")
        assert ds.pixel_array.shape == (128, 128)
    for path, sha in originals.items():  # the original files are kept, untouched
        assert storage.sha256_file(path)[1] == sha
    row = conn.execute("SELECT detail FROM audit_log WHERE action = 'image.refile'").fetchone()
    detail = json.loads(row["detail"])
    assert (detail["before"]["accession_number"], detail["after"]["accession_number"], detail["reason"]) == \
        (typo, exam.accession_number, "Typo at the CT console")
    assert [i for i in refiling.quarantine_with_candidates(conn, "Asia/Shanghai") if i["study_instance_uid"] == uid] == []
    # start-up recovery keeps both the rewritten and the original files
    assert filing.recover(conn, app.config["STORAGE_DIR"]) == (0, 0)

    refiling_id = conn.execute("SELECT id FROM refilings").fetchone()[0]
    assert post(admin, f"/refilings/{refiling_id}/undo", {"reason": "Wrong exam chosen"}).status_code == 302
    back = study_of(conn, uid)
    assert (back["exam_ref"], back["quarantine_reason"], back["accession_number"]) == (None, "unknown_accession",
                                                                                      typo)
    assert set(stored_files(app, conn, study["id"])) == set(originals)
    assert patients.get_exam(conn, exam.accession_number)["instance_count"] == 0
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'image.refile_undo'").fetchone()[0] == 1
    again = post(admin, f"/refilings/{refiling_id}/undo", {"reason": "twice"})
    assert again.status_code == 409


def test_a_filed_study_moves_to_the_right_patient(app, conn, tmp_path, client_as) -> None:
    wrong = register(app, conn, patient_id="P0001")
    right = register(app, conn, patient_id="P0002", name="李四", sex="F", birth_date="1990-01-01")
    uid = send(app, conn, tmp_path, accession=wrong.accession_number, patient_id="P0001")
    study = study_of(conn, uid)
    assert study["exam_ref"] is not None
    admin = users.create(conn, audit.SYSTEM, {"username": "pacsadmin", "password": "Secret-pass-1",
                                              "roles": ["admin"]})
    refiled = refiling.refile(conn, audit.Actor(admin.username), app.config, study["id"],
                              {"accession_number": right.accession_number, "reason": "Taken under the wrong patient"})
    assert patients.get_exam(conn, wrong.accession_number)["instance_count"] == 0
    assert patients.get_exam(conn, right.accession_number)["instance_count"] == 2
    assert {dcmread(p).PatientID for p in stored_files(app, conn, study["id"])} == {"P0002"}

    # the statistics count it as a misfile found after filing, on the page and in the CSV, until undone
    page = client_as("admin").get("/statistics").get_data(as_text=True)
    assert re.search(r'id="misfiles-found">1<', page)
    assert "Filed to the wrong exam (found after filing): 1" in page
    rows = list(csv.DictReader(io.StringIO(client_as("admin").get("/statistics.csv").get_data(as_text=True)
                                           .lstrip("\ufeff"))))
    assert (rows[0]["misfiles_found_after_filing"], rows[0]["refiled_after_filing"]) == ("1", "1")
    assert (rows[0]["studies_received"], rows[0]["final_filing_rate"]) == ("1", "1.0")
    refiling.undo_refiling(conn, audit.Actor(admin.username), refiled, {"reason": "Was right after all"})
    page = client_as("admin").get("/statistics").get_data(as_text=True)
    assert re.search(r'id="misfiles-found">0<', page)


def test_a_role_that_may_not_refile_is_refused_and_audited(app, conn, tmp_path, client_as) -> None:
    exam = register(app, conn)
    uid = send(app, conn, tmp_path, accession=typo_of(exam.accession_number), patient_id="P0001")
    study = study_of(conn, uid)
    tech = client_as("technologist")
    assert tech.get(f"/studies/{study['id']}").status_code == 200  # may look
    before = conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'access.denied'").fetchone()[0]
    response = post(tech, f"/studies/{study['id']}/refile", {"accession_number": exam.accession_number,
                                                            "reason": "x"})
    assert response.status_code == 403
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'access.denied'").fetchone()[0] == before + 1
    assert study_of(conn, uid)["exam_ref"] is None and count(conn, "refilings") == 0


def test_garbage_is_rejected_with_a_reason_and_can_be_restored(app, conn, tmp_path, client_as) -> None:
    uid = send(app, conn, tmp_path, n=1, patient_id="TEST", name="PHANTOM")
    study = study_of(conn, uid)
    admin = client_as("admin")
    assert post(admin, f"/studies/{study['id']}/reject", {"reason": ""}).status_code == 400
    assert post(admin, f"/studies/{study['id']}/reject", {"reason": "Phantom test images"}).status_code == 302
    assert uid not in [i["study_instance_uid"] for i in refiling.quarantine_with_candidates(conn, "Asia/Shanghai")]
    assert stored_files(app, conn, study["id"])[0].exists()  # hidden, not deleted
    assert "Phantom test images" in admin.get("/quarantine/rejected").get_data(as_text=True)
    assert post(admin, f"/studies/{study['id']}/restore", {"reason": "Was a real patient"}).status_code == 302
    assert uid in [i["study_instance_uid"] for i in refiling.quarantine_with_candidates(conn, "Asia/Shanghai")]
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE action LIKE 'image.re%'")]
    assert actions == ["image.reject", "image.restore"]


def test_the_api_lists_ranked_candidates(app, conn, tmp_path) -> None:
    exam = register(app, conn)
    send(app, conn, tmp_path, n=1, accession=typo_of(exam.accession_number), patient_id="P0001")
    token = users.create_token(conn, audit.SYSTEM, users.create(conn, audit.SYSTEM, {
        "username": "tech_api", "password": "Secret-pass-1", "roles": ["technologist"]}).username)
    items = app.test_client().get("/api/v1/quarantine", headers={"Authorization": f"Bearer {token}"}).get_json()["items"]
    [item] = [i for i in items if i["kind"] == "study"]
    assert item["candidates"][0]["accession_number"] == exam.accession_number
    assert "accession_typo" in item["candidates"][0]["reasons"]


def test_purge_removes_only_what_is_past_its_retention(app, conn, tmp_path, client_as) -> None:
    from datetime import timedelta
    from pacslite.core import clock
    exam = register(app, conn)
    uid = send(app, conn, tmp_path, accession=typo_of(exam.accession_number), patient_id="P0001")
    study = study_of(conn, uid)
    originals = stored_files(app, conn, study["id"])
    refiling_id = refiling.refile(conn, audit.SYSTEM, app.config, study["id"],
                                        {"accession_number": exam.accession_number, "reason": "typo"})
    rewritten = stored_files(app, conn, study["id"])
    garbage = study_of(conn, send(app, conn, tmp_path, n=1, patient_id="TEST"))
    refiling.reject_study(conn, audit.SYSTEM, garbage["id"], {"reason": "phantom"})
    garbage_files = stored_files(app, conn, garbage["id"])

    assert refiling.purge(conn, audit.SYSTEM, app.config) == refiling.Purged(0, 0)  # nothing is old enough
    assert all(p.exists() for p in originals + garbage_files)
    later = clock.now() + timedelta(days=91)
    assert refiling.purge(conn, audit.SYSTEM, app.config, now=later) == refiling.Purged(3, 1)
    assert not any(p.exists() for p in originals + garbage_files)
    assert all(p.exists() for p in rewritten)  # what the index points at stays
    assert study_of(conn, garbage["study_instance_uid"]) is None
    assert filing.recover(conn, app.config["STORAGE_DIR"]) == (0, 0)
    refused = post(client_as("admin"), f"/refilings/{refiling_id}/undo", {"reason": "too late"})
    assert refused.status_code == 409 and "purged" in refused.get_data(as_text=True)
    detail = json.loads(conn.execute("SELECT detail FROM audit_log WHERE action = 'image.purge'").fetchone()[0])
    assert (detail["superseded_files"], detail["files"]) == (2, 3)


def test_one_series_is_refiled_into_a_study_of_its_own_and_back(app, conn, tmp_path, client_as) -> None:
    """A study whose second series is another patient's: only that series moves."""
    mine = register(app, conn, patient_id="P0001")
    theirs = register(app, conn, patient_id="P0002", name="李四", sex="F", birth_date="1990-01-01")
    study_uid = generate_uid()
    send(app, conn, tmp_path, n=2, study_uid=study_uid, accession=typo_of(mine.accession_number),
         patient_id="P0001", series_uid=generate_uid())
    send(app, conn, tmp_path, n=3, study_uid=study_uid, accession=typo_of(mine.accession_number),
         patient_id="P0001", series_uid=generate_uid())
    study = study_of(conn, study_uid)
    assert (study["series_count"], study["instance_count"]) == (2, 5)
    series = conn.execute("SELECT * FROM series WHERE study_ref = ? AND instance_count = 3",
                          (study["id"],)).fetchone()
    admin = client_as("admin")
    assert "gets a study of its own" in admin.get(f"/studies/{study['id']}").get_data(as_text=True)
    done = post(admin, f"/studies/{study['id']}/refile", {"accession_number": theirs.accession_number,
                                                         "reason": "Second series is Li Si's", "series_id": series["id"]})
    assert done.status_code == 302
    left = study_of(conn, study_uid)
    assert (left["series_count"], left["instance_count"], left["quarantine_reason"]) == (1, 2, "unknown_accession")
    moved = conn.execute("SELECT st.* FROM studies st JOIN series se ON se.study_ref = st.id WHERE se.id = ?",
                         (series["id"],)).fetchone()
    assert moved["study_instance_uid"] != study_uid and moved["instance_count"] == 3
    assert patients.get_exam(conn, theirs.accession_number)["instance_count"] == 3
    for path in stored_files(app, conn, moved["id"]):
        ds = dcmread(path)
        assert (ds.StudyInstanceUID, ds.PatientID) == (moved["study_instance_uid"], "P0002")
        assert ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].StudyInstanceUID == study_uid
    assert {dcmread(p).StudyInstanceUID for p in stored_files(app, conn, left["id"])} == {study_uid}

    refiling_id = conn.execute("SELECT id FROM refilings").fetchone()[0]
    assert post(admin, f"/refilings/{refiling_id}/undo", {"reason": "It was the same patient"}).status_code == 302
    back = study_of(conn, study_uid)
    assert (back["series_count"], back["instance_count"]) == (2, 5)
    assert patients.get_exam(conn, theirs.accession_number)["instance_count"] == 0
    assert {dcmread(p).StudyInstanceUID for p in stored_files(app, conn, back["id"])} == {study_uid}
    assert post(admin, f"/studies/{study['id']}/refile", {"accession_number": theirs.accession_number,
                                                         "reason": "x", "series_id": 999999}).status_code == 404


def test_some_images_of_a_series_are_refiled_and_back(app, conn, tmp_path, client_as) -> None:
    mine = register(app, conn, patient_id="P0001")
    theirs = register(app, conn, patient_id="P0002", name="李四", sex="F", birth_date="1990-01-01")
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in range(1, 5):
        path = tmp_path / f"i{number}.dcm"
        make_ct(path, study_uid=study_uid, series_uid=series_uid, instance_number=number,
                accession=typo_of(mine.accession_number), patient_id="P0001")
        filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), SOURCE)
    study = study_of(conn, study_uid)
    admin = client_as("admin")
    bad = post(admin, f"/studies/{study['id']}/refile", {"accession_number": theirs.accession_number,
                                                        "reason": "x", "instances": "3-x"})
    assert bad.status_code == 400 and "like 1-20, 25" in bad.get_data(as_text=True)
    series_id = conn.execute("SELECT id FROM series WHERE series_instance_uid = ?", (series_uid,)).fetchone()[0]
    done = post(admin, f"/studies/{study['id']}/refile", {"accession_number": theirs.accession_number,
                                                         "reason": "Slices 3-4 are Li Si's", "series_id": series_id,
                                                         "instances": "3-4"})
    assert done.status_code == 302
    assert study_of(conn, study_uid)["instance_count"] == 2
    moved = conn.execute("SELECT * FROM studies WHERE exam_ref = ?",
                         (patients.get_exam(conn, theirs.accession_number)["id"],)).fetchone()
    files = stored_files(app, conn, moved["id"])
    assert sorted(dcmread(p).InstanceNumber for p in files) == [3, 4]
    assert {dcmread(p).SeriesInstanceUID for p in files} != {series_uid}
    assert dcmread(files[0]).OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].SeriesInstanceUID == \
        series_uid
    refiling_id = conn.execute("SELECT id FROM refilings").fetchone()[0]
    assert post(admin, f"/refilings/{refiling_id}/undo", {"reason": "same patient after all"}).status_code == 302
    assert study_of(conn, study_uid)["instance_count"] == 4
    assert {dcmread(p).SeriesInstanceUID for p in stored_files(app, conn, study["id"])} == {series_uid}


def test_refiling_to_an_unknown_or_cancelled_exam_is_refused_and_changes_nothing(app, conn, tmp_path,
                                                                                  client_as) -> None:
    exam = register(app, conn)
    cancelled = register(app, conn, patient_id="P0002", name="李四", sex="F", birth_date="1990-01-01")
    patients.cancel_exam(conn, audit.SYSTEM, cancelled.accession_number, {"reason": "not performed"})
    uid = send(app, conn, tmp_path, accession=typo_of(exam.accession_number), patient_id="P0001")
    study = study_of(conn, uid)
    files_before = sorted(p.name for p in (Path(app.config["STORAGE_DIR"]) / "dicom").rglob("*.dcm"))
    admin = client_as("admin")
    for accession, message in (("NOSUCH", "No exam has the accession number NOSUCH"),
                               (cancelled.accession_number, "is cancelled")):
        refused = post(admin, f"/studies/{study['id']}/refile", {"accession_number": accession, "reason": "r"})
        assert refused.status_code == 409 and message in refused.get_data(as_text=True)
    assert study_of(conn, uid)["quarantine_reason"] == "unknown_accession" and count(conn, "refilings") == 0
    assert sorted(p.name for p in (Path(app.config["STORAGE_DIR"]) / "dicom").rglob("*.dcm")) == files_before
    assert post(admin, "/refilings/999999/undo", {"reason": "x"}).status_code == 404


def test_the_quarantine_list_loads_each_studys_candidates_as_its_row_is_shown(app, conn, tmp_path, client_as) -> None:
    exam = register(app, conn)
    send(app, conn, tmp_path, n=1, accession=typo_of(exam.accession_number), patient_id="P0001")
    study_id = conn.execute("SELECT id FROM studies WHERE exam_ref IS NULL").fetchone()[0]
    tech = client_as("technologist")
    page = tech.get("/quarantine/").get_data(as_text=True)
    fragment = f"/quarantine/studies/{study_id}/candidates"
    assert f'hx-get="{fragment}"' in page and exam.accession_number not in page  # the list does not rank
    partial = tech.get(fragment, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert '<ol class="candidates">' in partial and exam.accession_number in partial
    assert tech.get(fragment).location.endswith(f"/studies/{study_id}")  # not htmx: the study's page
    assert client_as("registrar").get(fragment, headers={"HX-Request": "true"}).status_code == 403
    assert tech.get("/quarantine/studies/999999/candidates", headers={"HX-Request": "true"}).status_code == 404


def test_the_api_pages_the_quarantine_five_at_a_time(app, conn, tmp_path) -> None:
    for n in range(6):
        send(app, conn, tmp_path, n=1, accession=f"NOSUCH{n:02d}", patient_id="P0001")
    token = users.create_token(conn, audit.SYSTEM, users.create(conn, audit.SYSTEM, {
        "username": "tech_pages", "password": "Secret-pass-1", "roles": ["technologist"]}).username)
    client, auth = app.test_client(), {"Authorization": f"Bearer {token}"}
    first = client.get("/api/v1/quarantine", headers=auth).get_json()
    assert first["count"] == 5 and first["next_offset"] == 5
    second = client.get(f"/api/v1/quarantine?offset={first['next_offset']}", headers=auth).get_json()
    assert second["count"] == 1 and second["next_offset"] is None
    seen = {i["accession_number"] for i in first["items"] + second["items"]}
    assert seen == {f"NOSUCH{n:02d}" for n in range(6)}  # every study once, across the pages
    assert client.get("/api/v1/quarantine?offset=-1", headers=auth).status_code == 400


def test_body_parts_are_compared_by_region_in_either_language() -> None:
    assert refiling.body_regions("胸部") == refiling.body_regions("CHEST") == refiling.body_regions("肺") == {"CHEST"}
    assert refiling.body_regions("胸椎") == refiling.body_regions("LSPINE") == {"SPINE"}  # not the chest
    assert refiling.body_regions("头颅") == refiling.body_regions("head") == {"HEAD"}
    assert refiling.body_regions("胸腹部") == {"CHEST", "ABDOMEN"}
    assert refiling.body_regions("") == refiling.body_regions("WHOLEBODY?") == set()


def test_the_acquisition_time_is_the_headers_unless_it_is_missing_or_far_from_the_arrival() -> None:
    study = {"first_received_at": "2026-11-02T02:30:00+00:00", "study_date": "20261102", "study_time": "094512.25"}
    assert refiling.acquired_at(study, "Asia/Shanghai").isoformat() == "2026-11-02T09:45:12+08:00"
    assert refiling.acquired_at({**study, "study_time": "0945"}, "Asia/Shanghai").isoformat() == \
        "2026-11-02T09:45:00+08:00"
    for date, time in (("", "094512"), ("20261102", ""), ("20040119", "094512"), ("20261340", "094512"),
                       ("20261102", "ab")):
        assert refiling.acquired_at({**study, "study_date": date, "study_time": time},
                                    "Asia/Shanghai").isoformat() == "2026-11-02T02:30:00+00:00", (date, time)


def test_the_image_comparison_shows_each_candidates_latest_images_of_the_same_body_part(app, conn, tmp_path) -> None:
    """A close call: each candidate patient's most recent earlier study of the study's body
    region (a chest CT, although a head CT came since), or the newest when none is; None for a
    patient without images."""
    def sent(exam: patients.Registration | None, body_part: str, **fields) -> str:
        path = tmp_path / f"{generate_uid()}.dcm"
        ds = make_ct(path, accession=exam.accession_number if exam else "", **fields)
        ds.BodyPartExamined = body_part
        ds.save_as(path, enforce_file_format=True)
        filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), SOURCE)
        return ds.StudyInstanceUID

    chest = register(app, conn, patient_id="P0001", body_part="胸部")
    sent(chest, "CHEST", patient_id="P0001", name="ZHANG^SAN", sex="M", birth_date="19800203")
    head = register(app, conn, patient_id="P0001", procedure="Head CT", body_part="头颅")
    sent(head, "HEAD", patient_id="P0001", name="ZHANG^SAN", sex="M", birth_date="19800203")
    today = register(app, conn, patient_id="P0001")
    other = register(app, conn, patient_id="P0002", name="李四", sex="M", birth_date="1980-02-03")
    study = study_of(conn, sent(None, "CHEST", sex="M", birth_date="19800203"))
    ranked = refiling.candidates(conn, study, app.config["TIMEZONE"])
    assert {c.exam["accession_number"] for c in ranked} == {today.accession_number, other.accession_number}
    priors = refiling.priors_for_comparison(conn, study, ranked)
    mine = priors[next(c.exam["id"] for c in ranked if c.exam["accession_number"] == today.accession_number)]
    assert mine.exam["accession_number"] == chest.accession_number and len(mine.series) == 1
    assert priors[next(c.exam["id"] for c in ranked if c.exam["accession_number"] == other.accession_number)] is None
