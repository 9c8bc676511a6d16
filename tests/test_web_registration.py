"""The registration desk through its pages: forms, bad input, escaping, request forms, receipts."""
import re

import pytest

from pacslite.core import audit
from pacslite.ris import patients
from tests.conftest import EXAM_FORM, count, image_bytes, post, register

HOSTILE = '<script>alert(1)</script>"\'&'


def test_register_shows_the_exam_and_audits(client_as, conn) -> None:
    desk = client_as("registrar")
    accession = register(desk)
    page = desk.get(f"/exams/{accession}").get_data(as_text=True)
    assert accession in page and "张三" in page and "Chest CT" in page
    row = audit.search(conn, action="exam.register")[0]
    assert row["actor"] == "u_registrar" and row["patient_id"] == "P0001" and row["target"] == f"exam:{accession}"


@pytest.mark.parametrize("field", ["patient_id", "name", "procedure", "modality"])
def test_a_missing_field_is_shown_at_the_field_and_nothing_is_saved(client_as, conn, field) -> None:
    desk = client_as("registrar")
    before = (count(conn, "patients"), count(conn, "exams"))
    response = post(desk, "/exams/new", {**EXAM_FORM, field: ""})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert re.search(rf'<p class="error" id="e-{field}" role="alert">This field is required\.</p>', page) or \
        re.search(rf'<p class="error" id="e-{field}" role="alert">Not one of the allowed values\.</p>', page)
    assert (count(conn, "patients"), count(conn, "exams")) == before
    # what was typed is kept in the form
    if field != "patient_id":
        assert 'value="P0001"' in page


def test_existing_patient_id_with_another_name_asks_for_confirmation(client_as, conn) -> None:
    desk = client_as("registrar")
    register(desk)
    response = post(desk, "/exams/new", {**EXAM_FORM, "name": "张山"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'name="resolve_name"' in page and "张三" in page and "张山" in page
    assert 'name="resolve_sex"' not in page  # only the field that differs asks
    assert count(conn, "exams") == 1
    confirmed = post(desk, "/exams/new", {**EXAM_FORM, "name": "张山", "resolve_name": "update"})
    assert confirmed.status_code == 302
    assert patients.get_patient(conn, "P0001")["name"] == "张山"


def test_a_returning_patient_keeps_every_stored_value(client_as, conn) -> None:
    """Issue 19: an empty box never erases what is on file; a difference is settled field by
    field, and "keep on file" keeps the record when today's entry is the typo."""
    desk = client_as("registrar")
    register(desk, patient_id="R100", name="王秀英", sex="F", birth_date="1956-03-08", phone="13912345678")
    filled = desk.get("/patients/lookup?patient_id=R100", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'value="王秀英"' in filled and 'value="13912345678"' in filled and 'id="returning-patient"' in filled
    assert desk.get("/patients/lookup?patient_id=NOBODY").status_code == 204
    # the phone left empty, the birth date typed wrong: nothing is erased, the date is asked about
    asked = post(desk, "/exams/new", {**EXAM_FORM, "patient_id": "R100", "name": "王秀英", "sex": "F",
                                      "birth_date": "1965-03-08", "phone": ""})
    page = asked.get_data(as_text=True)
    assert asked.status_code == 400 and 'name="resolve_birth_date"' in page and 'name="resolve_name"' not in page
    assert re.search(r'id="e-birth_date" role="alert">Differs from the record', page)
    kept = post(desk, "/exams/new", {**EXAM_FORM, "patient_id": "R100", "name": "王秀英", "sex": "F",
                                     "birth_date": "1965-03-08", "phone": "", "resolve_birth_date": "keep"})
    assert kept.status_code == 302
    stored = patients.get_patient(conn, "R100")
    assert (stored["birth_date"], stored["phone"]) == ("1956-03-08", "13912345678")
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'patient.update'").fetchone()[0] == 0


def test_the_id_card_number_is_validated_offers_its_birth_date_and_sex_and_is_never_erased(client_as, conn) -> None:
    """A resident ID card number (GB 11643: birth date in digits 7–14, the 17th odd for a man,
    an ISO 7064 check character) is checked; what it encodes is offered for the form."""
    desk = client_as("registrar")
    wrong = post(desk, "/exams/new", {**EXAM_FORM, "national_id": "110105194912310021"})  # bad check digit
    assert wrong.status_code == 400 and 'id="e-national_id"' in wrong.get_data(as_text=True)
    assert count(conn, "patients") == 0
    hx = {"HX-Request": "true"}
    offer = desk.get("/patients/id-card?national_id=11010519491231002x&sex=&birth_date=", headers=hx)
    assert "born 1949-12-31, Female" in offer.get_data(as_text=True)
    used = desk.get("/patients/id-card?apply=1&national_id=11010519491231002X&name=x&phone=1", headers=hx)
    page = used.get_data(as_text=True)
    assert 'value="1949-12-31"' in page and re.search(r'<option value="F"\s+selected', page)
    agreed = desk.get("/patients/id-card?national_id=11010519491231002X&sex=F&birth_date=1949-12-31", headers=hx)
    assert "born" not in agreed.get_data(as_text=True)  # nothing to offer when the form agrees
    bad = desk.get("/patients/id-card?national_id=12345", headers=hx).get_data(as_text=True)
    assert 'id="id-card-invalid"' in bad
    register(desk, patient_id="ID01", sex="F", birth_date="1949-12-31", national_id="11010519491231002x")
    assert patients.get_patient(conn, "ID01")["national_id"] == "11010519491231002X"
    register(desk, patient_id="ID01", sex="F", birth_date="1949-12-31", national_id="")  # left blank: kept
    assert patients.get_patient(conn, "ID01")["national_id"] == "11010519491231002X"
    assert [p["patient_id"] for p in patients.search_patients(conn, "11010519491231002x")] == ["ID01"]


def test_every_error_is_shown_at_once_under_its_field(client_as, conn) -> None:
    desk = client_as("registrar")
    response = post(desk, "/exams/new", {**EXAM_FORM, "sex": "", "modality": "", "birth_date": "1980-02-031",
                                         "station_ae": "BAD\\AE"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    for field in ("sex", "modality", "birth_date", "station_ae"):
        assert f'id="e-{field}" role="alert"' in page, field
    assert "Type the date as 19580312, 1958-03-12 or 1958.3.12, or an age" in page and "At most" not in page
    assert count(conn, "exams") == 0


def test_markup_is_stored_as_text_and_escaped_everywhere(client_as, conn) -> None:
    desk = client_as("registrar")
    accession = register(desk, patient_id="X1", name=HOSTILE.replace("^", ""), procedure=HOSTILE,
                         clinical_note=HOSTILE, requesting_physician=HOSTILE)
    assert patients.get_patient(conn, "X1")["name"] == HOSTILE
    admin = client_as("admin")
    for client, url in [(desk, f"/exams/{accession}"), (desk, f"/exams/{accession}/receipt"), (desk, "/exams"),
                        (desk, "/patients?q=X1"), (desk, "/patients/X1"), (admin, "/admin/audit")]:
        page = client.get(url).get_data(as_text=True)
        assert "<script>alert(1)" not in page, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, url


def test_patient_create_edit_and_duplicate(client_as, conn) -> None:
    desk = client_as("registrar")
    data = {"patient_id": "N1", "name": "王小明", "sex": "M", "birth_date": "2001-01-01", "phone": ""}
    assert post(desk, "/patients/new", data).status_code == 302
    duplicate = post(desk, "/patients/new", {**data, "name": "someone else"})
    assert duplicate.status_code == 400 and "A patient with this ID exists already." in duplicate.get_data(as_text=True)
    assert post(desk, "/patients/N1/edit", {**data, "phone": "123456"}).status_code == 302
    assert patients.get_patient(conn, "N1")["phone"] == "123456"
    assert post(desk, "/patients/N1/edit", {**data, "sex": "Q"}).status_code == 400
    assert patients.get_patient(conn, "N1")["sex"] == "M"


def test_htmx_requests_get_partials(client_as) -> None:
    desk = client_as("registrar")
    register(desk)
    full = desk.get("/exams").get_data(as_text=True)
    partial = desk.get("/exams?q=zhangsan", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" in full and "<html" not in partial
    assert partial.lstrip().startswith('<div id="exam-table">') and "张三" in partial
    empty = desk.get("/exams?q=nobody", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "张三" not in empty
    patients_partial = desk.get("/patients?q=zs", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert patients_partial.lstrip().startswith('<div id="patient-results">') and "P0001" in patients_partial


def test_cancel_with_reason(client_as, conn) -> None:
    desk = client_as("registrar")
    accession = register(desk)
    assert post(desk, f"/exams/{accession}/cancel", {"reason": ""}).status_code == 400
    assert patients.get_exam(conn, accession)["status"] == "scheduled"
    assert post(desk, f"/exams/{accession}/cancel", {"reason": "never came"}).status_code == 302
    exam = patients.get_exam(conn, accession)
    assert exam["status"] == "cancelled" and exam["cancel_reason"] == "never came"
    again = post(desk, f"/exams/{accession}/cancel", {"reason": "twice"})
    assert again.status_code == 409


@pytest.mark.parametrize("name, data, media_type", [
    ("scan.jpg", image_bytes("JPEG"), "image/jpeg"),
    ("scan.pdf", image_bytes("PNG"), "image/png"),  # the content decides, not the name
    ("form.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "application/pdf"),
])
def test_request_form_accepted_by_content(client_as, conn, app, name, data, media_type) -> None:
    import io
    desk = client_as("registrar")
    accession = register(desk)
    response = post(desk, f"/exams/{accession}/request-forms", {"file": (io.BytesIO(data), name)},
                    content_type="multipart/form-data")
    assert response.status_code == 302
    row = conn.execute("SELECT * FROM request_forms").fetchone()
    assert row["media_type"] == media_type and row["size"] == len(data)
    assert name not in row["storage_path"] and row["storage_path"].startswith("forms/")
    served = desk.get(f"/exams/{accession}/request-forms/{row['id']}")
    assert served.status_code == 200 and served.data == data and served.mimetype == media_type
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert audit.search(conn, action="exam.request_form")[0]["patient_id"] == "P0001"


@pytest.mark.parametrize("name, data", [
    ("evil.jpg", b"<html><script>alert(1)</script></html>"),
    ("truncated.png", image_bytes("PNG", (300, 300))[:200]),
    ("empty.png", b""),
    ("fake.pdf", b"%PDF-1.4 but never ends"),
])
def test_request_form_rejected_changes_nothing(client_as, conn, app, name, data) -> None:
    import io
    from pathlib import Path
    desk = client_as("registrar")
    accession = register(desk)
    response = post(desk, f"/exams/{accession}/request-forms", {"file": (io.BytesIO(data), name)},
                    content_type="multipart/form-data")
    assert response.status_code == 400
    assert 'id="e-file"' in response.get_data(as_text=True)
    assert count(conn, "request_forms") == 0
    forms_dir = Path(app.config["STORAGE_DIR"]) / "forms"
    assert not forms_dir.exists() or not any(p.is_file() for p in forms_dir.rglob("*"))


def test_request_form_over_the_limit(client_as, conn, app) -> None:
    import io
    app.config["REQUEST_FORM_MAX_BYTES"] = 1000
    desk = client_as("registrar")
    accession = register(desk)
    response = post(desk, f"/exams/{accession}/request-forms", {"file": (io.BytesIO(image_bytes("PNG", (200, 200)) + b"x" * 2000), "big.png")},
                    content_type="multipart/form-data")
    assert response.status_code == 400 and count(conn, "request_forms") == 0


def test_receipt_contents_and_print_audit(client_as, conn) -> None:
    desk = client_as("registrar")
    accession = register(desk, birth_date="1980-02-03", modality="DR", scheduled_date="2026-11-24",
                         scheduled_time="08:00")
    page = desk.get(f"/exams/{accession}/receipt").get_data(as_text=True)
    assert accession in page and "张三" in page and "P0001" in page and "Outpatient" in page
    assert "2026-11-24 09:00" in page  # DR: report ready one hour after the scheduled time
    assert "Radiology department, DR room" in page
    assert f"/exams/{accession}/barcode.svg" in page and "receipt-80mm.css" in page
    assert "receipt-a5.css" in desk.get(f"/exams/{accession}/receipt?format=a5").get_data(as_text=True)
    prints = audit.search(conn, action="exam.receipt_print")
    assert len(prints) == 2 and prints[0]["patient_id"] == "P0001"
    svg = desk.get(f"/exams/{accession}/barcode.svg")
    assert svg.mimetype == "image/svg+xml" and svg.data.count(b"<rect") > 20


def test_ages() -> None:
    from datetime import date

    from pacslite.ris.receipts import Age, age_on
    today = date(2026, 11, 24)
    assert age_on(date(1980, 11, 25), today) == Age(45, "years")
    assert age_on(date(1980, 11, 24), today) == Age(46, "years")
    assert age_on(date(2025, 6, 1), today) == Age(17, "months")
    assert age_on(date(2026, 10, 1), today) == Age(54, "days")
