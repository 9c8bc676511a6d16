"""Results and status back to the HIS over MLLP: the test HIS is python-hl7's asyncio MLLP
server; what it receives is read and validated by hl7apy, an independent parser."""
from __future__ import annotations

import json

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from pacslite.core import audit
from pacslite.ris import exams, orders, patients, reports, users
from tests import hl7kit, server as pacs_server
from tests.conftest import flask_cli, free_port, wait_for
from tests.hl7kit import ack_code, orm, pid, send


@pytest.fixture(scope="module")
def his():
    running = hl7kit.TestHis(free_port(), encoding="gb18030").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, his) -> pacs_server.Pacs:
    instance = tmp_path_factory.mktemp("hl7out")
    assert flask_cli(instance, "ae", "add", "STORESCU").returncode == 0
    destination = {"host": "127.0.0.1", "port": his.port, "application": "HIS", "facility": "HOSP",
                   "charset": "GB18030", "version": "2.4"}
    running = pacs_server.Pacs(instance, PACSLITE_HL7_SENDERS=json.dumps({"HIS": {"hosts": ["127.0.0.1"]}}),
                               PACSLITE_HL7_DESTINATION=json.dumps(destination), PACSLITE_HL7_POLL_SECONDS="0.2",
                               PACSLITE_HL7_RETRY_FIRST_SECONDS="0.5", PACSLITE_HL7_ALERT_MINUTES="0.02")
    conn = running.conn()
    users.create(conn, audit.SYSTEM, {"username": "dr_his", "password": "Secret-pass-1", "roles": ["radiologist"],
                                      "display_name": "王主任"})
    conn.close()
    yield running
    assert running.server.stop() == 0


def statuses(his) -> list[tuple[str, str]]:
    return [(m.orc.orc_2.value, m.orc.orc_5.value) for m in his.messages("ORM")]


def ordered_and_imaged(pacs, tmp_path, placer: str, patient_id: str, name: str, dicom_name: str) -> str:
    assert ack_code(send(pacs.hl7_port, orm("NW", placer, pid(patient_id, name)))) == "AA"
    accession = pacs.query("SELECT accession_number FROM exams WHERE placer_order_number = ?", placer)[0][0]
    conn = pacs.conn()
    try:
        orders.check_in(conn, audit.Actor("desk"), accession)
    finally:
        conn.close()
    pacs.send_series(tmp_path / placer, 2, accession=accession, patient_id=patient_id, name=dicom_name, sex="M",
                     birth_date="19800203")
    return accession


def sign(pacs, accession: str, level: str, revision: int, impression: str = "右肺结节，建议随访。",
         result_class: str = "abnormal") -> None:
    conn = pacs.conn()
    try:
        reports.sign(conn, audit.Actor("dr_his"), patients.get_exam(conn, accession),
                     {"level": level, "result_class": result_class, "revision": str(revision),
                      "findings": "右肺上叶见一结节。\n余未见异常。", "impression": impression}, pacs.settings)
    finally:
        conn.close()


def test_the_status_and_the_report_reach_the_his_in_order_and_in_its_charset(pacs, his, tmp_path) -> None:
    accession = ordered_and_imaged(pacs, tmp_path, "ORD7001", "HR7001", "欧阳娜娜", "OUYANG^NANA")
    conn = pacs.conn()
    try:
        exams.mark_done(conn, audit.Actor("tech"), patients.get_exam(conn, accession), {}, 10)
    finally:
        conn.close()
    sign(pacs, accession, "final", 0, result_class="critical")
    wait_for(lambda: len(his.messages("ORU")) == 1, "the report reaches the HIS", 20)
    assert statuses(his) == [("ORD7001", "SC"), ("ORD7001", "IP"), ("ORD7001", "CM"), ("ORD7001", "CM")]
    oru_text = [t for t in his.received if "|ORU^R01" in t][0]
    strict = parse_message(oru_text.replace("\n", "\r"), find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    strict.validate()
    oru = his.messages("ORU")[0]
    assert oru.msh.msh_18.value == "GB 18030-2000"
    assert oru.pid.pid_5.value == "欧阳娜娜"  # intact: GB 18030 both ways
    assert (oru.obr.obr_2.value, oru.obr.obr_3.value, oru.obr.obr_25.value) == ("ORD7001", accession, "F")
    assert oru.obr.obr_32.value == "^王主任"
    assert oru.obr.obr_22.value.endswith("+0800")  # signed, in the department's time
    observations = {o.obx_3.obx_3_1.value: o for o in oru.obx}
    assert observations["IMPRESSION"].obx_5.value == "右肺结节，建议随访。"
    # FT: the line break as HL7's \.br\ (hl7apy, not knowing OBX-5's type here, would escape it again)
    assert "|FT|FINDINGS^Findings^L||右肺上叶见一结节。\\.br\\余未见异常。|" in oru_text
    assert observations["CRITICAL"].obx_5.value == "Y" and observations["CRITICAL"].obx_8.value == "AA"
    assert {o.obx_11.value for o in oru.obx} == {"F"}

    conn = pacs.conn()
    try:
        reports.amend(conn, audit.Actor("dr_his"), patients.get_exam(conn, accession), {"reason": "补充"})
    finally:
        conn.close()
    sign(pacs, accession, "final", 1, impression="右肺结节，建议三个月后复查。")
    wait_for(lambda: len(his.messages("ORU")) == 2, "the amendment reaches the HIS", 20)
    corrected = his.messages("ORU")[1]
    assert {o.obx_11.value for o in corrected.obx} == {"C"} and corrected.obr.obr_25.value == "C"


def test_a_his_that_is_down_gets_everything_once_it_is_back(pacs, his, tmp_path) -> None:
    """Nothing is lost while the HIS does not answer: the queue waits (the alert opens), then
    goes in order; the alert closes."""
    his.stop()
    before = len(his.received)
    accession = ordered_and_imaged(pacs, tmp_path, "ORD7002", "HR7002", "张三", "ZHANG^SAN")
    conn = pacs.conn()
    try:
        def alert_open() -> bool:
            return conn.execute("SELECT COUNT(*) FROM alerts WHERE rule = 'his_unreachable' AND state = 'open'"
                                ).fetchone()[0] == 1
        wait_for(alert_open, "the HIS-unreachable alert opens", 20)
        assert conn.execute("SELECT COUNT(*) FROM hl7_outbox WHERE state = 'queued'").fetchone()[0] >= 2
    finally:
        conn.close()
    his.start()
    wait_for(lambda: ("ORD7002", "IP") in statuses(his), "the queue goes once the HIS is back", 30)
    assert statuses(his)[-2:] == [("ORD7002", "SC"), ("ORD7002", "IP")]
    assert len(his.received) - before == 2
    conn = pacs.conn()
    try:
        wait_for(lambda: not alert_open(), "the alert closes", 10)
    finally:
        conn.close()
    assert accession
