"""HL7 v2 over MLLP against the real process: the test HIS is python-hl7's MLLP client, and what
pacslite answers is read by an independent parser (hl7apy)."""
from __future__ import annotations

import json
import socket
import time

import pytest

from tests import hl7kit, server as pacs_server
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from pacslite.core import audit, storage
from pacslite.pacs import merging
from pacslite.ris import orders
from tests.conftest import flask_cli, wait_for
from tests.dicomkit import findscu, qr_findscu
from tests.hl7kit import ack_code, ack_of, adt, orm, pid, send

SENDERS = {"HIS": {"hosts": ["127.0.0.1"]}, "HISGB": {"hosts": ["127.0.0.1"], "charset": "GB18030"},
           "ELSEWHERE": {"hosts": ["10.9.9.9"]}}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> pacs_server.Pacs:
    instance = tmp_path_factory.mktemp("hl7")
    added = flask_cli(instance, "ae", "add", "CTHL7", "--host", "127.0.0.1", "--modality", "CT", "--may", "worklist")
    assert added.returncode == 0, added.stderr
    assert flask_cli(instance, "ae", "add", "STORESCU").returncode == 0
    assert flask_cli(instance, "ae", "add", "WORKSTATION", "--may", "query,retrieve").returncode == 0
    running = pacs_server.Pacs(instance, PACSLITE_HL7_SENDERS=json.dumps(SENDERS), PACSLITE_HL7_NETWORK_TIMEOUT="3",
                               PACSLITE_HL7_MAX_MESSAGE_BYTES="65536", PACSLITE_HL7_MAX_CONNECTIONS_PER_ADDRESS="3")
    assert running.hl7_port > 0, running.server.output
    yield running
    assert running.server.stop() == 0


def patient(pacs, patient_id: str):
    rows = pacs.query("SELECT * FROM patients WHERE patient_id = ?", patient_id)
    return rows[0] if rows else None


def exam_of_order(pacs, placer: str):
    rows = pacs.query("SELECT * FROM exams WHERE placer_order_number = ?", placer)
    return rows[0] if rows else None


def counts(pacs) -> tuple:
    return tuple(pacs.query(f"SELECT COUNT(*) FROM {table}")[0][0] for table in ("patients", "exams", "audit_log"))


# ---------------------------------------------------------------- patients

@pytest.mark.parametrize("sender, encoding, declared", [("HIS", "utf-8", "UNICODE UTF-8"),
                                                         ("HISGB", "gb18030", "GB 18030-2000"),
                                                         ("HISGB", "gb18030", "")])
def test_a_registration_creates_the_patient_with_the_chinese_name_intact(pacs, sender, encoding, declared) -> None:
    """ADT^A04 in UTF-8 or GB 18030 (declared in MSH-18, or the sender's configured default): the
    patient is created with the name as the HIS wrote it; the ACK is AA, in the message's
    character set, and readable by hl7apy."""
    patient_id = f"H{encoding[:2].upper()}{len(declared):02d}"
    message = adt("A04", pid(patient_id, "欧阳娜娜", "19900307", "F", national_id="110101199003078515"),
                  sender=sender, charset=declared)
    answer = send(pacs.hl7_port, message, encoding)
    assert ack_code(answer, encoding) == "AA"
    assert ack_of(answer, encoding).msh.msh_18.value == declared
    assert ack_of(answer, encoding).msh.msh_7.value.endswith("+0800")  # the department's time (TIMEZONE)
    row = patient(pacs, patient_id)
    assert (row["name"], row["sex"], row["birth_date"], row["national_id"]) == (
        "欧阳娜娜", "F", "1990-03-07", "110101199003078515")
    kept = pacs.query("SELECT outcome, charset, raw FROM hl7_messages WHERE patient_id = ?", patient_id)
    assert [(r["outcome"], r["charset"]) for r in kept] == [("AA", encoding)]
    assert bytes(kept[0]["raw"]) == message.encode(encoding)


def test_an_update_changes_what_it_carries_clears_what_is_null_and_audits_before_and_after(pacs) -> None:
    """A08: an absent field changes nothing, "" clears it; a differing name is audited before → after."""
    assert ack_code(send(pacs.hl7_port, adt("A04", pid("HU0001", "王小明", "19700101", "M", phone="13900000001")))) == "AA"
    update = "\r".join([hl7kit.msh("ADT^A08^ADT_A01"), "EVN|A08", 'PID|1||HU0001^^^HOSP^PI||王晓明||||||||""'])
    assert ack_code(send(pacs.hl7_port, update)) == "AA"
    row = patient(pacs, "HU0001")
    assert (row["name"], row["sex"], row["birth_date"], row["phone"]) == ("王晓明", "M", "1970-01-01", "")
    audited = pacs.query("SELECT actor, detail FROM audit_log WHERE action = 'patient.update' AND patient_id = 'HU0001'")
    assert [r["actor"] for r in audited] == ["hl7:HIS"]
    detail = json.loads(audited[0]["detail"])
    assert detail["before"] == {"name": "王小明", "phone": "13900000001"}
    assert detail["after"] == {"name": "王晓明", "phone": ""}


def test_a_repeated_message_is_acknowledged_again_and_applied_once(pacs) -> None:
    """The same MSH-10 from the same sender: the same ACK, and no second change (a later update
    in between is not undone by the repeat)."""
    first = adt("A04", pid("HR0001", "赵六"), control="REPEAT-1")
    answer = send(pacs.hl7_port, first)
    assert ack_code(answer) == "AA"
    assert ack_code(send(pacs.hl7_port, adt("A08", pid("HR0001", "赵陆")))) == "AA"
    before = counts(pacs)
    again = send(pacs.hl7_port, first)
    assert again == answer
    assert patient(pacs, "HR0001")["name"] == "赵陆"
    assert counts(pacs) == before
    assert [tuple(r) for r in pacs.query("SELECT outcome, attempts FROM hl7_messages WHERE control_id = 'REPEAT-1'")] == [
        ("AA", 1)]


@pytest.mark.parametrize("message, code, error_code, location", [
    (adt("A04", "PID|1||HB0001^^^HOSP^PI||李四||19800231|M"), "AE", "102", "PID^1^7"),  # no 31 February
    (adt("A04", "PID|1||HB0002^^^HOSP^PI||李\\S\\四||19800203|M"), "AE", "102", "PID^1^5"),  # no ^ in a name
    (adt("A04", "PID|1||HB0003^^^HOSP^PI||||19800203|M"), "AE", "102", "PID^1^5"),  # a new patient needs a name
    ("\r".join([hl7kit.msh("ADT^A04^ADT_A01"), "EVN|A04"]), "AE", "101", "PID^1^"),
    (adt("A04", "PID|1||||李四||19800203|M"), "AE", "101", "PID^1^3"),
    ("\r".join([hl7kit.msh("SIU^S12^SIU_S12"), "SCH|1"]), "AR", "200", "MSH^1^9"),
    ("\r".join([hl7kit.msh("ADT^A99^ADT_A01"), "EVN|A99", pid("HB0004")]), "AR", "201", "MSH^1^9"),
    (hl7kit.msh("ADT^A04^ADT_A01", charset="KLINGON") + "\r" + pid("HB0005"), "AR", "103", "MSH^1^18"),
])
def test_bad_messages_get_a_reason_and_change_nothing(pacs, message, code, error_code, location) -> None:
    before = counts(pacs)
    answer = ack_of(send(pacs.hl7_port, message))
    assert answer.msa.msa_1.value == code
    err = answer.err.err_1.value  # v2.4: ERR-1 is segment^sequence^field^code&text&table
    assert err.startswith(location + "^" + error_code + "&"), err
    assert counts(pacs) == before
    control = answer.msa.msa_2.value
    kept = pacs.query("SELECT outcome, error_code FROM hl7_messages WHERE control_id = ?", control)
    assert [tuple(r) for r in kept] == [(code, error_code)]


def test_a_message_not_in_gb18030_is_rejected_not_garbled(pacs) -> None:
    """Bytes that are not text in the declared set: AR, and no patient with a garbled name."""
    body = adt("A04", pid("HG0001", "张三"), charset="UNICODE UTF-8").encode("utf-8")
    wrong = body.replace(b"UNICODE UTF-8", b"GB 18030-2000").replace("张三".encode(), b"\x81\x20")
    with socket.create_connection(("127.0.0.1", pacs.hl7_port), timeout=10) as sock:
        sock.sendall(hl7kit.START + wrong + hl7kit.END)
        answer = hl7kit.unframe(hl7kit.receive_all(sock, sock.recv(65536)))
    assert ack_code(answer, "gb18030") == "AR"
    assert patient(pacs, "HG0001") is None


def test_strangers_are_refused_and_not_kept(pacs) -> None:
    """An application not configured, or a configured one from another host: AR, and nothing is
    written (a stranger cannot fill the database)."""
    before = counts(pacs) + (pacs.query("SELECT COUNT(*) FROM hl7_messages")[0][0],)
    for sender in ("INTRUDER", "ELSEWHERE"):
        answer = ack_of(send(pacs.hl7_port, adt("A04", pid("HS0001"), sender=sender)))
        assert answer.msa.msa_1.value == "AR"
        assert answer.err.err_1.value.startswith("MSH^1^3^207&")
    assert counts(pacs) + (pacs.query("SELECT COUNT(*) FROM hl7_messages")[0][0],) == before


def test_garbage_is_answered_and_the_connection_stays_usable(pacs) -> None:
    with socket.create_connection(("127.0.0.1", pacs.hl7_port), timeout=10) as sock:
        sock.sendall(hl7kit.START + b"GET / HTTP/1.1\r\n\r\n" + hl7kit.END)
        assert ack_code(hl7kit.unframe(hl7kit.receive_all(sock, sock.recv(65536))), "ascii") == "AR"
        sock.sendall(hl7kit.START + adt("A04", pid("HX0001", "钱七")).encode() + hl7kit.END)
        assert ack_code(hl7kit.unframe(hl7kit.receive_all(sock, sock.recv(65536)))) == "AA"
    assert patient(pacs, "HX0001")["name"] == "钱七"


# ---------------------------------------------------------------- a hostile peer

def test_a_message_longer_than_the_limit_is_refused_and_the_connection_closed(pacs) -> None:
    with socket.create_connection(("127.0.0.1", pacs.hl7_port), timeout=10) as sock:
        huge = adt("A04", pid("HL0001", "孙八")).encode() + b"\rNTE|1||" + b"x" * 70000
        sock.sendall(hl7kit.START + huge + hl7kit.END)
        answer = hl7kit.unframe(hl7kit.receive_all(sock, sock.recv(65536)))
        assert ack_code(answer, "ascii") == "AR"
        assert sock.recv(65536) == b""  # closed
    assert patient(pacs, "HL0001") is None


def test_a_silent_or_slow_peer_is_dropped_and_connections_are_bounded(pacs) -> None:
    """HL7_MAX_CONNECTIONS_PER_ADDRESS (3) connections at once: a fourth is closed at once; the
    silent ones are dropped after HL7_NETWORK_TIMEOUT (3 s), a message sent a byte at a time too,
    and then the listener answers again."""
    silent = [socket.create_connection(("127.0.0.1", pacs.hl7_port), timeout=20) for _ in range(3)]
    try:
        extra = socket.create_connection(("127.0.0.1", pacs.hl7_port), timeout=20)
        assert extra.recv(10) == b""  # refused: closed without a word
        extra.close()
        silent[0].sendall(hl7kit.START + b"MSH|^~\\&|HIS")  # starts a message and stalls
        for sock in silent:
            assert sock.recv(10) == b""  # dropped after the timeout (recv returns at the close)
    finally:
        for sock in silent:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the listener counts the dropped connections out as it closes them
        try:
            assert ack_code(send(pacs.hl7_port, adt("A08", pid("HX0001", "钱七")))) == "AA"
            break
        except (ConnectionError, AssertionError):
            if time.monotonic() > deadline:
                raise


# ---------------------------------------------------------------- orders

def check_in(pacs, accession: str) -> None:
    """The desk's check-in (its page is tested in test_check_in.py)."""
    conn = pacs.conn()
    try:
        orders.check_in(conn, audit.Actor("desk"), accession)
    finally:
        conn.close()


def worklist_accessions(pacs, tmp_path) -> list[str]:
    result, answers = findscu(pacs.port, ["AccessionNumber", "PatientID", "PatientName",
                                          "ScheduledProcedureStepSequence[0].Modality"], tmp_path / "wl", aet="CTHL7")
    assert result.returncode == 0, result.stderr
    return [a.AccessionNumber for a in answers]


def test_an_order_becomes_an_exam_that_reaches_the_worklist_once_checked_in(pacs, tmp_path) -> None:
    """ORM^O01 NW: an exam ordered (placer number, procedure, department, physician, priority,
    time, ward, source) with a generated accession number; the worklist offers it only once the
    patient has checked in at the desk."""
    answer = send(pacs.hl7_port, orm("NW", "ORD1001", pid("HO0001", "周九"), priority="S", patient_class="I",
                                     ward="内科一病区^^12", when="203106011030"))
    assert ack_code(answer) == "AA"
    exam = exam_of_order(pacs, "ORD1001")
    assert (exam["status"], exam["modality"], exam["procedure"], exam["priority"], exam["source"]) == (
        "ordered", "CT", "胸部CT平扫", "stat", "inpatient")
    assert (exam["requesting_department"], exam["requesting_physician"], exam["ward"], exam["bed"],
            exam["inpatient_number"], exam["placer_application"]) == ("呼吸内科", "李医生", "内科一病区", "12",
                                                                       "VORD1001", "HIS")
    assert exam["scheduled_at"].startswith("2031-06-01T02:30")  # 10:30 in Shanghai
    assert exam["accession_number"] not in worklist_accessions(pacs, tmp_path)
    check_in(pacs, exam["accession_number"])
    assert exam["accession_number"] in worklist_accessions(pacs, tmp_path)


def test_orders_are_changed_cancelled_and_discontinued_as_the_control_table_says(pacs) -> None:
    assert ack_code(send(pacs.hl7_port, orm("NW", "ORD2001", pid("HO0002", "吴十")))) == "AA"
    assert ack_code(send(pacs.hl7_port, orm("XO", "ORD2001", pid("HO0002", "吴十"), priority="A",
                                            when="203107011400"))) == "AA"
    exam = exam_of_order(pacs, "ORD2001")
    assert (exam["priority"], exam["scheduled_at"][:16], exam["status"]) == ("urgent", "2031-07-01T06:00", "ordered")
    changed = json.loads(pacs.query("SELECT detail FROM audit_log WHERE action = 'exam.change' AND target = ?",
                                    f"exam:{exam['accession_number']}")[0]["detail"])
    assert changed["before"]["priority"] == "routine" and changed["after"]["priority"] == "urgent"
    assert ack_code(send(pacs.hl7_port, orm("CA", "ORD2001", pid("HO0002", "吴十"), reason="患者拒绝"))) == "AA"
    exam = exam_of_order(pacs, "ORD2001")
    assert (exam["status"], exam["cancel_reason"]) == ("cancelled", "患者拒绝")
    assert ack_code(send(pacs.hl7_port, orm("NW", "ORD2002", pid("HO0002", "吴十")))) == "AA"
    assert ack_code(send(pacs.hl7_port, orm("SC", "ORD2002", pid("HO0002", "吴十"), status="DC"))) == "AA"
    assert exam_of_order(pacs, "ORD2002")["status"] == "cancelled"


@pytest.mark.parametrize("message, error_code, location", [
    (orm("XO", "ORD9999", pid("HO0003")), "204", "^^"),  # no such order
    (orm("NW", "ORD3001", pid("HO0003"), procedure="XX999^未知^L", modality=""), "102", "OBR^1^24"),
    (orm("NW", "ORD3002", pid("HO0003"), when="2031130199"), "102", "ORC^1^7"),
    (orm("NW", "", pid("HO0003")), "102", "ORC^1^2"),
])
def test_bad_orders_get_a_reason_and_change_nothing(pacs, message, error_code, location) -> None:
    before = counts(pacs)
    answer = ack_of(send(pacs.hl7_port, message))
    assert answer.msa.msa_1.value == "AE"
    assert answer.err.err_1.value.startswith(f"{location}^{error_code}&"), answer.err.err_1.value
    assert counts(pacs) == before


def test_an_order_placed_twice_or_an_unknown_control_code_is_refused(pacs) -> None:
    assert ack_code(send(pacs.hl7_port, orm("NW", "ORD4001", pid("HO0004", "郑一")))) == "AA"
    before = counts(pacs)
    twice = ack_of(send(pacs.hl7_port, orm("NW", "ORD4001", pid("HO0004", "郑一"))))
    assert twice.msa.msa_1.value == "AE" and "placed already" in twice.msa.msa_3.value
    unknown = ack_of(send(pacs.hl7_port, orm("ZZ", "ORD4001", pid("HO0004", "郑一"))))
    assert unknown.msa.msa_1.value == "AR"
    other_patient = ack_of(send(pacs.hl7_port, orm("XO", "ORD4001", pid("HO0005", "王二"))))
    assert other_patient.msa.msa_1.value == "AE" and "belongs to patient HO0004" in other_patient.msa.msa_3.value
    assert counts(pacs) == before


# ---------------------------------------------------------------- patient identity

def merge_message(survivor: str, prior: str, event: str = "A40", name: str = "孙悟空", control: str | None = None) -> str:
    return "\r".join([hl7kit.msh(f"ADT^{event}^ADT_A39", control), f"EVN|{event}", pid(survivor, name),
                      f"MRG|{prior}^^^HOSP^PI"])


def study_ids(pacs, tmp_path, patient_id: str) -> list[str]:
    result, answers = qr_findscu(pacs.port, "S", ["QueryRetrieveLevel=STUDY", f"PatientID={patient_id}",
                                                  "StudyInstanceUID", "PatientName"], tmp_path / patient_id)
    assert result.returncode == 0, result.stderr
    return [a.StudyInstanceUID for a in answers]


def test_a_merge_moves_filed_images_to_the_survivor_everywhere(pacs, tmp_path) -> None:
    """ADT^A40: the images filed under the old ID answer C-FIND, DICOMweb and the worklist under
    the new one at once; the files are rewritten in the background, the old values kept in the
    Original Attributes Sequence; a later image with the old ID files to the survivor; a repeated
    or circular merge is refused; the merge cannot be undone once images came to the survivor."""
    assert ack_code(send(pacs.hl7_port, orm("NW", "ORD5001", pid("HM0001", "孙悟空")))) == "AA"
    accession = exam_of_order(pacs, "ORD5001")["accession_number"]
    check_in(pacs, accession)
    files = pacs.send_series(tmp_path / "old", 3, accession=accession, patient_id="HM0001", name="SUN^WUKONG",
                             sex="M", birth_date="19800203")
    study_uid = dcmread(files[0]).StudyInstanceUID
    assert ack_code(send(pacs.hl7_port, adt("A04", pid("HM0002", "孙悟空")))) == "AA"
    assert study_ids(pacs, tmp_path, "HM0002") == []

    assert ack_code(send(pacs.hl7_port, merge_message("HM0002", "HM0001"))) == "AA"
    assert study_ids(pacs, tmp_path, "HM0002") == [study_uid]
    assert study_ids(pacs, tmp_path, "HM0001") == []
    token = pacs.token("hl7_reader", "radiologist")
    web = DICOMwebClient(url=f"{pacs.server.url}/dicom-web", headers={"Authorization": f"Bearer {token}"})
    assert [s["0020000D"]["Value"][0] for s in web.search_for_studies(search_filters={"PatientID": "HM0002"})] == [
        study_uid]
    assert {m["00100020"]["Value"][0] for m in web.retrieve_study_metadata(study_uid)} == {"HM0002"}
    result, answers = findscu(pacs.port, ["AccessionNumber=" + accession, "PatientID"], tmp_path / "wl", aet="CTHL7")
    assert result.returncode == 0 and [a.PatientID for a in answers] == ["HM0002"]

    conn = pacs.conn()
    try:
        def rewritten() -> bool:
            return conn.execute("SELECT files_done_at IS NOT NULL FROM patient_merges m JOIN patients p"
                                " ON p.id = m.prior_ref WHERE p.patient_id = 'HM0001'").fetchone()[0] == 1
        wait_for(rewritten, "the merged patient's files are rewritten", 30)
        paths = [r[0] for r in conn.execute("SELECT storage_path FROM instances i JOIN series se ON se.id = i.series_ref"
                                            " JOIN studies st ON st.id = se.study_ref WHERE st.study_instance_uid = ?",
                                            (study_uid,))]
        store = pacs.settings["STORAGE_DIR"]
        for path in paths:
            ds = dcmread(storage.resolve(store, path))
            assert (ds.PatientID, ds.AccessionNumber) == ("HM0002", accession)
            assert ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientID == "HM0001"
        assert conn.execute("SELECT patient_id FROM studies WHERE study_instance_uid = ?",
                            (study_uid,)).fetchone()[0] == "HM0002"
        before = counts(pacs)
        assert ack_code(send(pacs.hl7_port, merge_message("HM0002", "HM0001"))) == "AE"  # repeated
        assert ack_code(send(pacs.hl7_port, merge_message("HM0001", "HM0002"))) == "AE"  # circular
        assert ack_code(send(pacs.hl7_port, merge_message("HM0003", "HM0099"))) == "AE"  # unknown prior
        assert counts(pacs) == before

        later = pacs.send_series(tmp_path / "later", 1, accession=accession, patient_id="HM0001", name="SUN^WUKONG",
                                 sex="M", birth_date="19800203")
        filed = conn.execute("SELECT exam_ref IS NOT NULL, quarantine_reason FROM studies WHERE study_instance_uid = ?",
                             (dcmread(later[0]).StudyInstanceUID,)).fetchone()
        assert tuple(filed) == (1, None)
        merge_id = conn.execute("SELECT id FROM patient_merges ORDER BY id DESC LIMIT 1").fetchone()[0]
        with pytest.raises(Exception, match="Images were filed to the surviving patient"):
            merging.undo(conn, audit.Actor("admin"), pacs.settings, merge_id, {"reason": "a test"})
    finally:
        conn.close()


def test_a_change_of_patient_id_keeps_the_old_id_resolving(pacs) -> None:
    """ADT^A47: the exams move to the new ID; a later message under the old ID updates the new record."""
    assert ack_code(send(pacs.hl7_port, orm("NW", "ORD6001", pid("HC0001", "猪八戒")))) == "AA"
    assert ack_code(send(pacs.hl7_port, merge_message("HC0002", "HC0001", "A47", name="猪八戒"))) == "AA"
    assert pacs.query("SELECT p.patient_id FROM exams e JOIN patients p ON p.id = e.patient_ref"
                      " WHERE e.placer_order_number = 'ORD6001'")[0][0] == "HC0002"
    assert ack_code(send(pacs.hl7_port, adt("A08", pid("HC0001", "猪悟能")))) == "AA"
    assert (patient(pacs, "HC0002")["name"], patient(pacs, "HC0001")["name"]) == ("猪悟能", "猪八戒")
    taken = ack_of(send(pacs.hl7_port, merge_message("HC0002", "HM0002", "A47")))
    assert taken.msa.msa_1.value == "AE"  # the new ID is taken: that is a merge (A40)
