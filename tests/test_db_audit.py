"""Database: pragmas, migrations that keep rows; the audit chain and its verification."""
import re
import threading
import time
from pathlib import Path

import pytest

from pacslite.core import audit, db
from pacslite.ris import users
from tests import databases
from tests.conftest import make_user


def test_connection_settings(conn) -> None:
    if databases.ON_POSTGRESQL:
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "30s"
        assert conn.execute("SHOW TimeZone").fetchone()[0] == "UTC"
        assert not conn.in_transaction
    else:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == db.BUSY_TIMEOUT_MS
    assert db.schema_version(conn) == len(db.migrations())


def test_upgrading_an_old_database_keeps_its_rows(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "old.db")
    assert db.migrate(conn, target=1) == [1]
    with db.transaction(conn):  # an account as version 1 wrote it (today's code writes later columns)
        now = "2024-01-01T00:00:00+00:00"
        user_id = conn.execute("INSERT INTO users (username, display_name, password_hash, session_token, created_at,"
                               " updated_at) VALUES ('early', '', 'x', 'token', ?, ?)", (now, now)).lastrowid
        conn.execute("INSERT INTO user_roles (user_id, role) VALUES (?, 'registrar')", (user_id,))
        audit.record(conn, audit.SYSTEM, "user.create", "user:early", detail={"roles": ["registrar"]})
    chain_before = conn.execute("SELECT id, hash FROM audit_log").fetchall()

    applied = db.migrate(conn)

    assert applied == list(range(2, len(db.migrations()) + 1))
    assert users.by_username(conn, "early").roles == {"registrar"}
    assert conn.execute("SELECT id, hash FROM audit_log").fetchall() == chain_before
    assert audit.verify(conn) is None
    assert db.migrate(conn) == []  # idempotent


def _without_table_rebuilds(sql: str) -> str:
    """SQLite's way to change a constraint: copy every row into T_NEW, drop T, rename T_NEW to
    T. Such a rebuild keeps every row; anything else that drops or renames is destructive."""
    for name in re.findall(r"DROP TABLE (\w+);", sql):
        copy = f"INSERT INTO {name}_NEW SELECT * FROM {name};"
        drop, rename = f"DROP TABLE {name};", f"ALTER TABLE {name}_NEW RENAME TO {name};"
        if copy in sql and sql.index(copy) < sql.index(drop) < sql.index(rename):
            sql = sql.replace(drop, "").replace(rename, "")
    return sql


def test_migrations_are_never_destructive() -> None:
    for _, path in db.migrations():
        sql = _without_table_rebuilds(re.sub(r"\s+", " ", re.sub(r"--[^\n]*", "", path.read_text())).upper())
        for forbidden in ("DROP TABLE", "DROP COLUMN", "DELETE FROM", "ALTER TABLE .* RENAME"):
            assert not re.search(forbidden, sql), f"{path.name}: {forbidden}"


def test_a_failed_transaction_leaves_nothing(conn) -> None:
    before = conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    with pytest.raises(RuntimeError):
        with db.transaction(conn):
            audit.record(conn, audit.SYSTEM, "test.action")
            raise RuntimeError("boom")
    assert conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == before


def test_audit_must_share_the_transaction_of_the_change(conn) -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit.record(conn, audit.SYSTEM, "test.action")


def test_audit_rows_cannot_be_changed_or_deleted(conn) -> None:
    make_user(conn, "someone", "clinician")
    with pytest.raises(db.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'x'")
    with pytest.raises(db.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log")


def test_verify_names_the_first_tampered_row(conn) -> None:
    for name in ("a1", "a2", "a3"):
        make_user(conn, name, "clinician")
    rows = conn.execute("SELECT id FROM audit_log ORDER BY id").fetchall()
    assert audit.verify(conn) is None
    # Someone with file access drops the guard and edits the second row of ours.
    target = rows[-2]["id"]
    databases.drop_trigger(conn, "audit_log_no_update", "audit_log")
    conn.execute("UPDATE audit_log SET detail = '{\"roles\": [\"admin\"]}' WHERE id = ?", (target,))
    assert audit.verify(conn) == audit.Problem(target, "rewritten")


def test_cli_audit_verify(app, conn) -> None:
    make_user(conn, "cliuser", "clinician")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0 and "intact" in result.output
    last = conn.execute("SELECT MAX(id) FROM audit_log").fetchone()[0]
    databases.drop_trigger(conn, "audit_log_no_update", "audit_log")
    conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = ?", (last,))
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1 and f"row {last} does not match the chain" in result.output


def _tamper(conn) -> None:
    """What someone with write access to the database file can do: drop the guards."""
    databases.drop_trigger(conn, "audit_log_no_update", "audit_log")
    databases.drop_trigger(conn, "audit_log_no_delete", "audit_log")


def _rechain_with_sha256(conn, from_id: int) -> None:
    """Recompute every hash from ``from_id`` on the way the unkeyed chain did: all an attacker
    without the key file can do to make an edited row fit again."""
    import hashlib
    import json
    prev = conn.execute("SELECT hash FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT 1", (from_id,)).fetchone()
    prev_hash = prev[0] if prev else audit.GENESIS
    for r in conn.execute("SELECT * FROM audit_log WHERE id >= ? ORDER BY id", (from_id,)).fetchall():
        content = [r["at"], r["actor"], r["address"], r["action"], r["target"], r["patient_id"], r["outcome"],
                   r["detail"]]
        digest = hashlib.sha256((prev_hash + json.dumps(content, ensure_ascii=False, separators=(",", ":"),
                                                        sort_keys=True)).encode()).hexdigest()
        conn.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE id = ?", (prev_hash, digest, r["id"]))
        prev_hash = digest


def test_a_rewritten_row_is_found_even_with_the_later_hashes_recomputed(app, conn) -> None:
    """Case 13: editing a row and recomputing the chain after it passed the unkeyed check."""
    for name in ("b1", "b2", "b3", "b4"):
        make_user(conn, name, "clinician")
    target = conn.execute("SELECT id FROM audit_log WHERE target = 'user:b2'").fetchone()[0]
    _tamper(conn)
    conn.execute("UPDATE audit_log SET actor = 'nobody' WHERE id = ?", (target,))
    _rechain_with_sha256(conn, target)
    assert audit.verify(conn) == audit.Problem(target, "rewritten")
    key_file = db.files_dir(conn) / "audit_key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_deleting_the_newest_rows_is_found_by_the_anchor(app, conn) -> None:
    """Case 13: deleting the newest 50 rows left an intact (shorter) chain."""
    for n in range(60):
        make_user(conn, f"c{n}", "clinician")
    anchored = audit.write_anchor(conn)
    assert anchored is not None and audit.write_anchor(conn) is None  # an unchanged head is not repeated
    assert audit.verify(conn) is None
    _tamper(conn)
    conn.execute("DELETE FROM audit_log WHERE id > ?", (anchored.row_id - 50,))
    problem = audit.verify(conn)
    assert problem == audit.Problem(anchored.row_id, "missing", anchored.at)
    assert "rows are missing" in problem.describe()
    # new rows written since take the deleted ids: the anchor names the row that was replaced
    for n in range(50):
        make_user(conn, f"d{n}", "clinician")
    assert audit.verify(conn) == audit.Problem(anchored.row_id, "replaced", anchored.at)
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1 and f"row {anchored.row_id} differs from its anchor" in result.output


def test_rows_from_before_the_key_stay_verifiable(tmp_path: Path) -> None:
    """An installation upgraded from the unkeyed chain: its old rows keep plain SHA-256, the
    ones written after the key are keyed, and the whole chain verifies."""
    path = tmp_path / "pacslite.db"
    conn = db.connect(path)
    db.migrate(conn)
    audit._keys[str(path)] = audit.ChainKey(b"", 10**9)  # the old code: every row unkeyed
    make_user(conn, "old1", "clinician")
    make_user(conn, "old2", "clinician")
    old_last = conn.execute("SELECT MAX(id) FROM audit_log").fetchone()[0]
    del audit._keys[str(path)]
    assert not (tmp_path / "audit_key").exists()
    make_user(conn, "new1", "clinician")  # the first change after the upgrade makes the key
    assert audit.chain_key(conn).legacy_until == old_last
    assert audit.verify(conn) is None
    conn.close()


def test_a_backup_carries_the_anchors_and_its_own_head(app, conn) -> None:
    from pacslite.pacs import integrity
    make_user(conn, "e1", "clinician")
    backup = integrity.backup_database(app.config)
    anchors = list(audit.read_anchors(backup.with_name(backup.name + ".anchors")))
    key = (db.files_dir(conn) / "audit_key").read_bytes()
    restored = Path(app.config["INSTANCE_DIR"]).parent / "restored"
    restored.mkdir()
    if databases.ON_POSTGRESQL:  # a custom-format dump, restored by pg_restore into a new database
        assert backup.suffix == ".dump"
        target = databases.restore(backup, restored)
        db.keep_files_in(target, restored)
    else:  # a database file, usable as it is
        target = restored / "pacslite.db"
        target.write_bytes(backup.read_bytes())
    copy = db.connect(target)
    head = audit.head(copy)
    assert anchors and anchors[-1].row_id == head.row_id and anchors[-1].hash == head.hash
    assert audit.verify(copy) == audit.Problem(1, "no_key")  # and no key made for the copy
    assert not (restored / "audit_key").exists() and not (backup.parent / "audit_key").exists()
    # with the instance's key: it verifies against the anchors kept beside the backup
    (restored / "audit_key").write_bytes(key)
    assert audit.verify(copy, backup.with_name(backup.name + ".anchors")) is None
    copy.close()
    main_anchors = list(audit.read_anchors(db.files_dir(conn) / "audit_anchors"))
    assert main_anchors and main_anchors[-1].row_id == head.row_id


def test_group_transaction_shares_one_commit_and_isolates_a_failure(tmp_path) -> None:
    """Writers arriving while a commit is under way are committed together, by one thread,
    each only visible (committed) when its call returns, and one failing writer changes nothing."""
    path = tmp_path / "group.db"
    setup = db.connect(path)
    setup.execute("CREATE TABLE t (name TEXT PRIMARY KEY, thread INTEGER)")
    started, release = threading.Event(), threading.Event()
    results: dict[str, tuple] = {}

    def insert(name: str, fail: bool = False):
        def work(conn):
            conn.execute("INSERT INTO t VALUES (?, ?)", (name, threading.get_ident()))
            if name == "first":
                started.set()
                assert release.wait(30)
            if fail:
                raise ValueError("refused")
            return name
        return work

    def call(name: str, fail: bool = False) -> None:
        conn = db.connect(path)
        try:
            value = db.group_transaction(conn, insert(name, fail))
            seen = db.connect(path)
            results[name] = ("ok", value, seen.execute("SELECT 1 FROM t WHERE name = ?", (name,)).fetchone() is not None)
            seen.close()
        except ValueError as exc:
            results[name] = ("error", str(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=call, args=("first",))]
    threads[0].start()
    assert started.wait(30)
    followers = ["a", "b", "c", "bad", "d"]
    threads += [threading.Thread(target=call, args=(name, name == "bad")) for name in followers]
    for thread in threads[1:]:
        thread.start()
    group = db._groups[setup.execute("PRAGMA database_list").fetchone()[2]]
    deadline = time.monotonic() + 30
    while len(group._waiting) < len(followers):  # every follower queued behind the first commit
        assert time.monotonic() < deadline
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(30)
    assert results == {"first": ("ok", "first", True), "a": ("ok", "a", True), "b": ("ok", "b", True),
                       "c": ("ok", "c", True), "d": ("ok", "d", True), "bad": ("error", "refused")}
    rows = dict(setup.execute("SELECT name, thread FROM t").fetchall())
    assert sorted(rows) == ["a", "b", "c", "d", "first"]
    assert len({rows[name] for name in "abcd"}) == 1, "the followers were written in one transaction"



def test_exams_are_migrated_to_the_state_their_data_says(tmp_path: Path) -> None:
    """Issue 15: registered → scheduled; images without a report → in progress; reported →
    preliminary or final (an amended final report marked so); cancelled stays."""
    from tests.conftest import EXAM_FORM
    conn = db.connect(tmp_path / "old.db")
    db.migrate(conn, target=16)
    with conn:
        conn.execute("INSERT INTO patients (patient_id, name, name_pinyin, sex, created_at, updated_at)"
                     " VALUES ('M1', '张三', 'zhang san', 'M', '2026-01-01', '2026-01-01')")
    states = {}
    for accession, old in (("A1", "registered"), ("A2", "images_received"), ("A3", "images_received"),
                           ("A4", "images_received"), ("A5", "cancelled"), ("A6", "completed")):
        with conn:
            conn.execute(
                "INSERT INTO exams (accession_number, patient_ref, modality, dicom_modality, source, procedure,"
                " priority, scheduled_at, study_instance_uid, status, registered_at, registered_by, updated_at)"
                " VALUES (?, 1, 'CT', 'CT', 'outpatient', ?, 'routine', '2026-01-01T00:00:00', ?, ?, '2026-01-01',"
                " 'x', '2026-01-01')", (accession, EXAM_FORM["procedure"], f"1.2.{len(states)}", old))
        states[accession] = old
    versions = {"A3": [("preliminary", None)], "A4": [("final", "2026-01-02"), ("final", "2026-01-03")],
                "A6": [("final", "2026-01-02")]}
    for accession, rows in versions.items():
        for number, (status, signed) in enumerate(rows, start=1):
            with conn:
                conn.execute("INSERT INTO report_versions (exam_ref, version, status, revision, created_at, created_by,"
                             " updated_at, updated_by, preliminary_at, signed_at, signed_by, amendment_reason)"
                             " SELECT id, ?, ?, 1, 'x', 'x', 'x', 'x', ?, ?, ?, ? FROM exams WHERE accession_number = ?",
                             (number, status, "2026-01-02" if status == "preliminary" else None, signed,
                              "dr" if signed else None, "" if number == 1 else "typo", accession))
    db.migrate(conn)
    got = {r[0]: (r[1], r[2] is not None) for r in conn.execute(
        "SELECT accession_number, status, amended_at FROM exams ORDER BY accession_number")}
    assert got == {"A1": ("scheduled", False), "A2": ("in_progress", False), "A3": ("preliminary", False),
                   "A4": ("final", True), "A5": ("cancelled", False), "A6": ("final", False)}


def test_audit_search_by_action_prefix_merges_the_codes_newest_first(conn) -> None:
    with db.transaction(conn):
        for action in ("image.refile", "image.view", "image.refile_undo", "report.sign", "image.refile", "image.view"):
            audit.record(conn, audit.SYSTEM, action)
    found = [(r["id"], r["action"]) for r in audit.search(conn, action="IMAGE.RE")]
    assert [a for _, a in found] == ["image.refile", "image.refile_undo", "image.refile"]
    assert [i for i, _ in found] == sorted((i for i, _ in found), reverse=True)
    assert [r["action"] for r in audit.search(conn, action="image.re", limit=2)] == ["image.refile",
                                                                                     "image.refile_undo"]
    older = audit.search(conn, action="image", before_id=found[1][0])
    assert [r["action"] for r in older] == ["image.view", "image.refile"]
    assert audit.search(conn, action="nothing.like.this") == []
    assert len(audit.search(conn, action="image.refile%")) == 0  # no wildcards: the text is a prefix


def test_two_nodes_making_the_chain_key_at_once_end_with_the_same_one(tmp_path) -> None:
    """On the shared store two processes may start at once: the second keeps the first's key,
    and nobody reads a half-written file (it is linked into place whole)."""
    first = audit._make_key(tmp_path / "audit_key", audit.ChainKey(b"1" * 32, 0))
    second = audit._make_key(tmp_path / "audit_key", audit.ChainKey(b"2" * 32, 0))
    assert first == second == audit._read_key(tmp_path / "audit_key")
    assert [p.name for p in tmp_path.iterdir()] == ["audit_key"]
    assert (tmp_path / "audit_key").stat().st_mode & 0o777 == 0o600


def _without_waiting_for_locks(conn) -> None:
    """A lock this connection cannot have at once is an error, not a wait."""
    if db.dialect_of(conn) == "postgresql":
        conn.execute("SET lock_timeout = '100ms'")
    else:
        conn.execute("PRAGMA busy_timeout = 0")


def test_idle_duties_look_without_taking_the_write_lock(app, conn) -> None:
    """Routing, storage commitment reports and film printing poll every few seconds and nearly
    always find nothing: that must not queue behind (nor hold) the write lock images need."""
    from pacslite.pacs import commitment, printing, routing
    duty = db.connect(app.config["DATABASE"])
    _without_waiting_for_locks(duty)
    nothing_is_due = lambda *args: pytest.fail("nothing is due")  # noqa: E731
    try:
        db.begin(conn)  # images being filed meanwhile
        assert routing.run_due(duty, app.config, nothing_is_due) == 0
        assert commitment.run_due(duty, app.config, nothing_is_due) == 0
        assert printing.run_due(duty, app.config, nothing_is_due) == 0
        conn.execute("ROLLBACK")
        # a report that is due is claimed under the lock: while another holds it, the duty waits
        # (here, with no waiting allowed, it is refused)
        past = "2000-01-01T00:00:00"
        conn.execute("INSERT INTO commitments (transaction_uid, calling_ae, requested, committed, result, state,"
                     " next_attempt_at, created_at, updated_at) VALUES ('1.2.3', 'MOD', 1, 1, '[]', 'pending', ?, ?, ?)",
                     (past, past, past))
        db.begin(conn)
        with pytest.raises(Exception, match="lock"):
            commitment.run_due(duty, app.config, nothing_is_due)
        conn.execute("ROLLBACK")
    finally:
        duty.close()
