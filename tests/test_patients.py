"""The RIS domain: accession numbers, patients, exams and their states."""
import itertools
from datetime import date

import pytest
from stdnum import damm

from pacslite.core import audit
from pacslite.ris import exams, patients
from pacslite.core.validation import Conflict, ValidationError
from tests.conftest import count

ACTOR = audit.Actor("desk1", "127.0.0.1")
PATIENT = {"patient_id": "P100", "name": "李四", "sex": "F", "birth_date": "1990-05-06", "phone": "010-1234"}
EXAM = {"modality": "DR", "source": "emergency", "procedure": "Chest PA", "priority": "urgent",
        "scheduled_at": "2026-11-24T09:30"}


def test_accession_numbers_have_a_check_digit_that_catches_typos() -> None:
    number = patients.accession_number("A", date(2026, 11, 24), 17)
    assert number == "A" + "2611240017" + str(damm.calc_check_digit("2611240017"))
    assert patients.is_valid_accession(number, "A")
    digits = number[1:]
    for i, wrong in itertools.product(range(len(digits)), "0123456789"):
        if wrong != digits[i]:
            assert not patients.is_valid_accession("A" + digits[:i] + wrong + digits[i + 1:], "A")
    for i in range(len(digits) - 1):
        if digits[i] != digits[i + 1]:
            swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
            assert not patients.is_valid_accession("A" + swapped, "A")


def test_registration_generates_unique_numbers_and_uids(app, conn) -> None:
    seen_acc, seen_uid = set(), set()
    for i in range(30):
        reg = patients.register_exam(conn, ACTOR, app.config, {**PATIENT, "patient_id": f"P{i}"}, EXAM)
        assert patients.is_valid_accession(reg.accession_number, "A")
        assert len(reg.accession_number) <= 16  # DICOM SH
        assert reg.study_instance_uid.startswith("2.25.") and len(reg.study_instance_uid) <= 64
        seen_acc.add(reg.accession_number)
        seen_uid.add(reg.study_instance_uid)
    assert len(seen_acc) == len(seen_uid) == 30


def test_uid_root_and_prefix_are_configurable(app, conn) -> None:
    settings = {**app.config, "UID_ROOT": "1.2.826.0.1.3680043.10.1234", "ACCESSION_PREFIX": "CT"}
    reg = patients.register_exam(conn, ACTOR, settings, PATIENT, EXAM)
    assert reg.study_instance_uid.startswith("1.2.826.0.1.3680043.10.1234.")
    assert reg.accession_number.startswith("CT") and patients.is_valid_accession(reg.accession_number, "CT")


def test_registration_is_audited_with_the_patient(app, conn) -> None:
    reg = patients.register_exam(conn, ACTOR, app.config, PATIENT, EXAM)
    actions = [(r["action"], r["patient_id"], r["actor"], r["address"]) for r in audit.search(conn)]
    assert ("exam.register", "P100", "desk1", "127.0.0.1") in actions
    assert ("patient.create", "P100", "desk1", "127.0.0.1") in actions
    exam = patients.get_exam(conn, reg.accession_number)
    assert exam["dicom_modality"] == "DX" and exam["status"] == exams.SCHEDULED
    # 09:30 in Shanghai is 01:30 UTC
    assert exam["scheduled_at"] == "2026-11-24T01:30:00+00:00"


@pytest.mark.parametrize("field, value", [
    ("patient_id", ""), ("patient_id", "../../etc"), ("patient_id", "x" * 65), ("name", ""),
    ("name", "A^B"), ("name", "bad\x00name"), ("sex", "X"), ("birth_date", "2999-01-01"),
    ("birth_date", "24.11.1990"), ("phone", "call me"),
])
def test_invalid_patient_fields_change_nothing(app, conn, field, value) -> None:
    before = (count(conn, "patients"), count(conn, "exams"), count(conn, "audit_log"))
    with pytest.raises(ValidationError) as info:
        patients.register_exam(conn, ACTOR, app.config, {**PATIENT, field: value}, EXAM)
    assert info.value.field == field
    assert (count(conn, "patients"), count(conn, "exams"), count(conn, "audit_log")) == before


@pytest.mark.parametrize("field, value", [
    ("modality", "XX"), ("modality", ""), ("source", "walk-in"), ("procedure", ""), ("priority", "soon"),
    ("scheduled_at", "tomorrow"), ("station_ae", "CT\\01"), ("station_ae", "X" * 17), ("clinical_note", "a\x07b"),
])
def test_invalid_exam_fields_change_nothing(app, conn, field, value) -> None:
    before = (count(conn, "patients"), count(conn, "exams"), count(conn, "audit_log"))
    with pytest.raises(ValidationError) as info:
        patients.register_exam(conn, ACTOR, app.config, PATIENT, {**EXAM, field: value})
    assert info.value.field == field
    assert (count(conn, "patients"), count(conn, "exams"), count(conn, "audit_log")) == before


def test_existing_patient_with_other_name_needs_confirmation(app, conn) -> None:
    patients.register_exam(conn, ACTOR, app.config, PATIENT, EXAM)
    before = count(conn, "exams")
    with pytest.raises(patients.ConfirmationNeeded) as info:
        patients.register_exam(conn, ACTOR, app.config, {**PATIENT, "name": "王五"}, EXAM)
    assert info.value.differences == {"name": ("李四", "王五")}
    assert count(conn, "exams") == before
    assert patients.get_patient(conn, "P100")["name"] == "李四"

    patients.register_exam(conn, ACTOR, app.config, {**PATIENT, "name": "王五"}, EXAM, confirm_demographics=True)
    assert patients.get_patient(conn, "P100")["name"] == "王五"
    update = [r for r in audit.search(conn, action="patient.update")][0]
    assert '"before": {"name": "李四"}' in update["detail"] and '"after": {"name": "王五"}' in update["detail"]


def test_same_demographics_need_no_confirmation(app, conn) -> None:
    patients.register_exam(conn, ACTOR, app.config, PATIENT, EXAM)
    patients.register_exam(conn, ACTOR, app.config, {**PATIENT, "phone": "999 999"}, EXAM)
    assert count(conn, "patients") == 1 and count(conn, "exams") == 2
    assert patients.get_patient(conn, "P100")["phone"] == "999 999"


def test_search_by_id_name_pinyin_and_initials(app, conn) -> None:
    patients.create_patient(conn, ACTOR, {**PATIENT, "patient_id": "H0001", "name": "张三丰", "sex": "M"})
    patients.create_patient(conn, ACTOR, {**PATIENT, "patient_id": "H0002", "name": "Smith^John".replace("^", " "),
                                          "sex": "M"})
    patients.create_patient(conn, ACTOR, {**PATIENT, "patient_id": "H00010", "name": "阿兰", "sex": "F"})
    for query in ("H0001", "H000", "h000", "张三", "zhangsan", "zhang san", "zsf", "ZSF"):
        found = [r["patient_id"] for r in patients.search_patients(conn, query)]
        assert "H0001" in found, query
    assert [r["patient_id"] for r in patients.search_patients(conn, "smith")] == ["H0002"]
    # the exact ID first, then by name (阿兰 sorts before 张三丰)
    assert [r["patient_id"] for r in patients.search_patients(conn, "H0001")] == ["H0001", "H00010"]
    assert patients.search_patients(conn, "%") == []  # LIKE wildcards are literal


def test_cancel_needs_a_reason_and_no_images(app, conn) -> None:
    reg = patients.register_exam(conn, ACTOR, app.config, PATIENT, EXAM)
    with pytest.raises(ValidationError):
        patients.cancel_exam(conn, ACTOR, reg.accession_number, {"reason": " "})
    conn.execute("UPDATE exams SET instance_count = 3 WHERE accession_number = ?", (reg.accession_number,))
    with pytest.raises(Conflict):
        patients.cancel_exam(conn, ACTOR, reg.accession_number, {"reason": "patient left"})
    conn.execute("UPDATE exams SET instance_count = 0 WHERE accession_number = ?", (reg.accession_number,))
    patients.cancel_exam(conn, ACTOR, reg.accession_number, {"reason": "patient left"})
    exam = patients.get_exam(conn, reg.accession_number)
    assert exam["status"] == exams.CANCELLED and exam["cancel_reason"] == "patient left"
    with pytest.raises(Conflict):  # the state machine: cancelled is final
        patients.cancel_exam(conn, ACTOR, reg.accession_number, {"reason": "again"})
    assert len(audit.search(conn, action="exam.cancel")) == 1


def test_exam_list_filters(app, conn) -> None:
    patients.register_exam(conn, ACTOR, app.config, PATIENT, {**EXAM, "scheduled_at": "2026-11-24T09:30"})
    patients.register_exam(conn, ACTOR, app.config, PATIENT, {**EXAM, "modality": "CT", "priority": "stat",
                                                              "scheduled_at": "2026-11-24T23:30"})
    patients.register_exam(conn, ACTOR, app.config, PATIENT, {**EXAM, "scheduled_at": "2026-11-25T00:30"})
    day = date(2026, 11, 24)
    listed = patients.list_exams(conn, app.config, day=day)
    assert [e["modality"] for e in listed] == ["CT", "DR"]  # stat first; the next local day excluded
    assert [e["modality"] for e in patients.list_exams(conn, app.config, day=day, modality="DR")] == ["DR"]
    assert patients.list_exams(conn, app.config, day=day, source="inpatient") == []
    assert len(patients.list_exams(conn, app.config, day=day, query="lisi")) == 2


def test_a_blank_scheduled_date_is_the_departments_today(monkeypatch) -> None:
    from datetime import datetime, timezone

    from pacslite.core import clock
    # 23:30 UTC on the 24th is 07:30 on the 25th in Shanghai: the desk means the 25th.
    monkeypatch.setattr(clock, "now", lambda: datetime(2026, 11, 24, 23, 30, tzinfo=timezone.utc))
    assert patients.combine_local("", "09:00", "Asia/Shanghai") == "2026-11-25T09:00"
    assert patients.combine_local("2026-12-01", "", "Asia/Shanghai") == "2026-12-01T00:00"
    assert patients.combine_local("", "", "Asia/Shanghai") == ""
