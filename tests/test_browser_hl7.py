"""Issue 29's round in a real browser, in both languages: the test HIS (python-hl7) registers a
patient and orders a CT over MLLP; the registrar checks the patient in at the desk by scanning
the card (Chromium); the modality finds the exam on its worklist (findscu) and sends the images
(storescu); the radiologist signs the report; the HIS receives the status and the report
(python-hl7's MLLP server), read and validated by hl7apy."""
from __future__ import annotations

import json

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from pacslite.core import audit
from pacslite.ris import patients, reports
from tests import hl7kit
from tests.conftest import flask_cli, free_port, wait_for
from tests.dicomkit import findscu
from tests.hl7kit import ack_code, adt, orm, pid, send
from tests.test_browser import browser, modality_pacs, page_as  # noqa: F401 - fixtures

WORDS = {"zh_CN": {"button": "中文", "nav": "签到", "checked": "已为", "printing": "回执正在打印"},
         "en": {"button": "English", "nav": "Check-in", "checked": "Checked in", "printing": "The receipt is printing."}}


def test_the_whole_round_with_the_his_in_both_languages(browser, modality_pacs, tmp_path) -> None:  # noqa: F811
    his = hl7kit.TestHis(free_port(), encoding="gb18030").start()
    try:
        destination = {"host": "127.0.0.1", "port": his.port, "application": "HIS", "facility": "HOSP",
                       "charset": "GB18030", "version": "2.4"}
        pacs = modality_pacs(PACSLITE_HL7_SENDERS=json.dumps({"HIS": {"hosts": ["127.0.0.1"]}}),
                             PACSLITE_HL7_DESTINATION=json.dumps(destination), PACSLITE_HL7_POLL_SECONDS="0.2")
        assert flask_cli(pacs.instance, "ae", "add", "CTROOM", "--host", "127.0.0.1", "--modality", "CT",
                         "--may", "worklist").returncode == 0
        pacs.add_user("desk_wang", "registrar")
        pacs.add_user("dr_zhou", "radiologist", display_name="周主任")
        problems: list[str] = []
        for n, (language, name, dicom_name) in enumerate((("zh_CN", "欧阳娜娜", "OUYANG^NANA"),
                                                          ("en", "司马光", "SIMA^GUANG"))):
            patient_id, placer = f"E2E00{n}", f"E2EORD{n}"
            words = WORDS[language]
            assert ack_code(send(pacs.hl7_port, adt("A04", pid(patient_id, name, sex="F"), charset="GB 18030-2000"),
                                 "gb18030"), "gb18030") == "AA"
            assert ack_code(send(pacs.hl7_port, orm("NW", placer, pid(patient_id, name, sex="F"),
                                                    charset="GB 18030-2000"), "gb18030"), "gb18030") == "AA"
            accession = pacs.query("SELECT accession_number FROM exams WHERE placer_order_number = ?", placer)[0][0]
            result, answers = findscu(pacs.port, ["AccessionNumber=" + accession], tmp_path / f"wl{n}", aet="CTROOM")
            assert answers == []  # ordered: not on the worklist before the patient is here

            page = page_as(browser, pacs, "desk_wang", problems)
            page.click(f"button:has-text('{words['button']}')")
            page.wait_for_selector(f"nav >> text={words['nav']}")
            page.click("#nav-check-in")
            page.fill("#scan", patient_id)  # the card's barcode, as a scanner types it
            page.keyboard.press("Enter")
            page.wait_for_selector("#check-in-found button.check-in:focus")
            page.keyboard.press("Enter")  # the one key
            page.wait_for_selector("#checked-in")
            flash = page.locator("#checked-in").inner_text()
            assert words["checked"] in flash and accession in flash and words["printing"] in flash, flash
            page.context.close()

            result, answers = findscu(pacs.port, ["AccessionNumber=" + accession, "PatientName", "PatientID"],
                                      tmp_path / f"wl{n}", aet="CTROOM")
            assert result.returncode == 0 and [a.PatientID for a in answers] == [patient_id]
            assert str(answers[0].PatientName).split("=")[1].replace("^", "") == name  # the ideographic group
            pacs.send_series(tmp_path / placer, 2, accession=accession, patient_id=patient_id, name=dicom_name,
                             sex="F", birth_date="19800203")
            conn = pacs.conn()
            try:
                reports.sign(conn, audit.Actor("dr_zhou"), patients.get_exam(conn, accession),
                             {"level": "final", "result_class": "normal", "revision": "0",
                              "findings": "双肺未见异常。", "impression": "胸部CT未见异常。"}, pacs.settings)
            finally:
                conn.close()
            wait_for(lambda: sum(f"|{placer}|" in t and "|ORU^R01" in t for t in his.received) == 1,
                     "the report reaches the HIS", 30)
            oru_text = next(t for t in his.received if f"|{placer}|" in t and "|ORU^R01" in t)
            parse_message(oru_text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT).validate()
            oru = parse_message(oru_text, find_groups=False)
            assert (oru.pid.pid_5.value, oru.obr.obr_3.value, oru.obr.obr_25.value) == (name, accession, "F")
            assert oru.obr.obr_32.value == "^周主任"
            statuses = [m.orc.orc_5.value for m in his.messages("ORM") if m.orc.orc_2.value == placer]
            assert statuses == ["SC", "IP", "CM"]  # checked in, images arriving, reported
        assert problems == []
    finally:
        his.stop()
