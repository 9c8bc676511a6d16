"""Accounts (issue 19): a password an administrator set is changed at the next login; users
change their own password; every problem with the new one is shown at once."""
from __future__ import annotations

from pacslite.core import audit
from pacslite.ris import users
from tests.conftest import PASSWORD, csrf_token, login, make_user, post, register


def change(client, current: str, new: str, again: str | None = None):
    return client.post("/account/password", data={"current_password": current, "new_password": new,
                                                  "new_password_again": new if again is None else again,
                                                  "csrf_token": csrf_token(client, "/account/password")})


def test_a_password_the_admin_set_is_changed_at_the_first_login(app, conn, client_as) -> None:
    admin = client_as("admin", username="boss")
    created = post(admin, "/admin/users/new", {"username": "desk2", "display_name": "登记台二",
                                               "password": "given-by-admin-1", "roles": ["registrar"]})
    assert created.status_code == 302 and users.by_username(conn, "desk2").must_change_password
    desk = app.test_client()
    assert login(desk, "desk2", "given-by-admin-1").status_code == 302
    # every page leads to the password page until the password is changed; logging out does not
    assert desk.get("/exams").location.endswith("/account/password")
    assert desk.get("/exams/new", headers={"HX-Request": "true"}).headers["HX-Redirect"].endswith("/account/password")
    page = desk.get("/account/password").get_data(as_text=True)
    assert 'id="password-required"' in page

    refused = change(desk, "wrong-current", "desk2-short", "other")
    text = refused.get_data(as_text=True)
    assert refused.status_code == 400
    for message in ("This is not your current password.", "The password must not contain the user name.",
                    "The two new passwords differ."):  # all at once, each under its field
        assert message in text, message
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'user.change_password'"
                        " AND outcome = 'denied'").fetchone()[0] == 1
    assert change(desk, "given-by-admin-1", "given-by-admin-1").status_code == 400  # not the same again
    assert "At least 8 characters." in change(desk, "given-by-admin-1", "short").get_data(as_text=True)

    assert change(desk, "given-by-admin-1", "my-own-secret-9").status_code == 302
    assert desk.get("/exams").status_code == 200  # the session goes on with the new token
    assert not users.by_username(conn, "desk2").must_change_password
    assert login(app.test_client(), "desk2", "given-by-admin-1").status_code == 200  # the old one no longer
    assert login(app.test_client(), "desk2", "my-own-secret-9").status_code == 302

    # a reset by the administrator requires a change again
    desk2 = users.by_username(conn, "desk2")
    assert post(admin, f"/admin/users/{desk2.id}/password", {"password": "reset-by-admin-2"}).status_code == 302
    again = app.test_client()
    login(again, "desk2", "reset-by-admin-2")
    assert again.get("/patients").location.endswith("/account/password")


def test_users_change_their_own_password_and_other_sessions_end(app, conn) -> None:
    make_user(conn, "tech9", "technologist")  # created by the command line: not forced
    first, second = app.test_client(), app.test_client()
    login(first, "tech9")
    login(second, "tech9")
    assert first.get("/exams").status_code == 200
    assert change(first, PASSWORD, "tech-new-password-1").status_code == 302
    assert first.get("/exams").status_code == 200
    assert second.get("/exams").status_code == 302  # the other session was ended
    detail = conn.execute("SELECT detail FROM audit_log WHERE action = 'user.change_password'"
                          " AND outcome = 'success'").fetchone()[0]
    assert '"was_required": false' in detail


def test_a_new_password_may_not_contain_the_user_name(app, conn, client_as) -> None:
    admin = client_as("admin", username="boss")
    refused = post(admin, "/admin/users/new", {"username": "zhang", "password": "zhang-123456",
                                               "roles": ["clinician"]})
    assert refused.status_code == 400 and "must not contain the user name" in refused.get_data(as_text=True)
    assert users.by_username(conn, "zhang") is None


def test_an_api_token_is_not_held_up_by_a_pending_password_change(app, conn) -> None:
    users.create(conn, audit.SYSTEM, {"username": "his2", "password": "his-password-1", "roles": ["registrar"],
                                      "must_change_password": True})
    token = users.create_token(conn, audit.SYSTEM, "his2")
    answer = app.test_client().get("/api/v1/alerts", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200


def test_a_clinician_starts_on_the_own_departments_exams_and_sees_reports_ready(app, conn, client_as,
                                                                               tmp_path) -> None:
    """Wards (issue 19): the exam list opens on the clinician's department (all stay one choice
    away); a final report is marked ready; the exam page shows the report inline, a preliminary
    one marked as such."""
    from pacslite.ris import patients, reports
    from tests.test_reports import add_image
    desk = client_as("registrar")
    mine = register(desk, requesting_department="心内科", patient_id="P7001", name="王五")
    other = register(desk, requesting_department="骨科", patient_id="P7002", name="赵六")
    ward = client_as("clinician", username="cardio")
    conn.execute("UPDATE users SET department = '心内科' WHERE username = 'cardio'")
    conn.commit()
    listed = ward.get("/exams").get_data(as_text=True)
    assert mine in listed and other not in listed
    everything = ward.get("/exams?department=*").get_data(as_text=True)
    assert mine in everything and other in everything
    assert other in desk.get("/exams").get_data(as_text=True)  # a registrar sees every department

    add_image(app, conn, tmp_path, mine, patient_id="P7001")
    make_user(conn, "dr_ward_test", "radiologist")
    texts = {"findings": "Cardiomegaly.", "impression": "Enlarged heart."}
    reports.sign(conn, audit.Actor("dr_ward_test"), patients.get_exam(conn, mine),
                 {"level": "preliminary", "revision": "0", **texts}, app.config)
    page = ward.get(f"/exams/{mine}").get_data(as_text=True)
    assert 'id="preliminary-mark"' in page and "Enlarged heart." in page and "Report ready" not in page
    reports.sign(conn, audit.Actor("dr_ward_test"), patients.get_exam(conn, mine),
                 {"level": "final", "result_class": "abnormal", "revision": "1", **texts}, app.config)
    page = ward.get(f"/exams/{mine}").get_data(as_text=True)
    assert 'id="preliminary-mark"' not in page and "Report ready" in page and "Name of dr_ward_test" in page
    assert "Report ready" in ward.get("/exams").get_data(as_text=True)
