"""The DICOM services of the real process (app.py), driven by DCMTK's echoscu, findscu and storescu."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from pacslite.core import audit, storage
from pacslite.ris import patients, users
from pacslite.pacs import filing, refiling, wellformed
from pacslite import create_app
from pacslite.core.uids import is_uid
from pacslite.pacs.index import Header
from tests import server as pacs_server
from tests.conftest import csrf_token, flask_cli, login
from tests.dicomkit import (CT_SMALL, TEST_FILES, dataset_bytes, echoscu, findscu, make_ct, propose_option,
                            store_results, storescu, wire_bytes)

CHARSET_FILES = TEST_FILES.parent / "charset_files"
CALLERS = {"STORESCU": "ISO_IR 192", "FINDSCU": "ISO_IR 192", "GBSCU": "GB18030", "LATINSCU": "ISO_IR 100",
           "IR58SCU": "ISO 2022 IR 58"}
#: Stations with their modality: a query by one of them gets the exams of its modality
#: scheduled on no particular station (MR02 has none set: only exams scheduled on it).
STATIONS = {"CT09": "CT", "CT01": "CT", "MR01": "MR", "MR02": ""}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> pacs_server.Pacs:
    instance = tmp_path_factory.mktemp("pacs")
    for title, charset in CALLERS.items():
        added = flask_cli(instance, "ae", "add", title, "--host", "127.0.0.1", "--charset", charset)
        assert added.returncode == 0 and f"added modality {title}" in added.stdout, added.stderr
    for title, modality in STATIONS.items():
        added = flask_cli(instance, "ae", "add", title, "--modality", modality, "--may", "worklist")
        assert added.returncode == 0, added.stderr
    running = pacs_server.Pacs(instance)
    yield running
    assert running.server.stop() == 0


def test_echo_and_refused_associations(pacs, tmp_path) -> None:
    assert echoscu(pacs.port, aet="STORESCU").returncode == 0
    wrong_called = echoscu(pacs.port, aet="STORESCU", aec="OTHERPACS")
    unknown = echoscu(pacs.port, aet="STRANGER")
    assert wrong_called.returncode != 0 and "Called AE Title Not Recognized" in wrong_called.stderr
    assert unknown.returncode != 0 and "Calling AE Title Not Recognized" in unknown.stderr
    rows = {(r["calling_ae"], r["reason"]) for r in pacs.query("SELECT * FROM association_rejections")}
    assert {("STORESCU", "wrong_called_ae"), ("STRANGER", "unknown_calling_ae")} <= rows
    # audited, at most once a minute per address: the second refusal is counted, not audited
    assert pacs.query("SELECT COUNT(*) FROM audit_log WHERE action = 'dicom.associate' AND outcome = 'denied'"
                      " AND address = '127.0.0.1'")[0][0] == 1

    # the admin page lists the attempt; one click adds the caller, which is then accepted
    app = create_app({"INSTANCE_DIR": str(pacs.instance), "DEFAULT_LANGUAGE": "en"})
    conn = pacs.conn()
    users.create(conn, audit.SYSTEM, {"username": "dicomadmin", "password": "Secret-pass-1", "roles": ["admin"]})
    conn.close()
    client = app.test_client()
    login(client, "dicomadmin", "Secret-pass-1")
    page = client.get("/admin/modalities").get_data(as_text=True)
    assert "STRANGER" in page and "Add as modality" in page
    added = client.post("/admin/modalities/new", data={"csrf_token": csrf_token(client, "/admin/modalities"),
                                                       "ae_title": "STRANGER", "host": "127.0.0.1", "port": "104"})
    assert added.status_code == 302
    assert echoscu(pacs.port, aet="STRANGER").returncode == 0


def _worklist_keys(*extra: str) -> list[str]:
    return ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "RequestedProcedureID",
            "RequestedProcedureDescription", "StudyInstanceUID", "ReferringPhysicianName",
            "ScheduledProcedureStepSequence[0].Modality", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription", *extra]


def test_worklist_then_store_then_filed(pacs, tmp_path) -> None:
    """The whole modality round: query the worklist, take its values, send, see the study filed."""
    reg = pacs.register(patient_id="WL0001", name="张三", station_ae="", scheduled_date="2031-05-06",
                        scheduled_time="09:30", procedure="胸部CT平扫", requesting_physician="李医生")
    pacs.register(patient_id="WL0002", name="单田芳", sex="F", modality="MR", scheduled_date="2031-05-07",
                  scheduled_time="10:00")
    result, answers = findscu(pacs.port, _worklist_keys("ScheduledProcedureStepSequence[0].Modality=CT",
                                                        "ScheduledProcedureStepSequence[0]"
                                                        ".ScheduledProcedureStepStartDate=20310506"), tmp_path / "wl")
    assert result.returncode == 0, result.stderr
    assert [a.AccessionNumber for a in answers] == [reg.accession_number]
    answer = answers[0]
    assert str(answer.PatientName) == "ZHANG^SAN=张^三"
    assert (answer.PatientID, answer.PatientSex, answer.PatientBirthDate) == ("WL0001", "M", "19800203")
    assert answer.StudyInstanceUID == reg.study_instance_uid
    assert answer.RequestedProcedureID == reg.accession_number
    assert answer.RequestedProcedureDescription == "胸部CT平扫"
    assert str(answer.ReferringPhysicianName) == "LI^YISHENG=李^医生"
    step = answer.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == \
        ("CT", "20310506", "093000")
    assert step.ScheduledProcedureStepID == reg.accession_number

    # the modality sends three images carrying what the worklist gave it
    files = []
    series = generate_uid()
    for n in range(3):
        path = tmp_path / f"img{n}.dcm"
        make_ct(path, study_uid=answer.StudyInstanceUID, series_uid=series, accession=answer.AccessionNumber,
                patient_id=answer.PatientID, name=str(answer.PatientName), sex=answer.PatientSex,
                birth_date=answer.PatientBirthDate, instance_number=n + 1)
        files.append(path)
    sent = storescu(pacs.port, files)
    assert list(store_results(sent.stdout + sent.stderr).values()) == ["Success"] * 3, sent.stderr

    # filed as soon as storescu has its answers: the exam, the API and the exam page say so
    exam = pacs.query("SELECT status, series_count, instance_count FROM exams WHERE accession_number = ?",
                      reg.accession_number)[0]
    assert tuple(exam) == ("in_progress", 1, 3)


@pytest.mark.parametrize("keys, expected", [
    (["PatientName=ZHANG*"], {"MW0001"}),
    (["PatientName=zhang^s?n"], {"MW0001"}),
    (["SpecificCharacterSet=ISO_IR 192", "PatientName=张*"], {"MW0001"}),
    (["PatientName=SHAN^TIANFANG"], {"MW0002"}),
    (["PatientID=MW0002"], {"MW0002"}),
    (["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20320101-20320102"],
     {"MW0001", "MW0002", "MW0004"}),
    (["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=-20320101"], {"MW0001"}),
    (["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20320102-"], {"MW0002", "MW0003", "MW0004"}),
    (["ScheduledProcedureStepSequence[0].Modality=MR"], {"MW0002", "MW0004"}),
    # a station gets what is scheduled on it, and what is scheduled nowhere for its modality only
    (["ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR01"], {"MW0002", "MW0004"}),
    (["ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT09"], {"MW0001"}),
    (["ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR02"], set()),
    (["ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR*"], {"MW0002", "MW0004"}),
    (["ScheduledProcedureStepSequence[0].ScheduledStationAETitle=XA01"], set()),
    # name component groups must all match
    (["SpecificCharacterSet=ISO_IR 192", "PatientName=ZHANG*=张*"], {"MW0001"}),
    (["SpecificCharacterSet=ISO_IR 192", "PatientName=ZHANG*=单*"], set()),
    (["SpecificCharacterSet=ISO_IR 192", "PatientName=SHAN*=单*"], {"MW0002"}),
])
def test_worklist_matching(pacs, tmp_path, keys, expected) -> None:
    if not pacs.query("SELECT 1 FROM patients WHERE patient_id = 'MW0001'"):
        pacs.register(patient_id="MW0001", name="张三", scheduled_date="2032-01-01", scheduled_time="08:00", station_ae="")
        pacs.register(patient_id="MW0002", name="单田芳", sex="F", modality="MR", scheduled_date="2032-01-02",
                      scheduled_time="08:00", station_ae="MR01")
        cancelled = pacs.register(patient_id="MW0003", name="王五", scheduled_date="2032-01-03", scheduled_time="08:00",
                                  station_ae="CT01")
        pacs.register(patient_id="MW0003", name="王五", scheduled_date="2032-01-04", scheduled_time="08:00",
                      station_ae="CT01")
        pacs.register(patient_id="MW0004", name="赵六", modality="MR", scheduled_date="2032-01-02",
                      scheduled_time="09:00", station_ae="")
        conn = pacs.conn()
        patients.cancel_exam(conn, audit.SYSTEM, cancelled.accession_number, {"reason": "not performed"})
        conn.close()
    date_key = [] if any("StartDate" in k for k in keys) else [
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20320101-20320104"]
    result, answers = findscu(pacs.port, _worklist_keys(*keys, *date_key), tmp_path / "q")
    assert result.returncode == 0, result.stderr
    # each matching exam once; MW0003's cancelled exam is never offered, its open one is
    # (other tests' exams, scheduled in other years, may match the open-ended ranges)
    assert sorted(a.PatientID for a in answers if a.PatientID.startswith("MW")) == sorted(expected)


@pytest.mark.parametrize("date", ["2032", "20321301", "20320101-2032", "yesterday"])
def test_a_malformed_worklist_date_is_refused(pacs, tmp_path, date) -> None:
    result, answers = findscu(pacs.port, _worklist_keys(
        f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={date}"), tmp_path / "bad")
    assert answers == []
    assert "Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in result.stderr, result.stderr  # 0xA900
    assert echoscu(pacs.port, aet="FINDSCU").returncode == 0


@pytest.mark.parametrize("caller, charset, encoded", [
    ("GBSCU", "GB18030", "张^三".encode("gb18030")),
    ("FINDSCU", "ISO_IR 192", "张^三".encode("utf-8")),
    # GB2312 with code extensions: designated (ESC $ ) A) again after the ^ (PS3.5 6.1.2.5.3)
    ("IR58SCU", ["", "ISO 2022 IR 58"], b"\x1b$)A" + "张".encode("gb2312") + b"^\x1b$)A" + "三".encode("gb2312")),
    ("LATINSCU", "ISO_IR 100", None),
])
def test_worklist_answers_in_the_modality_charset(pacs, tmp_path, caller, charset, encoded) -> None:
    reg = pacs.register(patient_id=f"CS{caller}", name="张三", scheduled_date="2033-03-03", scheduled_time="08:00",
                        procedure="胸部CT")
    result, answers = findscu(pacs.port, _worklist_keys(f"AccessionNumber={reg.accession_number}"),
                              tmp_path / caller, aet=caller)
    assert result.returncode == 0, result.stderr
    (answer,) = answers
    assert answer.SpecificCharacterSet == charset
    raw = next(tmp_path.joinpath(caller).glob("rsp*.dcm")).read_bytes()
    if encoded is None:
        assert str(answer.PatientName) == "ZHANG^SAN"
        assert str(answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription) == "XIONG BU CT"
    else:
        assert encoded in raw
        assert str(answer.PatientName) == "ZHANG^SAN=张^三"
        assert str(answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription) == "胸部CT"


def test_a_worklist_query_in_gb2312_with_code_extensions_is_decoded(pacs, tmp_path) -> None:
    """An older console asks for 张* in ISO 2022 IR 58: the escape sequence is not part of the name."""
    reg = pacs.register(patient_id="IR58Q", name="张三", scheduled_date="2033-04-04", scheduled_time="08:00")
    pacs.register(patient_id="IR58R", name="李四", scheduled_date="2033-04-04", scheduled_time="09:00")
    name = os.fsdecode(b"=\x1b$)A" + "张".encode("gb2312") + b"*")  # the ideographic group only
    result, answers = findscu(pacs.port, _worklist_keys(
        "SpecificCharacterSet=\\ISO 2022 IR 58", f"PatientName={name}",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20330404"), tmp_path / "ir58",
        aet="IR58SCU")
    assert result.returncode == 0, result.stderr
    assert [a.AccessionNumber for a in answers] == [reg.accession_number]


def test_a_typo_in_the_accession_number_lands_in_quarantine(pacs, tmp_path) -> None:
    reg = pacs.register(patient_id="TY0001", name="王五", sex="M")
    acc = reg.accession_number
    typo = acc[:-3] + str((int(acc[-3]) + 1) % 10) + acc[-2:]  # one digit typed wrong at the console
    path = tmp_path / "typo.dcm"
    make_ct(path, accession=typo, patient_id="TY0001", name="WANG^WU", sex="M")
    sent = storescu(pacs.port, [path])
    assert list(store_results(sent.stdout + sent.stderr).values()) == ["Success"]
    items = pacs.api("/api/v1/quarantine", pacs.token("tech_api", "technologist"))["items"]
    mine = [i for i in items if i["accession_number"] == typo]
    assert [(i["reason"], i["calling_ae"], i["patient_id"], i["instances"]) for i in mine] == \
        [("unknown_accession", "STORESCU", "TY0001", 1)]
    assert pacs.query("SELECT status FROM exams WHERE accession_number = ?", reg.accession_number)[0][0] == "scheduled"


def _valid_storage_instance(path: Path) -> bool:
    """pacslite's own rule: a readable file whose identifying UIDs are valid."""
    try:
        header: Header = filing.read_header(path)
    except filing.IngestError:
        return False
    return all(is_uid(v) for v in (header.sop_class_uid, header.sop_instance_uid, header.study_instance_uid,
                                   header.series_instance_uid))


def _malformed(path: Path) -> bool:
    try:
        wellformed.check_file(path)
    except wellformed.Malformed:
        return True
    return False


def _bundled_storage_files() -> list[Path]:
    from pynetdicom.sop_class import _STORAGE_CLASSES  # type: ignore[attr-defined]
    storage_classes = set(_STORAGE_CLASSES.values())
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(p for p in TEST_FILES.parent.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")):
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) and ds.get("SOPClassUID") in storage_classes:
                found.append(path)
    return found


def test_every_bundled_storage_file_is_stored_and_indexed(pacs, tmp_path) -> None:
    """Each bundled file that DCMTK can send is stored byte for byte as it travelled: compared
    with what DCMTK's storescp, in bit-preserving mode, writes for the same send; unless the
    same image was stored already in another encoding (then it is a duplicate)."""
    files = _bundled_storage_files()
    assert len(files) > 100
    results = {}
    for path in files:  # one association each: a file DCMTK cannot send must not stop the others
        sent = storescu(pacs.port, [path], aet="STORESCU", extra=propose_option(path))
        results.update(store_results(sent.stdout + sent.stderr))
    answered = {Path(p): r for p, r in results.items() if r != "send failed"}
    # DCMTK itself refuses to read a few deliberately broken files (truncated, odd lengths)
    assert len(answered) >= 0.9 * len(files), f"DCMTK could send only {len(answered)} of {len(files)}"
    refused = {p for p, r in answered.items() if r != "Success"}
    invalid = {p for p in answered if not _valid_storage_instance(p)}
    assert invalid <= refused
    # refused besides: files that do not parse to their end (pydicom cannot decode their pixels)
    assert refused - invalid == {p for p in answered.keys() - invalid if _malformed(p)}, refused - invalid
    store = pacs.settings["STORAGE_DIR"]
    conn = pacs.conn()
    try:
        for path in sorted(answered.keys() - refused):
            sop = dcmread(path, stop_before_pixels=True).SOPInstanceUID
            rows = conn.execute("SELECT storage_path, sha256 FROM instances WHERE sop_instance_uid = ? UNION ALL"
                                " SELECT storage_path, sha256 FROM instance_conflicts WHERE sop_instance_uid = ?",
                                (sop, sop)).fetchall()
            assert rows, f"{path.name} is not in the index"
            wire: dict[str, bytes | None] = {}  # several files share a SOP Instance UID: one row is this file's
            matching = []
            for row in rows:
                stored = storage.resolve(store, row["storage_path"])
                syntax = dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID
                if syntax not in wire:
                    wire[syntax] = wire_bytes(path, syntax, tmp_path / "wire", propose_option(path))
                if dataset_bytes(stored) == wire[syntax]:
                    matching.append((stored, row["sha256"]))
            if not matching:  # the same image in another encoding (pydicom ships several): kept once
                assert any(filing.same_content(storage.resolve(store, row["storage_path"]), path) for row in rows), \
                    f"{path.name} is not stored as it was sent"
            assert all(storage.sha256_file(stored)[1] == sha for stored, sha in matching)
    finally:
        conn.close()
    assert echoscu(pacs.port, aet="STORESCU").returncode == 0


def test_names_in_every_character_set_are_decoded(pacs) -> None:
    files = [p for p in sorted(CHARSET_FILES.glob("chr*.dcm")) if "SQEncoding" not in p.name]  # those are no images
    assert len(files) >= 10
    for path in files:
        sent = storescu(pacs.port, [path])
        assert list(store_results(sent.stdout + sent.stderr).values()) == ["Success"], (path.name, sent.stderr)
        ds = dcmread(path)
        stored = pacs.query("SELECT patient_name FROM studies WHERE study_instance_uid = ?", ds.StudyInstanceUID)
        assert stored and stored[0][0] == str(ds.PatientName), path.name


def test_a_malformed_dataset_is_refused_and_the_server_keeps_serving(pacs, tmp_path) -> None:
    """A valid file meta, then bytes that are not a dataset, streamed as they are by pynetdicom."""
    from pynetdicom import _config
    path = tmp_path / "malformed.dcm"
    path.write_bytes(CT_SMALL.read_bytes()[:-len(dataset_bytes(CT_SMALL))] + bytes(range(256)) * 8)
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACSLITE")
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    assert status.Status in (filing.CANNOT_UNDERSTAND, filing.DATA_SET_MISMATCH), hex(status.Status)
    sop = dcmread(CT_SMALL, stop_before_pixels=True).SOPInstanceUID
    assert not pacs.query("SELECT 1 FROM instances WHERE sop_instance_uid = ? AND calling_ae = 'STORESCU'"
                          " AND size = ?", sop, path.stat().st_size)
    assert echoscu(pacs.port, aet="STORESCU").returncode == 0


def test_the_header_taken_from_the_whole_file_walk_is_the_header_pydicom_reads() -> None:
    """ingest takes the header from wellformed's walk (one pass); it must say what pydicom's
    own reading of the file says, for every bundled storage file either can read."""
    compared = 0
    for path in _bundled_storage_files():
        try:
            walked = filing.check_whole(path)
        except filing.IngestError:
            continue  # not whole (or no preamble): refused before the header matters
        assert walked == filing.read_header(path), path
        compared += 1
    assert compared > 100


def test_the_worklist_log_tells_the_quarantine_which_exam_a_console_picked(pacs, tmp_path) -> None:
    """(Last in the module: its open exams would answer other tests' station queries.)
    A console can only have picked what its worklist offered: CT08's query is logged, and
    its hand-typed study (no accession) ranks the exam it was offered above the same patient's
    CT booked on CT01, which the ranking would otherwise put first (scheduled earlier)."""
    added = flask_cli(pacs.instance, "ae", "add", "CT08", "--host", "127.0.0.1", "--modality", "CT")
    assert added.returncode == 0, added.stderr
    # A name and birth date no other test in this module uses: other 王五 exams would be candidates too.
    booked = pacs.register(patient_id="WL0008", name="钱八", birth_date="19770417", station_ae="CT01",
                           scheduled_date="2031-07-01", scheduled_time="09:00")
    offered = pacs.register(patient_id="WL0008", name="钱八", birth_date="19770417", station_ae="",
                            scheduled_date="2031-07-01", scheduled_time="10:00")
    result, answers = findscu(pacs.port, _worklist_keys(
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT08",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20310701"), tmp_path / "wl", aet="CT08")
    assert result.returncode == 0, result.stderr
    assert [a.AccessionNumber for a in answers] == [offered.accession_number]
    assert [tuple(row) for row in pacs.query(
        "SELECT e.accession_number FROM worklist_offers o JOIN exams e ON e.id = o.exam_ref"
        " WHERE o.calling_ae = 'CT08'")] == [(offered.accession_number,)]

    path = tmp_path / "typed.dcm"
    study_uid = generate_uid()
    make_ct(path, study_uid=study_uid, patient_id="WL0008", name="QIAN^BA", sex="M", birth_date="19770417")
    sent = storescu(pacs.port, [path], aet="CT08")
    assert list(store_results(sent.stdout + sent.stderr).values()) == ["Success"], sent.stderr
    conn = pacs.conn()
    study = conn.execute("SELECT * FROM studies WHERE study_instance_uid = ?", (study_uid,)).fetchone()
    assert study["quarantine_reason"] == "no_accession"
    ranked = refiling.candidates(conn, study, pacs.settings["TIMEZONE"])
    assert [c.exam["accession_number"] for c in ranked] == [offered.accession_number, booked.accession_number]
    assert "offered_to_caller" in ranked[0].reasons and "not_offered_to_caller" in ranked[1].against
