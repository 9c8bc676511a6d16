"""The desk and the words as the department meets them (issue 26): real ID cards accepted, STAT
never read as 危急值."""
from __future__ import annotations

import re
from datetime import date

import pytest
from babel.messages.pofile import read_po
from stdnum.cn import ric

from pacslite.core.validation import ValidationError
from pacslite.ris import idcard, patients
from tests.conftest import EXAM_FORM, ROOT, post, register

CATALOGUE = ROOT / "pacslite" / "translations" / "zh_CN" / "LC_MESSAGES" / "messages.po"
#: Area codes of offices created after many of their card holders were born (the cards valid).
YOUNG_OFFICES = ["310115", "440106", "440305", "420111", "320102", "330106", "510104", "500103"]


def card(area: str, born: str, order: str = "123") -> str:
    """A valid resident ID card number: the area, the birth date, the order code, the check."""
    body = area + born + order
    return body + ric.calc_check_digit(body + "0")


@pytest.mark.parametrize("area", YOUNG_OFFICES)
@pytest.mark.parametrize("born", ["19500312", "19850615"])
def test_a_card_from_an_office_younger_than_its_holder_registers(client_as, conn, area: str, born: str) -> None:
    number = card(area, born)
    desk = client_as("registrar")
    birth = f"{born[:4]}-{born[4:6]}-{born[6:]}"
    register(desk, patient_id=f"C{area}{born[:4]}", birth_date=birth, national_id=number)
    assert patients.get_patient(conn, f"C{area}{born[:4]}")["national_id"] == number
    offer = desk.get(f"/patients/id-card?national_id={number}&sex=M&birth_date={birth}",
                     headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="id-card-invalid"' not in offer and 'id="id-card-area"' not in offer


def test_an_area_code_nobody_knows_is_a_note_not_a_refusal(client_as, conn) -> None:
    number = card("999999", "19700101")
    desk = client_as("registrar")
    note = desk.get(f"/patients/id-card?national_id={number}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="id-card-area"' in note and "999999" in note and 'id="id-card-invalid"' not in note
    register(desk, patient_id="AREA1", birth_date="1970-01-01", national_id=number)
    assert patients.get_patient(conn, "AREA1")["national_id"] == number


@pytest.mark.parametrize(("number", "says"), [
    ("31011519500312123", "18 characters"),                     # one short
    ("3101151950031212A4", "18 characters"),                    # a letter inside
    (card("310115", "19500231")[:-1] + "0", "19500231"),        # 31 February
    (card("310115", "20991231"), "20991231"),                   # born in the future
    (card("310115", "19500312")[:-1] + "9", "does not agree"),  # the check character
])
def test_a_wrong_number_says_which_part_is_wrong_and_registers_nothing(client_as, conn, number: str,
                                                                        says: str) -> None:
    with pytest.raises(ValidationError) as raised:
        idcard.read(number, today=date(2026, 12, 4))
    assert says in raised.value.message % raised.value.params
    desk = client_as("registrar")
    response = post(desk, "/exams/new", {**EXAM_FORM, "national_id": number})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and re.search(r'id="e-national_id" role="alert">[^<]*' + re.escape(says), page)
    assert patients.find_patient(conn, "P0001") is None


def test_the_card_says_birth_date_and_sex() -> None:
    read = idcard.read(" " + card("110105", "19491231", "002").lower() + " ")
    assert (read.birth_date, read.sex, read.area_known) == (date(1949, 12, 31), "F", True)


# ---------------------------------------------------------------- words

def _catalogue() -> dict[str, str]:
    """The zh_CN catalogue: msgid -> msgstr (a context's message by its msgid)."""
    with open(CATALOGUE, "rb") as handle:
        catalog = read_po(handle)
    return {m.id if isinstance(m.id, str) else m.id[0]: m.string if isinstance(m.string, str) else m.string[0]
            for m in catalog if m.id}


def test_a_priority_is_never_called_critical() -> None:
    """STAT is 紧急 and urgent 加急: 危急 is the word clinicians read as 危急值 (a critical value)."""
    words = {msgid: msgstr for msgid, msgstr in _catalogue().items() if msgid in ("STAT", "Urgent", "Routine")}
    assert words == {"STAT": "紧急", "Urgent": "加急", "Routine": "常规"}


def test_only_critical_findings_are_called_critical_in_chinese() -> None:
    """Every msgstr with 危急 translates a msgid about a critical finding (a finding, here)."""
    wrong = [msgid for msgid, msgstr in _catalogue().items()
             if "危急" in msgstr and not any(word in msgid.lower() for word in ("critical", "finding"))
             and msgid != "Nothing waits for acknowledgement."]  # the critical findings page's empty list
    assert wrong == []


def test_the_chinese_receipt_prints_the_priority_as_urgent_not_critical(client_as) -> None:
    desk = client_as("registrar")
    accession = register(desk, priority="stat", source="emergency")
    post(desk, "/language", {"language": "zh_CN"})
    receipt = desk.get(f"/exams/{accession}/receipt").get_data(as_text=True)
    assert "紧急" in receipt and "危急" not in receipt


# ---------------------------------------------------------------- a phrase's blanks

@pytest.mark.parametrize("level", ["preliminary", "final"])
def test_a_report_with_an_unfilled_blank_is_not_signed(app, conn, client_as, tmp_path, level: str) -> None:
    from tests.test_reports import add_image, register as register_exam, version_rows
    accession = register_exam(app, conn)
    add_image(app, conn, tmp_path, accession)
    rad = client_as("radiologist", username="dr_blank")
    form = {"findings": "右肺上叶结节。\n大小约__mm×__mm，边界清。", "impression": "右肺上叶结节，建议随访。",
            "result_class": "abnormal", "level": level, "revision": "0"}
    for confirm in ("", "1"):  # neither the confirmation nor a forged confirmed form signs it
        refused = post(rad, f"/exams/{accession}/report/sign", {**form, "confirm": confirm})
        page = refused.get_data(as_text=True)
        assert refused.status_code == 400
        assert re.search(r'id="e-findings" role="alert">Fill in the blank \(__\) before signing, line 2: '
                         r'大小约__mm×__mm', page)
        assert 'id="f-findings" name="findings" rows="12" maxlength="20000" aria-invalid="true" data-select-blank' in page
        assert 'id="e-impression"' not in page
    assert [v["status"] for v in version_rows(conn, accession)] in ([], ["draft"])
    assert patients.get_exam(conn, accession)["status"] == "in_progress"
    full_width = post(rad, f"/exams/{accession}/report/sign", {**form, "findings": "边界清。",
                                                                "impression": "结节＿＿枚。"})
    assert full_width.status_code == 400 and 'id="e-impression"' in full_width.get_data(as_text=True)
    filled = post(rad, f"/exams/{accession}/report/sign", {**form, "findings": "大小约8mm×6mm，边界清。",
                                                            "confirm": "1"})
    assert filled.status_code == 302
    assert patients.get_exam(conn, accession)["status"] == level
