"""Image quality control (图像质控, issue 32): a grade per exam on its modality's scale, with
reasons, graded again or taken away (audited); the distribution per technologist, station and
the department's month."""
from __future__ import annotations

import pytest

from pacslite.core import audit, clock
from pacslite.core.validation import ValidationError
from pacslite.ris import patients, quality
from tests.test_reports import register

RAD = audit.Actor("dr_q")


def test_grades_on_the_modalitys_scale_with_reasons(app, conn) -> None:
    ct = patients.get_exam(conn, register(app, conn))
    dr = patients.get_exam(conn, register(app, conn, modality="DR", procedure="Chest PA"))
    quality.grade(conn, RAD, ct, "2", ["artefacts"])
    quality.grade(conn, RAD, dr, "b", ["positioning", "exposure"])
    assert (quality.of_exam(conn, ct["id"])["grade"], quality.of_exam(conn, ct["id"])["reasons"]) == ("2", "artefacts")
    assert quality.of_exam(conn, dr["id"])["reasons"] == "exposure,positioning"
    for exam, wrong, reasons in ((ct, "B", []), (dr, "3", []), (ct, "1", ["blurry"])):
        with pytest.raises(ValidationError):
            quality.grade(conn, RAD, exam, wrong, reasons)
    quality.grade(conn, RAD, ct, "3")  # graded again
    assert quality.of_exam(conn, ct["id"])["grade"] == "3" and quality.of_exam(conn, ct["id"])["reasons"] == ""
    conn.execute("UPDATE exams SET performed_by = 'tech_a', station_ae = 'CT01' WHERE id = ?", (ct["id"],))
    conn.commit()
    today = clock.local_today(app.config["TIMEZONE"])
    since, until = clock.local_day_bounds(today, app.config["TIMEZONE"])
    found = quality.distribution(conn, since, until, "+480 minutes")
    assert found["technologist"][("tech_a", "score")] == {"3": 1}
    assert found["station"][("CT01", "score")] == {"3": 1} and found["station"][("—", "xray")] == {"B": 1}
    assert list(found["month"]) == [(today.isoformat()[:7], "score"), (today.isoformat()[:7], "xray")]
    quality.grade(conn, RAD, dr, "")  # taken away
    assert quality.of_exam(conn, dr["id"]) is None
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'quality.grade'").fetchone()[0] == 4


def test_graded_on_the_report_page_in_two_keys_worth_of_form(app, conn, client_as, tmp_path) -> None:
    from tests.conftest import csrf_token
    from tests.test_reports import add_image
    accession = register(app, conn)
    add_image(app, conn, tmp_path, accession)
    rad = client_as("radiologist", username="dr_q")
    page = rad.get(f"/exams/{accession}/report").get_data(as_text=True)
    assert 'id="f-image-grade"' in page and 'data-shortcut="q"' in page and "3 · 3 (excellent)" in page
    token = csrf_token(rad, f"/exams/{accession}/report")
    saved = rad.post(f"/exams/{accession}/image-grade", data={"grade": "1", "reasons": ["artefacts", "coverage"]},
                     headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert saved.status_code == 200 and 'id="grade-saved"' in saved.get_data(as_text=True)
    assert quality.of_exam(conn, patients.get_exam(conn, accession)["id"])["reasons"] == "artefacts,coverage"
    refused = rad.post(f"/exams/{accession}/image-grade", data={"grade": "A"}, headers={"X-CSRFToken": token})
    assert refused.status_code == 400 and quality.of_exam(conn, patients.get_exam(conn, accession)["id"])["grade"] == "1"
    assert client_as("technologist").post(f"/exams/{accession}/image-grade", data={"grade": "3"},
                                          headers={"X-CSRFToken": token}).status_code == 403


def test_the_statistics_show_the_grades_per_technologist_station_and_month(app, conn, client_as) -> None:
    ct = patients.get_exam(conn, register(app, conn))
    conn.execute("UPDATE exams SET performed_by = 'tech_a', station_ae = 'CT01' WHERE id = ?", (ct["id"],))
    conn.commit()
    quality.grade(conn, RAD, patients.get_exam(conn, ct["accession_number"]), "0", ["artefacts"])
    page = client_as("admin").get("/statistics/workload", headers={"HX-Request": "true"}).get_data(as_text=True)
    table = page.split('id="grades-station"')[1].split("</table>")[0]
    assert "CT01" in table and "0 (not diagnostic): 1" in table and "3 (excellent): 0" in table
    assert "tech_a" in page.split('id="grades-technologist"')[1].split("</table>")[0]
