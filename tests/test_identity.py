"""Patient identity at the admin's pages: likely duplicates side by side, merged, a patient ID
changed, a merge undone; every step audited; the same domain as HL7 ADT^A40/A47."""
from pacslite.core import audit
from pacslite.ris import patients
from tests.conftest import count, post, register

HOSTILE = '<script>alert(1)</script>'


def owner(conn, accession: str) -> str:
    return conn.execute("SELECT p.patient_id FROM exams e JOIN patients p ON p.id = e.patient_ref"
                        " WHERE e.accession_number = ?", (accession,)).fetchone()[0]


def test_duplicates_are_found_compared_merged_and_the_merge_undone(client_as, conn) -> None:
    desk = client_as("registrar")
    first = register(desk, patient_id="D0001", name="张三", birth_date="1980-02-03")
    second = register(desk, patient_id="D0002", name="张三", birth_date="1980-02-03", phone="13911112222")
    register(desk, patient_id="D0003", name="张三", birth_date="1981-02-03")  # a namesake, not a duplicate
    admin = client_as("admin")
    page = admin.get("/admin/patients/duplicates").get_data(as_text=True)
    assert page.count('href="/admin/patients/compare?') == 1
    assert "a=D0001&amp;b=D0002" in page and "the same name and birth date" in page
    side = admin.get("/admin/patients/compare?a=D0001&b=D0002").get_data(as_text=True)
    assert side.count('class="differs"') == 2  # the phone, on both sides
    assert first in side and second in side
    before = count(conn, "audit_log")
    refused = post(admin, "/admin/patients/merge", {"a": "D0001", "b": "D0002", "prior": "D0001", "survivor": "D0002",
                                                    "reason": ""})
    assert refused.status_code == 400 and count(conn, "audit_log") == before
    merged = post(admin, "/admin/patients/merge", {"a": "D0001", "b": "D0002", "prior": "D0001",
                                                   "survivor": "D0002", "reason": "一人两号"})
    assert merged.status_code == 302 and merged.headers["Location"].endswith("/patients/D0002")
    assert owner(conn, first) == owner(conn, second) == "D0002"
    assert [r["action"] for r in audit.search(conn, patient_id="D0001", action="patient.merge")] == ["patient.merge"]
    assert "compare?a=D0001" not in admin.get("/admin/patients/duplicates").get_data(as_text=True)
    old = admin.get("/patients/D0001").get_data(as_text=True)
    assert 'id="merged-into"' in old and "/patients/D0002" in old
    again = post(admin, "/admin/patients/merge", {"a": "D0001", "b": "D0002", "prior": "D0001", "survivor": "D0002",
                                                  "reason": "again"})
    assert again.status_code == 409 and "was merged into D0002 already" in again.get_data(as_text=True)
    # the desk registering under the old ID reaches the survivor
    third = register(desk, patient_id="D0001", name="张三", birth_date="1980-02-03", phone="13911112222")
    assert owner(conn, third) == "D0002"
    merge_id = conn.execute("SELECT id FROM patient_merges").fetchone()[0]
    undone = post(admin, f"/admin/patients/merges/{merge_id}/undo", {"reason": "两个人"})
    assert undone.status_code == 302
    assert (owner(conn, first), owner(conn, second), owner(conn, third)) == ("D0001", "D0002", "D0002")
    assert patients.find_patient(conn, "D0001")["merged_into"] is None
    assert [r["action"] for r in audit.search(conn, action="patient.merge_undo")] == ["patient.merge_undo"]


def test_a_patient_id_is_changed_and_the_old_one_resolves(client_as, conn) -> None:
    desk = client_as("registrar")
    accession = register(desk, patient_id="C0001", name=HOSTILE)
    admin = client_as("admin")
    page = admin.get("/patients/C0001").get_data(as_text=True)
    assert HOSTILE not in page and 'id="change-id"' in page
    taken = register(desk, patient_id="C0009", name="李四")
    assert owner(conn, taken) == "C0009"
    refused = post(admin, "/admin/patients/C0001/change-id", {"new_patient_id": "C0009", "reason": "typo"},
                   follow_redirects=True)
    assert "A patient with this ID exists already" in refused.get_data(as_text=True)
    assert owner(conn, accession) == "C0001"
    changed = post(admin, "/admin/patients/C0001/change-id", {"new_patient_id": "C0002", "reason": "病人号录错"})
    assert changed.status_code == 302 and changed.headers["Location"].endswith("/patients/C0002")
    assert owner(conn, accession) == "C0002"
    assert patients.resolve_patient(conn, "C0001")["patient_id"] == "C0002"
    assert patients.find_patient(conn, "C0002")["name"] == HOSTILE
