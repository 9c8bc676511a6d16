"""Query/Retrieve C-FIND (issue 14) with DCMTK's findscu as the workstation: Patient and Study
Root at every level, names in Chinese and pinyin, the calling AE's character set, only filed
images, released images OFFLINE, the answer limit, and the right to query."""
from __future__ import annotations

from pathlib import Path

import pytest

from pacslite.core import audit
from pacslite.ris import aes
from tests import server as pacs_server
from tests.conftest import flask_cli, wait_for
from tests.dicomkit import make_ct, qr_findscu, store_results, storescu

STATIONS = {"WS_UTF8": "ISO_IR 192", "WS_GB": "GB18030", "WS_LATIN": "ISO_IR 100"}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Two patients with filed studies (张三: CT, 2 images; 李四: MR, 1 image, released), and a
    study quarantined under 张三's patient ID, which must never be found."""
    instance = tmp_path_factory.mktemp("qr")
    for title, charset in STATIONS.items():
        assert flask_cli(instance, "ae", "add", title, "--charset", charset, "--may", "query,retrieve").returncode == 0
    assert flask_cli(instance, "ae", "add", "STORESCU").returncode == 0
    running = pacs_server.Pacs(instance, PACSLITE_QR_MAX_ANSWERS="2")
    work = tmp_path_factory.mktemp("qr-files")
    zhang = running.register(patient_id="QR0001", name="张三", sex="M", birth_date="1980-02-03", modality="CT",
                             procedure="胸部CT平扫", requesting_physician="李医生", station_ae="")
    li = running.register(patient_id="QR0002", name="李四", sex="F", birth_date="1975-06-07", modality="MR",
                          procedure="头颅MR", station_ae="")
    running.studies = {}
    for reg, count, modality, name, sex, birth in ((zhang, 2, "CT", "ZHANG^SAN", "M", "19800203"),
                                                   (li, 1, "MR", "LI^SI", "F", "19750607")):
        files = running.send_series(work / reg.accession_number, count, accession=reg.accession_number,
                                    patient_id=reg.patient_id, name=name, sex=sex, birth_date=birth)
        running.studies[reg.patient_id] = files
    stray = work / "stray.dcm"
    make_ct(stray, accession="NOSUCH01", patient_id="QR0001", name="ZHANG^SAN", sex="M", birth_date="19800203")
    sent = storescu(running.port, [stray])
    assert list(store_results(sent.stdout + sent.stderr).values()) == ["Success"]  # acknowledged, quarantined
    running.stray = stray
    conn = running.conn()
    conn.execute("UPDATE instances SET released_at = '2026-11-01T00:00:00+00:00' WHERE series_ref IN"
                 " (SELECT se.id FROM series se JOIN studies s ON s.id = se.study_ref JOIN exams e ON e.id = s.exam_ref"
                 " WHERE e.accession_number = ?)", (li.accession_number,))
    conn.close()
    running.zhang, running.li = zhang, li
    yield running
    assert running.server.stop() == 0


STUDY_KEYS = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
              "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
              "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
              "NumberOfPatientRelatedStudies", "RetrieveAETitle", "InstanceAvailability"]


def find(pacs, model: str, level: str, tmp_path: Path, *keys: str, aet: str = "WS_UTF8", extra: list[str] = ()):
    given = {k.split("=", 1)[0] for k in keys}
    charset = f"SpecificCharacterSet={STATIONS.get(aet, 'ISO_IR 192')}"  # the query's own encoding (findscu: UTF-8)
    wanted = [charset, f"QueryRetrieveLevel={level}", *keys, *(k for k in extra if k not in given)]
    return qr_findscu(pacs.port, model, wanted, tmp_path / "answers", aet=aet)


def test_a_workstation_finds_a_patient_by_name_in_chinese_or_pinyin(pacs, tmp_path) -> None:
    from pydicom import dcmread
    stray_uid = dcmread(pacs.stray, stop_before_pixels=True).StudyInstanceUID
    for name in ("张*", "ZHANG*", "zhang^san", "Z?ANG^SAN", "张^三"):
        result, answers = find(pacs, "S", "STUDY", tmp_path, f"PatientName={name}", extra=STUDY_KEYS)
        assert result.returncode == 0, result.stderr
        assert [a.AccessionNumber for a in answers] == [pacs.zhang.accession_number], (name, answers)
    [answer] = answers
    assert str(answer.PatientName) == "ZHANG^SAN=张^三" and answer.PatientID == "QR0001"
    assert (answer.PatientBirthDate, answer.PatientSex) == ("19800203", "M")
    assert answer.ModalitiesInStudy == "CT" and int(answer.NumberOfStudyRelatedInstances) == 2
    assert int(answer.NumberOfStudyRelatedSeries) == 1 and int(answer.NumberOfPatientRelatedStudies) == 1
    assert answer.StudyDescription == "e+1"  # as the modality described it (the registered procedure if it did not)
    assert str(answer.ReferringPhysicianName) == "LI^YISHENG=李^医生"
    assert (answer.RetrieveAETitle, answer.InstanceAvailability) == ("PACSLITE", "ONLINE")
    assert answer.StudyInstanceUID != stray_uid  # the quarantined study under the same patient ID


def test_answers_come_in_the_calling_stations_character_set(pacs, tmp_path) -> None:
    # (findscu writes the -k values as typed, in UTF-8: these stations query by patient ID)
    _, [gb] = find(pacs, "S", "STUDY", tmp_path, "PatientID=QR0001", "PatientName", "ReferringPhysicianName",
                   aet="WS_GB")
    assert gb.SpecificCharacterSet == "GB18030" and str(gb.PatientName) == "ZHANG^SAN=张^三"
    assert str(gb.ReferringPhysicianName) == "LI^YISHENG=李^医生"
    raw = gb["PatientName"].value.original_string
    assert "张".encode("gb18030") in raw and "张".encode("utf-8") not in raw
    _, [latin] = find(pacs, "S", "STUDY", tmp_path, "PatientName=ZHANG*", "ReferringPhysicianName",
                      aet="WS_LATIN")
    assert latin.SpecificCharacterSet == "ISO_IR 100" and str(latin.PatientName) == "ZHANG^SAN"
    assert str(latin.ReferringPhysicianName) == "LI^YISHENG"


def test_every_level_of_both_roots(pacs, tmp_path) -> None:
    _, [patient] = find(pacs, "P", "PATIENT", tmp_path, "PatientID=QR0001", "PatientName",
                        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances")
    assert str(patient.PatientName) == "ZHANG^SAN=张^三" and int(patient.NumberOfPatientRelatedStudies) == 1
    assert int(patient.NumberOfPatientRelatedInstances) == 2  # the quarantined image is not his
    _, [study] = find(pacs, "P", "STUDY", tmp_path, "PatientID=QR0001", "StudyInstanceUID", "AccessionNumber")
    assert study.AccessionNumber == pacs.zhang.accession_number
    _, [series] = find(pacs, "S", "SERIES", tmp_path, f"StudyInstanceUID={study.StudyInstanceUID}",
                       "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances", "SeriesNumber")
    assert series.Modality == "CT" and int(series.NumberOfSeriesRelatedInstances) == 2
    _, images = find(pacs, "P", "IMAGE", tmp_path, "PatientID=QR0001", f"StudyInstanceUID={study.StudyInstanceUID}",
                     f"SeriesInstanceUID={series.SeriesInstanceUID}", "SOPInstanceUID", "SOPClassUID",
                     "InstanceNumber", "InstanceAvailability")
    from pydicom import dcmread
    sent = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in pacs.studies["QR0001"]}
    assert {i.SOPInstanceUID for i in images} == sent and {i.InstanceNumber for i in images} == {1, 2}
    assert {i.SOPClassUID for i in images} == {"1.2.840.10008.5.1.4.1.1.2"}
    # a list of UIDs, and a date range
    _, listed = find(pacs, "S", "IMAGE", tmp_path, "SOPInstanceUID=" + "\\".join(sorted(sent)), "SOPInstanceUID")
    assert {i.SOPInstanceUID for i in listed} == sent
    _, none = find(pacs, "S", "STUDY", tmp_path, "StudyDate=19000101-19001231", "StudyInstanceUID")
    assert none == []


def test_quarantined_images_are_never_found_and_released_ones_are_offline(pacs, tmp_path) -> None:
    from pydicom import dcmread
    stray = dcmread(pacs.stray, stop_before_pixels=True)
    for level, key in (("STUDY", f"StudyInstanceUID={stray.StudyInstanceUID}"),
                       ("IMAGE", f"SOPInstanceUID={stray.SOPInstanceUID}")):
        result, answers = find(pacs, "S", level, tmp_path, key, "PatientID")
        assert result.returncode == 0 and answers == [], (level, answers)
    assert pacs.query("SELECT quarantine_reason FROM studies WHERE study_instance_uid = ?",
                      stray.StudyInstanceUID)[0][0] == "unknown_accession"
    _, [released] = find(pacs, "S", "STUDY", tmp_path, "PatientID=QR0002", "InstanceAvailability",
                         "StudyInstanceUID")
    assert released.InstanceAvailability == "OFFLINE"
    # a retrieve of it fails with a clear status (0xA702), and says why in its Error Comment
    got = getscu(pacs, "WS_UTF8", tmp_path / "offline", "QueryRetrieveLevel=STUDY",
                 f"StudyInstanceUID={released.StudyInstanceUID}")
    assert not any((tmp_path / "offline").iterdir())
    assert "Received C-GET Response (Refused: OutOfResourcesSubOperations)" in got.stderr, got.stderr[-1500:]
    from pydicom.dataset import Dataset
    from pynetdicom import AE, build_role
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet
    ae = AE(ae_title="WS_UTF8")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACSLITE", ext_neg=[build_role(CTImageStorage, scp_role=True)])
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", released.StudyInstanceUID
    try:
        [(final, _)] = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    assert final.Status == 0xA702 and final.ErrorComment == "offline: restore it from its archive volume"


def test_a_broad_query_gets_the_first_answers_and_a_warning(pacs, tmp_path) -> None:
    third = pacs.register(patient_id="QR0003", name="王五", station_ae="")
    pacs.send_series(tmp_path / "third", 1, accession=third.accession_number, patient_id="QR0003",
                     name="WANG^WU", sex="M", birth_date="19800203")
    result, answers = find(pacs, "S", "STUDY", tmp_path, "StudyInstanceUID")  # every study: 3 > QR_MAX_ANSWERS
    assert len(answers) == 2
    assert "Matching reached response limit" in result.stderr or "0xb001" in result.stderr.lower(), result.stderr


def test_only_an_ae_with_the_query_right_may_query(pacs, tmp_path) -> None:
    refused, answers = qr_findscu(pacs.port, "S", ["QueryRetrieveLevel=STUDY", "PatientName=*"], tmp_path / "a",
                                  aet="STORESCU")
    assert refused.returncode != 0 and answers == [] and "No Acceptable Presentation Contexts" in refused.stderr
    recorded = ("SELECT reason FROM refused_contexts WHERE calling_ae = 'STORESCU'"
                " AND abstract_syntax = '1.2.840.10008.5.1.4.1.2.2.1'")
    wait_for(lambda: [r[0] for r in pacs.query(recorded)] == ["not_permitted"], "the refusal is recorded as such")
    conn = pacs.conn()
    try:
        aes.update_ae(conn, audit.SYSTEM, "STORESCU", {"rights": "store,query"})
    finally:
        conn.close()
    allowed, answers = qr_findscu(pacs.port, "S", ["QueryRetrieveLevel=STUDY", "PatientID=QR0001"], tmp_path / "b",
                                  aet="STORESCU")
    assert allowed.returncode == 0 and len(answers) == 1


def getscu(pacs, aet: str, directory: Path, *keys: str):
    from tests.dicomkit import run
    directory.mkdir(parents=True, exist_ok=True)
    args = ["getscu", "-v", "-S", "-aet", aet, "-aec", "PACSLITE", "-od", str(directory)]
    for key in keys:
        args += ["-k", key]
    return run([*args, "127.0.0.1", str(pacs.port)])


def test_a_workstation_gets_a_study_byte_identical_over_its_own_association(pacs, tmp_path) -> None:
    """C-GET (issue 14): the images come back on the requesting association, as stored. (getscu
    writes what it received in its own encoding, having no bit-preserving mode: the values are
    compared here; the byte-for-byte comparison is C-MOVE's, which sends the same way.)"""
    from pydicom import dcmread

    from pacslite.core import storage
    study = pacs.query("SELECT s.study_instance_uid FROM studies s JOIN exams e ON e.id = s.exam_ref"
                       " WHERE e.accession_number = ?", pacs.zhang.accession_number)[0][0]
    got = getscu(pacs, "WS_UTF8", tmp_path / "got", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    assert got.returncode == 0, got.stderr[-2000:]
    received = {ds.SOPInstanceUID: ds for ds in map(dcmread, (tmp_path / "got").iterdir())}
    stored = {ds.SOPInstanceUID: ds for ds in (dcmread(storage.resolve(pacs.settings["STORAGE_DIR"], r[0])) for r in
              pacs.query("SELECT storage_path FROM instances i JOIN series se ON se.id = i.series_ref JOIN studies s"
                         " ON s.id = se.study_ref WHERE s.study_instance_uid = ?", study))}
    assert len(stored) == 2 and received.keys() == stored.keys()
    for uid, ds in received.items():
        assert list(ds) == list(stored[uid]), uid  # every element, its value included
    audited = pacs.query("SELECT detail FROM audit_log WHERE action = 'image.transfer' AND target = ?",
                         f"study:{study}")
    assert any('"how": "C-GET"' in row[0] and '"images": 2' in row[0] for row in audited)

    # the quarantined study is not retrieved, whoever asks
    stray = dcmread(pacs.stray, stop_before_pixels=True).StudyInstanceUID
    none = getscu(pacs, "WS_UTF8", tmp_path / "none", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={stray}")
    assert none.returncode == 0 and not any((tmp_path / "none").iterdir())
    # a modality may not retrieve, and a workstation may not store
    refused = getscu(pacs, "STORESCU", tmp_path / "refused", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    assert refused.returncode != 0 and not any((tmp_path / "refused").iterdir())
    stored_back = storescu(pacs.port, [pacs.stray], aet="WS_UTF8")
    assert list(store_results(stored_back.stdout + stored_back.stderr).values()) != ["Success"]


@pytest.mark.parametrize("level, keys", [
    ("PATIENT", {"PatientID": "*"}),
    ("PATIENT", {"PatientID": "QR000?"}),
    ("STUDY", {"PatientID": "QR0001", "StudyInstanceUID": "*"}),
    ("STUDY", {"PatientID": "QR0001", "StudyInstanceUID": "1.2-1.3"}),
])
def test_a_retrieve_with_a_wildcard_or_range_in_a_unique_key_is_refused(pacs, level, keys) -> None:
    """Issue 27, row 5: PATIENT level, PatientID ``*`` sent every patient's images in one
    request. A unique key names objects; a wildcard or a range is refused 0xA900, nothing sent."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE, build_role
    from pynetdicom.sop_class import (CTImageStorage,  # type: ignore[attr-defined]
                                      PatientRootQueryRetrieveInformationModelGet)
    received: list[str] = []
    ae = AE("WS_UTF8")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    from pynetdicom import evt

    def on_store(event):
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACSLITE",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)], evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    statuses = [int(status.Status) for status, _ in assoc.send_c_get(identifier, PatientRootQueryRetrieveInformationModelGet)]
    assoc.release()
    assert statuses == [0xA900] and received == []
