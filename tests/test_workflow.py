"""Closing the loop with the modality, against the real process (app.py): the worklist (DCMTK
findscu -W), MPPS and storage commitment (pynetdicom as the modality), images (storescu), the
exam's states as the report is signed, and the expected-image check."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (ModalityPerformedProcedureStep,  # type: ignore[attr-defined]
                                  StorageCommitmentPushModel, Verification)

from pacslite import create_app
from tests import server as pacs_server
from tests.conftest import csrf_token, flask_cli, free_port, login, wait_for
from tests.dicomkit import findscu, make_ct, store_results, storescu

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> pacs_server.Pacs:
    instance = tmp_path_factory.mktemp("workflow")
    for args in (["CT01", "--modality", "CT"], ["STORESCU"], ["FINDSCU"],
                 ["NOMPPS", "--may", "store,worklist"]):
        added = flask_cli(instance, "ae", "add", *args)
        assert added.returncode == 0, added.stderr
    # the grace period in seconds: 0.05 min = 3 s
    running = pacs_server.Pacs(instance, PACSLITE_MPPS_GRACE_MINUTES="0.05",
                               PACSLITE_COMMITMENT_RETRY_FIRST_SECONDS="1", PACSLITE_FORWARD_POLL_SECONDS="0.5")
    running.add_user("wf_rad", "radiologist")
    running.add_user("wf_tech", "technologist")
    yield running
    assert running.server.stop() == 0


# ---------------------------------------------------------------- the modality (pynetdicom)

def associate(pacs, aet: str = "CT01", handlers: list | None = None) -> Any:
    ae = AE(aet)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACSLITE", evt_handlers=handlers or [])
    assert assoc.is_established
    return assoc


def in_progress(answer: Dataset, step_id: str = "PPS1") -> Dataset:
    """An N-CREATE attribute list for the worklist item ``answer`` (IHE RAD-6)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = answer.PatientName
    ds.PatientID = answer.PatientID
    ds.PatientBirthDate = answer.PatientBirthDate
    ds.PatientSex = answer.PatientSex
    step = Dataset()
    step.AccessionNumber = answer.AccessionNumber
    step.StudyInstanceUID = answer.StudyInstanceUID
    step.RequestedProcedureID = answer.RequestedProcedureID
    step.ScheduledProcedureStepID = answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PerformedProcedureStepID = step_id
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261129"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = Sequence()
    return ds


def final(state: str, series_uid: str, instances: list[str]) -> Dataset:
    """An N-SET modification list ending the step, listing what was acquired (IHE RAD-7)."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = state
    ds.PerformedProcedureStepEndDate = "20261129"
    ds.PerformedProcedureStepEndTime = "102000"
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.SeriesDescription = "Chest 5mm"
    series.PerformingPhysicianName = ""
    series.ProtocolName = "CHEST"
    series.OperatorsName = ""
    series.RetrieveAETitle = ""
    series.ReferencedImageSequence = Sequence([_ref(CT_IMAGE, uid) for uid in instances])
    series.ReferencedNonImageCompositeSOPInstanceSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def create(assoc, attributes: Dataset) -> tuple[int, str]:
    uid = generate_uid()
    status, _ = assoc.send_n_create(attributes, ModalityPerformedProcedureStep, uid)
    return int(status.Status), uid


def set_step(assoc, uid: str, modification: Dataset) -> Dataset:
    status, _ = assoc.send_n_set(modification, ModalityPerformedProcedureStep, uid)
    return status


def commitment_request(transaction_uid: str, pairs: list[tuple[str, str]]) -> Dataset:
    info = Dataset()
    info.TransactionUID = transaction_uid
    info.ReferencedSOPSequence = Sequence([_ref(c, i) for c, i in pairs])
    return info


# ---------------------------------------------------------------- helpers

def worklist(pacs, tmp_path: Path, *keys: str) -> list[Dataset]:
    result, answers = findscu(pacs.port, [
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "RequestedProcedureID",
        "StudyInstanceUID", "ScheduledProcedureStepSequence[0].Modality=CT",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261201", *keys], tmp_path, aet="CT01")
    assert result.returncode == 0, result.stderr
    return answers


def images_for(answer: Dataset, directory: Path, count: int) -> tuple[str, list[Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    files = []
    for number in range(1, count + 1):
        path = directory / f"{number}.dcm"
        make_ct(path, study_uid=answer.StudyInstanceUID, series_uid=series, accession=answer.AccessionNumber,
                patient_id=answer.PatientID, name=str(answer.PatientName), sex=answer.PatientSex,
                birth_date=answer.PatientBirthDate, instance_number=number, seed=number)
        files.append(path)
    return series, files


def send(pacs, files: list[Path]) -> None:
    sent = storescu(pacs.port, files, aet="CT01")
    assert set(store_results(sent.stdout + sent.stderr).values()) == {"Success"}, sent.stderr[-2000:]


def uid_of(path: Path) -> str:
    return dcmread(path, stop_before_pixels=True).SOPInstanceUID


def status_of(pacs, accession: str) -> str:
    return pacs.query("SELECT status FROM exams WHERE accession_number = ?", accession)[0][0]


def alert(pacs, accession: str) -> dict | None:
    rows = pacs.query("SELECT a.state, a.detail FROM alerts a JOIN exams e ON e.id = a.exam_ref"
                      " WHERE a.rule = 'incomplete_transmission' AND e.accession_number = ?"
                      " ORDER BY a.id DESC LIMIT 1", accession)
    return {"state": rows[0][0], **json.loads(rows[0][1])} if rows else None


def web_client(pacs, username: str) -> Any:
    client = create_app({"INSTANCE_DIR": str(pacs.instance), "DEFAULT_LANGUAGE": "en"}).test_client()
    login(client, username, "Secret-pass-1")
    return client


# ---------------------------------------------------------------- the round

def test_a_modality_round_from_worklist_to_final_report(pacs, tmp_path) -> None:
    """The issue's "done when": worklist → IN PROGRESS → images → COMPLETED → committed → the
    report moves the exam → no longer on the worklist."""
    reg = pacs.register(patient_id="WF0001", name="张三", station_ae="", scheduled_date="2026-12-01",
                        scheduled_time="10:00")
    (answer,) = [a for a in worklist(pacs, tmp_path / "wl1") if a.PatientID == "WF0001"]
    assert answer.AccessionNumber == reg.accession_number
    assert status_of(pacs, reg.accession_number) == "scheduled"

    reports: list[Dataset] = []

    def on_report(event: Any) -> int:
        reports.append(event.event_information)
        return 0x0000, None

    assoc = associate(pacs, handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    status, step_uid = create(assoc, in_progress(answer))
    assert status == 0x0000
    assert status_of(pacs, reg.accession_number) == "in_progress"
    # still offered while in progress (IHE: until the step is completed)
    assert [a.AccessionNumber for a in worklist(pacs, tmp_path / "wl2") if a.PatientID == "WF0001"] == \
        [reg.accession_number]

    series, files = images_for(answer, tmp_path / "img", 5)
    send(pacs, files)
    done = set_step(assoc, step_uid, final("COMPLETED", series, [uid_of(f) for f in files]))
    assert done.Status == 0x0000
    assert status_of(pacs, reg.accession_number) == "performed"

    # storage commitment, the report on the same association (kept open)
    transaction = generate_uid()
    status, _ = assoc.send_n_action(commitment_request(transaction, [(CT_IMAGE, uid_of(f)) for f in files]), 1,
                                    StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    assert status.Status == 0x0000
    wait_for(lambda: reports, "the commitment report arrived on the association")
    (report,) = reports
    assert report.TransactionUID == transaction
    assert sorted(r.ReferencedSOPInstanceUID for r in report.ReferencedSOPSequence) == sorted(map(uid_of, files))
    assert "FailedSOPSequence" not in report
    assoc.release()
    assert pacs.query("SELECT state, delivered_on, committed FROM commitments WHERE transaction_uid = ?",
                      transaction)[0][:] == ("delivered", "same", 5)

    # off the worklist once performed; everything arrived, so no alert
    assert [a for a in worklist(pacs, tmp_path / "wl3") if a.PatientID == "WF0001"] == []
    wait_for(lambda: not pacs.query("SELECT 1 FROM exams WHERE accession_number = ? AND transmission_check_at"
                                    " IS NOT NULL", reg.accession_number), "the expected-image check passed")
    assert alert(pacs, reg.accession_number) is None

    # the report moves the exam: preliminary, then final; the API says so
    radiologist = web_client(pacs, "wf_rad")
    page = f"/exams/{reg.accession_number}/report"
    for level, state in (("preliminary", "preliminary"), ("final", "final")):
        revision = pacs.query("SELECT COALESCE(MAX(revision), 0) FROM report_versions v JOIN exams e"
                              " ON e.id = v.exam_ref WHERE e.accession_number = ?", reg.accession_number)[0][0]
        signed = radiologist.post(f"{page}/sign", data={"csrf_token": csrf_token(radiologist, page), "level": level,
                                                         "findings": "Clear lungs.", "impression": "Normal.",
                                                         "revision": str(revision), "result_class": "normal",
                                                         "confirm": "1"})
        assert signed.status_code == 302, signed.get_data(as_text=True)[-500:]
        assert status_of(pacs, reg.accession_number) == state
    api = pacs.api(f"/api/v1/exams/{reg.accession_number}", pacs.token("wf_his", "clinician"))
    assert (api["status"], api["images"]) == ("final", {"series": 1, "instances": 5, "expected": 5})
    moves = [json.loads(r[0]) for r in pacs.query(
        "SELECT detail FROM audit_log WHERE action = 'exam.state' AND target = ? ORDER BY id",
        f"exam:{reg.accession_number}")]
    assert [(m["from"], m["to"]) for m in moves] == [("scheduled", "in_progress"), ("in_progress", "performed"),
                                                     ("performed", "preliminary"), ("preliminary", "final")]


def test_a_transfer_that_stopped_short_raises_incomplete_transmission_until_the_rest_arrives(pacs, tmp_path) -> None:
    reg = pacs.register(patient_id="WF0002", name="李四", station_ae="CT01", scheduled_date="2026-12-01",
                        scheduled_time="11:00")
    (answer,) = [a for a in worklist(pacs, tmp_path / "wl") if a.PatientID == "WF0002"]
    series, files = images_for(answer, tmp_path / "img", 5)
    assoc = associate(pacs)
    status, step_uid = create(assoc, in_progress(answer))
    assert status == 0x0000
    send(pacs, files[:3])  # the link failed after three
    assert set_step(assoc, step_uid, final("COMPLETED", series, [uid_of(f) for f in files])).Status == 0x0000
    assoc.release()
    # within the grace period (3 s) and the check's poll: the alert names the series and the 2 missing
    wait_for(lambda: (alert(pacs, reg.accession_number) or {}).get("missing") == 2,
             "incomplete_transmission names 2 missing", seconds=20)
    raised = alert(pacs, reg.accession_number)
    assert (raised["state"], raised["expected"], raised["received"]) == ("open", 5, 3)
    assert [(s["series_instance_uid"], s["description"], s["missing"]) for s in raised["series"]] == \
        [(series, "Chest 5mm", 2)]
    technologist = web_client(pacs, "wf_tech")
    page = technologist.get(f"/exams/{reg.accession_number}").get_data(as_text=True)
    assert "acquired 5 · received 3" in page and "Chest 5mm: 2 of 5 missing" in page
    assert "2 of 5 images not received" in technologist.get("/alerts").get_data(as_text=True)
    send(pacs, files[3:])  # the rest is sent again
    wait_for(lambda: alert(pacs, reg.accession_number)["state"] == "cleared", "the alert cleared itself")
    assert "acquired 5 · received 5" in technologist.get(f"/exams/{reg.accession_number}").get_data(as_text=True)
    cleared = technologist.get("/alerts?state=cleared").get_data(as_text=True)  # its counts are of then, said so
    assert "When it was opened: 2 of 5 images not received" in cleared


def test_commitment_report_on_a_new_association_with_an_unknown_instance(pacs, tmp_path) -> None:
    """5 stored and 1 unknown: 5 successes and 1 failure 0x0112, on a new association to the
    requesting AE, which closed its own at once."""
    pacs.register(patient_id="WF0003", name="王五", station_ae="CT01", scheduled_date="2026-12-01",
                  scheduled_time="12:00")
    (answer,) = [a for a in worklist(pacs, tmp_path / "wl") if a.PatientID == "WF0003"]
    _, files = images_for(answer, tmp_path / "img", 5)
    send(pacs, files)

    port, received, arrived = free_port(), [], threading.Event()

    def on_report(event: Any) -> int:
        received.append((event.assoc.requestor.ae_title, event.event_type, event.event_information))
        arrived.set()
        return 0x0000, None

    listener = AE("COMMITSCU")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listener.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        assert flask_cli(pacs.instance, "ae", "add", "COMMITSCU", "--host", "127.0.0.1", "--port", str(port),
                         "--may", "commitment").returncode == 0
        ae = AE("COMMITSCU")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACSLITE")
        unknown = generate_uid()
        transaction = generate_uid()
        pairs = [(CT_IMAGE, uid_of(f)) for f in files] + [(CT_IMAGE, unknown)]
        status, _ = assoc.send_n_action(commitment_request(transaction, pairs), 1, StorageCommitmentPushModel,
                                        COMMITMENT_INSTANCE)
        assoc.release()  # at once: the report must come on a new association
        assert status.Status == 0x0000
        assert arrived.wait(30), "no report on a new association"
    finally:
        server.shutdown()
    (calling, event_type, info) = received[0]
    assert (calling, event_type, info.TransactionUID) == ("PACSLITE", 2, transaction)
    assert sorted(r.ReferencedSOPInstanceUID for r in info.ReferencedSOPSequence) == sorted(map(uid_of, files))
    assert [(f.ReferencedSOPInstanceUID, f.FailureReason) for f in info.FailedSOPSequence] == [(unknown, 0x0112)]
    wait_for(lambda: pacs.query("SELECT state FROM commitments WHERE transaction_uid = ?", transaction)[0][0]
             == "delivered", "the delivery recorded")
    assert pacs.query("SELECT delivered_on FROM commitments WHERE transaction_uid = ?", transaction)[0][0] == "new"
    audited = pacs.query("SELECT action, detail FROM audit_log WHERE target = ? ORDER BY id", f"commitment:{transaction}")
    assert [a for a, _ in audited] == ["commitment.request", "commitment.report"]
    assert json.loads(audited[0][1])["failed"] == [unknown]


# ---------------------------------------------------------------- refusals, unscheduled steps, "exam done"

def test_mpps_refusals_carry_their_status_and_change_nothing(pacs, tmp_path) -> None:
    reg = pacs.register(patient_id="WF0004", name="赵六", station_ae="CT01", scheduled_date="2026-12-01",
                        scheduled_time="13:00")
    (answer,) = [a for a in worklist(pacs, tmp_path / "wl") if a.PatientID == "WF0004"]
    assoc = associate(pacs)
    before = pacs.query("SELECT COUNT(*) FROM mpps")[0][0]
    assert set_step(assoc, generate_uid(), final("COMPLETED", generate_uid(), [])).Status == 0x0112  # unknown step
    completed_at_once = in_progress(answer)
    completed_at_once.PerformedProcedureStepStatus = "COMPLETED"
    assert create(assoc, completed_at_once)[0] == 0x0106  # a new step must be IN PROGRESS
    no_schedule = in_progress(answer)
    del no_schedule.ScheduledStepAttributesSequence
    assert create(assoc, no_schedule)[0] == 0x0120  # missing attribute
    assert pacs.query("SELECT COUNT(*) FROM mpps")[0][0] == before
    assert status_of(pacs, reg.accession_number) == "scheduled"

    step = in_progress(answer)
    uid = generate_uid()
    assert assoc.send_n_create(step, ModalityPerformedProcedureStep, uid)[0].Status == 0x0000
    assert assoc.send_n_create(step, ModalityPerformedProcedureStep, uid)[0].Status == 0x0111  # duplicate
    bogus = Dataset()
    bogus.PerformedProcedureStepStatus = "FINISHED"
    assert set_step(assoc, uid, bogus).Status == 0x0106
    assert set_step(assoc, uid, final("DISCONTINUED", generate_uid(), [])).Status == 0x0000
    again = set_step(assoc, uid, final("COMPLETED", generate_uid(), []))
    assert (again.Status, again.ErrorID) == (0x0110, 0xA710)  # may no longer be updated
    assert "no longer be updated" in again.ErrorComment
    assoc.release()
    assert pacs.query("SELECT state FROM mpps WHERE sop_instance_uid = ?", uid)[0][0] == "DISCONTINUED"
    assert status_of(pacs, reg.accession_number) == "discontinued"
    assert [a for a in worklist(pacs, tmp_path / "wl2") if a.PatientID == "WF0004"] == []
    assert "may no longer be updated" in "\n".join(_lines(pacs))

    # an AE without the mpps right is not offered the service at all
    ae = AE("NOMPPS")
    ae.add_requested_context(Verification)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(StorageCommitmentPushModel)
    refused = ae.associate("127.0.0.1", pacs.port, ae_title="PACSLITE")
    assert refused.is_established and [str(c.abstract_syntax) for c in refused.accepted_contexts] == [Verification]
    refused.release()
    assert {r[0] for r in pacs.query("SELECT reason FROM refused_contexts WHERE calling_ae = 'NOMPPS'")} == \
        {"not_permitted"}


def test_only_the_modality_that_created_a_step_may_end_it(pacs, tmp_path) -> None:
    """Issue 27, row 2: MOD2 sent N-SET DISCONTINUED on MOD1's step and the exam went to
    discontinued. Now refused 0x0110, audited as denied, the step and the exam unchanged."""
    reg = pacs.register(patient_id="WF0027", name="钱七", station_ae="CT01", scheduled_date="2026-12-01",
                        scheduled_time="14:00")
    (answer,) = [a for a in worklist(pacs, tmp_path / "wl") if a.PatientID == "WF0027"]
    owner = associate(pacs, "CT01")
    status, uid = create(owner, in_progress(answer))
    assert status == 0x0000
    other = associate(pacs, "STORESCU")  # a configured modality with the mpps right, not the step's
    refused = set_step(other, uid, final("DISCONTINUED", generate_uid(), []))
    other.release()
    assert refused.Status == 0x0110 and "created by CT01" in refused.ErrorComment
    assert pacs.query("SELECT state FROM mpps WHERE sop_instance_uid = ?", uid)[0][0] == "IN PROGRESS"
    assert status_of(pacs, reg.accession_number) == "in_progress"
    (denied,) = pacs.query("SELECT actor, outcome, detail FROM audit_log WHERE action = 'mpps.set' AND target = ?",
                           f"mpps:{uid}")
    assert denied[:2] == ("ae:STORESCU", "denied") and json.loads(denied[2])["created_by"] == "CT01"
    assert set_step(owner, uid, final("DISCONTINUED", generate_uid(), [])).Status == 0x0000  # its own: yes
    owner.release()
    assert status_of(pacs, reg.accession_number) == "discontinued"


def _lines(pacs) -> list[str]:
    pacs.server._drain()
    return pacs.server.output


def test_an_unscheduled_step_is_listed_and_linked_by_hand(pacs, tmp_path) -> None:
    """A walk-in scanned without the worklist, and a step naming an exam with another patient ID:
    both kept unlinked, listed for the technologists; linking one moves its exam."""
    reg = pacs.register(patient_id="WF0005", name="孙七", station_ae="CT01", scheduled_date="2026-12-01",
                        scheduled_time="14:00")
    (answer,) = [a for a in worklist(pacs, tmp_path / "wl") if a.PatientID == "WF0005"]
    assoc = associate(pacs)
    walk_in = in_progress(answer)
    walk_in.ScheduledStepAttributesSequence = Sequence([Dataset()])  # unscheduled: an empty item
    walk_in.PatientID = "WALKIN1"
    status, walk_in_uid = create(assoc, walk_in)
    wrong_patient = in_progress(answer)
    wrong_patient.PatientID = "SOMEONE-ELSE"
    assert status == 0x0000 and create(assoc, wrong_patient)[0] == 0x0000
    assert status_of(pacs, reg.accession_number) == "scheduled"  # not moved by a step with another patient ID

    technologist = web_client(pacs, "wf_tech")
    page = technologist.get("/procedure-steps").get_data(as_text=True)
    assert "WALKIN1" in page and "SOMEONE-ELSE" in page
    step_id = pacs.query("SELECT id FROM mpps WHERE sop_instance_uid = ?", walk_in_uid)[0][0]
    token = csrf_token(technologist, "/procedure-steps")
    assert technologist.post(f"/procedure-steps/{step_id}/link",
                             data={"csrf_token": token, "accession_number": "A00000000000"}).status_code == 400
    linked = technologist.post(f"/procedure-steps/{step_id}/link",
                               data={"csrf_token": token, "accession_number": reg.accession_number})
    assert linked.status_code == 302
    assert status_of(pacs, reg.accession_number) == "in_progress"
    assert pacs.query("SELECT linked_by FROM mpps WHERE id = ?", step_id)[0][0] == "wf_tech"
    assert technologist.post(f"/procedure-steps/{step_id}/link", data={
        "csrf_token": token, "accession_number": reg.accession_number}).status_code == 409  # once only
    # the step completes with two images listed, none arrived yet: raised at once, no grace
    assert set_step(assoc, walk_in_uid, final("COMPLETED", generate_uid(), [generate_uid(), generate_uid()])
                    ).Status == 0x0000
    assoc.release()
    assert status_of(pacs, reg.accession_number) == "performed"
    raised = alert(pacs, reg.accession_number)
    assert (raised["state"], raised["expected"], raised["received"]) == ("open", 2, 0)


def test_a_technologist_says_exam_done_with_a_count(pacs, tmp_path) -> None:
    """A modality without MPPS: "Exam done" with 4 images acquired, none received yet → the
    alert at once; the 4 arrive → it clears."""
    reg = pacs.register(patient_id="WF0006", name="周八", station_ae="CT01", scheduled_date="2026-12-01",
                        scheduled_time="15:00")
    technologist = web_client(pacs, "wf_tech")
    page = f"/exams/{reg.accession_number}"
    assert 'id="exam-done"' in technologist.get(page).get_data(as_text=True)
    token = csrf_token(technologist, page)
    bad = technologist.post(f"{page}/done", data={"csrf_token": token, "images_acquired": "four"})
    assert bad.status_code == 400 and status_of(pacs, reg.accession_number) == "scheduled"
    done = technologist.post(f"{page}/done", data={"csrf_token": token, "images_acquired": "4"})
    assert done.status_code == 302 and status_of(pacs, reg.accession_number) == "performed"
    raised = alert(pacs, reg.accession_number)
    assert (raised["state"], raised["expected"], raised["received"], raised["missing"]) == ("open", 4, 0, 4)
    assert "acquired 4 · received 0" in technologist.get(page).get_data(as_text=True)
    (answer,) = [a for a in worklist(pacs, tmp_path / "wl", "ScheduledProcedureStepSequence[0]"
                                     ".ScheduledProcedureStepStartDate=20261201")
                 if a.PatientID == "WF0006"] or [None]
    assert answer is None  # performed: off the worklist
    answer = Dataset()
    answer.StudyInstanceUID, answer.AccessionNumber, answer.PatientID = reg.study_instance_uid, reg.accession_number, \
        "WF0006"
    answer.PatientName, answer.PatientSex, answer.PatientBirthDate = "ZHOU^BA", "M", "19800203"
    _, files = images_for(answer, tmp_path / "img", 4)
    send(pacs, files)
    wait_for(lambda: alert(pacs, reg.accession_number)["state"] == "cleared", "the alert cleared itself")
    audited = pacs.query("SELECT detail FROM audit_log WHERE action = 'exam.done' AND target = ?", f"exam:{reg.accession_number}")
    assert [json.loads(d[0]) for d in audited] == [{"images_acquired": 4}]


def test_orthanc_asks_for_storage_commitment_through_its_rest_api(tmp_path) -> None:
    """Orthanc (Debian's) as the storage commitment SCU: 3 stored images and 1 never sent; its
    report (received on its own DICOM port) lists 3 successes and 1 failure 0x0112 (274)."""
    from tests.test_retrieve import in_namespace
    result = in_namespace(tmp_path, "commitment")
    assert result["answered"], result
    report = result["report"]
    assert (report["Status"], report["RemoteAET"]) == ("Failure", "PACSLITE")
    assert sorted(s["SOPInstanceUID"] for s in report["Success"]) == sorted(result["stored"])
    assert [(f["SOPInstanceUID"], f["FailureReason"]) for f in report["Failures"]] == [(result["unknown"], 0x0112)]
    [(_, state, delivered_on, requested, committed)] = result["kept"]
    assert (state, delivered_on, requested, committed) == ("delivered", "new", 4, 3)


def test_a_report_nobody_takes_is_retried_then_given_up_with_an_alert(app, conn) -> None:
    """The requesting AE is down: the report waits and is tried again (real associations to a
    port nobody listens on), then given up with commitment_failed; a restart resumes what was
    being sent."""
    from pacslite.core import audit
    from pacslite.ris import aes
    from pacslite.pacs import commitment
    from pacslite.dicom import sender
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "DOWNSCU", "host": "127.0.0.1", "port": free_port()})
    kept = commitment.request(conn, audit.Actor("ae:DOWNSCU", "127.0.0.1"), "DOWNSCU", generate_uid(),
                              [(CT_IMAGE, generate_uid())], on_association=False)
    settings = {**app.config, "COMMITMENT_RETRY_FIRST_SECONDS": 3600, "DICOM_NETWORK_TIMEOUT": 5}
    assert commitment.run_due(conn, settings, sender.send_commitment_report) == 1
    row = commitment.get(conn, kept["id"])
    assert (row["state"], row["attempts"]) == ("pending", 1) and "cannot associate" in row["last_error"]
    assert commitment.run_due(conn, settings, sender.send_commitment_report) == 0  # not due for an hour
    with conn:
        conn.execute("UPDATE commitments SET state = 'sending' WHERE id = ?", (kept["id"],))
    assert commitment.recover(conn) == 1  # pacslite stopped while sending: it waits again, due now
    given_up = {**settings, "COMMITMENT_RETRY_HOURS": 0}
    assert commitment.run_due(conn, given_up, sender.send_commitment_report) == 1
    row = commitment.get(conn, kept["id"])
    assert (row["state"], row["attempts"]) == ("failed", 2)
    alert_row = conn.execute("SELECT state, detail FROM alerts WHERE rule = 'commitment_failed'").fetchone()
    assert alert_row["state"] == "open" and json.loads(alert_row["detail"])["calling_ae"] == "DOWNSCU"
    assert [r[0] for r in conn.execute("SELECT outcome FROM audit_log WHERE action LIKE 'commitment.%' ORDER BY id")] \
        == ["success", "failure"]


def test_a_step_or_a_commitment_naming_too_many_instances_is_refused_whole(pacs, tmp_path) -> None:
    """A hostile modality cannot fill the database with one N-SET or one N-ACTION."""
    reg = pacs.register(patient_id="WF0007", name="吴九", station_ae="CT01", scheduled_date="2026-12-01",
                        scheduled_time="16:00")
    (answer,) = [a for a in worklist(pacs, tmp_path / "wl") if a.PatientID == "WF0007"]
    assoc = associate(pacs)
    status, uid = create(assoc, in_progress(answer))
    assert status == 0x0000
    flood = [generate_uid() for _ in range(20001)]
    assert set_step(assoc, uid, final("COMPLETED", generate_uid(), flood)).Status == 0x0106
    status, _ = assoc.send_n_action(commitment_request(generate_uid(), [(CT_IMAGE, u) for u in flood]), 1,
                                    StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    assert status.Status == 0x0213
    assoc.release()
    assert pacs.query("SELECT state, instance_count FROM mpps WHERE sop_instance_uid = ?", uid)[0][:] == \
        ("IN PROGRESS", 0)
    assert pacs.query("SELECT COUNT(*) FROM mpps_instances")[0][0] == \
        pacs.query("SELECT COALESCE(SUM(instance_count), 0) FROM mpps")[0][0]
    assert status_of(pacs, reg.accession_number) == "in_progress"
