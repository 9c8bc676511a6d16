"""Check-in and queue calling (签到、排队叫号, issue 31): numbers, order, calls, skips, screens."""
from __future__ import annotations

import pytest

from pacslite.core import audit
from pacslite.core.validation import Conflict
from pacslite.ris import aes, patients, queue
from tests.conftest import EXAM_FORM

DESK, TECH = audit.Actor("desk"), audit.Actor("tech")


@pytest.fixture
def room(conn):
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "modality": "CT", "name": "CT room 1"})


def exam(app, conn, patient_id: str, name: str = "王小英", **changes):
    data = {**EXAM_FORM, "patient_id": patient_id, "name": name, "station_ae": "CT01", **changes}
    reg = patients.register_exam(conn, audit.SYSTEM, app.config, data, data, confirm_demographics=True)
    return patients.get_exam(conn, reg.accession_number)


def audited(conn, action: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = ?", (action,)).fetchone()[0]


@pytest.mark.parametrize("name, masked", [("王小英", "王*英"), ("王芳", "王*"), ("欧阳小明", "欧**明"), ("李", "李"),
                                          ("ZHANG SAN", "Z**** S**"), ("WANG^XIAOYING", "W*** X*******"), ("", "")])
def test_names_on_public_screens_are_masked(name, masked) -> None:
    assert queue.mask_name(name) == masked


def test_numbers_per_room_and_day_priorities_first_and_checking_in_twice_changes_nothing(app, conn, room) -> None:
    first = queue.check_in(conn, DESK, app.config, exam(app, conn, "P0001"))
    assert queue.ticket(first) == "CT01-001" and first["rank"] == queue.OTHERS
    again = queue.check_in(conn, DESK, app.config, patients.find_exam(conn, exam_id=first["exam_ref"]))
    assert again["id"] == first["id"] and audited(conn, "queue.check_in") == 1
    disabled = queue.check_in(conn, DESK, app.config, exam(app, conn, "P0002", name="李四"), disabled=True)
    elderly = queue.check_in(conn, DESK, app.config, exam(app, conn, "P0003", name="赵五", birth_date="1940-01-01"))
    emergency = queue.check_in(conn, DESK, app.config, exam(app, conn, "P0004", name="钱六", source="emergency"))
    assert [queue.ticket(e) for e in (disabled, elderly, emergency)] == ["CT01-002", "CT01-003", "CT01-004"]
    assert (disabled["reason"], elderly["reason"], emergency["reason"]) == ("disabled", "elderly", "emergency")
    day = queue.today(app.config)
    assert [queue.ticket(r) for r in queue.line(conn, "CT01", day)] == ["CT01-004", "CT01-002", "CT01-003", "CT01-001"]


def test_an_ordered_exam_is_checked_in_by_the_queue_and_a_started_one_is_refused(app, conn, room) -> None:
    from tests.test_check_in import place
    accession = place(app, conn, "ORD0100", station_ae="CT01")
    ordered = patients.get_exam(conn, accession)
    assert ordered["status"] == "ordered"
    entry = queue.check_in(conn, DESK, app.config, ordered)
    assert patients.get_exam(conn, accession)["status"] == "scheduled"  # the worklist offers it now
    assert audited(conn, "exam.check_in") == 1 and entry["room"] == "CT01"
    queue.start(conn, TECH, entry["id"])
    started = exam(app, conn, "P0101")
    conn.execute("UPDATE exams SET status = 'in_progress' WHERE id = ?", (started["id"],))  # as an image would
    with pytest.raises(Conflict):
        queue.check_in(conn, DESK, app.config, started)
    assert queue.entry_of(conn, started["id"], queue.today(app.config)) is None


def test_calling_skipping_and_starting_in_order_every_step_audited(app, conn, room) -> None:
    day = queue.today(app.config)
    entries = [queue.check_in(conn, DESK, app.config, exam(app, conn, f"P00{n:02d}", name=f"张{n}号")) for n in range(6)]
    called = queue.call_next(conn, TECH, "CT01", day)
    assert called["id"] == entries[0]["id"] and called["state"] == queue.CALLED and called["calls"] == 1
    queue.call_again(conn, TECH, called["id"])
    assert queue.get_entry(conn, called["id"])["calls"] == 2
    queue.skip(conn, TECH, app.config, called["id"])  # missed: back behind three others (QUEUE_SKIP_BACK)
    order = [r["id"] for r in queue.line(conn, "CT01", day)]
    assert order == [entries[1]["id"], entries[2]["id"], entries[3]["id"], entries[0]["id"], entries[4]["id"],
                     entries[5]["id"]]
    boards = queue.board(conn, ["CT01"], day)
    assert boards[0].now is None and [r["id"] for r in boards[0].missed] == [entries[0]["id"]]
    assert [r["id"] for r in boards[0].following] == [e["id"] for e in entries[1:4]]
    with pytest.raises(Conflict):
        queue.skip(conn, TECH, app.config, entries[0]["id"])  # not called now
    second = queue.call_next(conn, TECH, "CT01", day)
    assert queue.board(conn, ["CT01"], day)[0].now["id"] == second["id"] == entries[1]["id"]
    queue.start(conn, TECH, second["id"])
    assert patients.find_exam(conn, exam_id=second["exam_ref"])["status"] == "in_progress"
    with pytest.raises(Conflict):
        queue.start(conn, TECH, second["id"])
    assert [audited(conn, a) for a in ("queue.call", "queue.call_again", "queue.skip", "queue.start")] == [2, 1, 1, 1]


def test_a_screen_key_opens_only_its_screen_and_a_revoked_one_nothing(app, conn) -> None:
    key = queue.create_device(conn, audit.Actor("admin"), queue.SCREEN, {"name": "CT waiting room", "rooms": "ct01, ct02"})
    screen = queue.device(conn, queue.SCREEN, key)
    assert screen["rooms"] == "CT01,CT02"
    assert queue.device(conn, queue.KIOSK, key) is None and queue.device(conn, queue.SCREEN, key + "x") is None
    assert key not in str([tuple(r) for r in conn.execute("SELECT * FROM queue_screens")])  # only its hash is kept
    queue.revoke(conn, audit.Actor("admin"), screen["id"])
    assert queue.device(conn, queue.SCREEN, key) is None


def test_desk_technologist_screen_and_kiosk_on_the_pages(app, conn, client_as, room) -> None:
    from tests.conftest import post, register
    admin, desk, tech = client_as("admin"), client_as("registrar"), client_as("technologist")
    made = post(admin, "/admin/screens", {"kind": "screen", "name": "CT hall", "rooms": "CT01"}).get_data(as_text=True)
    screen_url = made.split('id="device-url">')[1].split("<")[0]
    screen_path = "/" + screen_url.split("/", 3)[3]
    kiosk_page = post(admin, "/admin/screens", {"kind": "kiosk", "name": "Hall kiosk"}).get_data(as_text=True)
    kiosk_path = "/" + kiosk_page.split('id="device-url">')[1].split("<")[0].split("/", 3)[3]
    assert post(admin, "/admin/screens", {"kind": "screen", "name": "No rooms", "rooms": " "}).status_code == 400

    first = register(desk, patient_id="P0001", name="王小英", station_ae="CT01")
    slip = post(desk, f"/exams/{first}/queue", {}, follow_redirects=True).get_data(as_text=True)
    assert 'id="slip-ticket">CT01-001<' in slip and "CT room 1" in slip
    hostile = register(desk, patient_id="P0002", name="<script>x</script>", station_ae="CT01")
    # the kiosk: an unknown receipt is refused, a known one checked in with the next number
    anonymous = app.test_client()
    from tests.conftest import csrf_token
    token = csrf_token(anonymous, kiosk_path)
    assert anonymous.post(kiosk_path, data={"accession": "NOPE", "csrf_token": token}).status_code == 404
    checked = anonymous.post(kiosk_path, data={"accession": hostile, "csrf_token": token}).get_data(as_text=True)
    assert "CT01-002" in checked
    assert conn.execute("SELECT actor FROM audit_log WHERE action = 'queue.check_in' ORDER BY id DESC"
                        " LIMIT 1").fetchone()[0] == "kiosk:Hall kiosk"

    # the screen, anonymously: nobody called yet; the technologist calls; the screen shows the
    # masked name and the room, and nothing else of the patient
    board = anonymous.get(screen_path).get_data(as_text=True)
    assert "Please wait to be called" in board and "王*英" in board and "王小英" not in board
    assert post(tech, "/queue/CT01/call-next", {}).status_code == 302
    board = anonymous.get(screen_path + "/board").get_data(as_text=True)
    assert 'class="board-ticket">CT01-001<' in board and "王*英" in board and "CT room 1" in board
    assert "王小英" not in board and "P0001" not in board and first not in board
    assert "<script>x" not in board and "&lt;*" in board  # a hostile name, masked and escaped
    entry = queue.entry_of(conn, patients.get_exam(conn, first)["id"], queue.today(app.config))
    assert post(tech, f"/queue/entries/{entry['id']}/start", {}).status_code == 302
    assert patients.get_exam(conn, first)["status"] == "in_progress"
    room_page = tech.get("/queue/CT01").get_data(as_text=True)
    assert "CT01-002" in room_page and 'id="call-next"' in room_page

    # a revoked screen opens nothing
    screen_id = conn.execute("SELECT id FROM queue_screens WHERE name = 'CT hall'").fetchone()[0]
    assert post(admin, f"/admin/screens/{screen_id}/revoke", {}).status_code == 302
    assert anonymous.get(screen_path).status_code == 404
