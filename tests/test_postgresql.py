"""PostgreSQL beside SQLite: the move of an installation (``flask db copy``), the dialect's
translations, and the write lock that keeps the audit chain in order with several writers.

These run in both suites: they start the private PostgreSQL cluster themselves when the suite
runs on SQLite.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pacslite import create_app
from pacslite.core import audit, db, dialect
from pacslite.pacs import filing
from pacslite.pacs.index import Source
from pacslite.ris import patients
from tests import databases
from tests.conftest import EXAM_FORM, INDEPENDENT_OF_HOST_AND_HOUR, ROOT, make_user, wait_for
from tests.dicomkit import make_ct


def _flask(instance: Path, *args: str, url: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PACSLITE_INSTANCE_DIR": str(instance), "PACSLITE_DATABASE_URL": url,
           **{f"PACSLITE_{k}": str(v) for k, v in INDEPENDENT_OF_HOST_AND_HOUR.items()}}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _sqlite_installation(tmp_path: Path):
    """A SQLite installation in use: accounts, an exam with filed images, a quarantined study."""
    instance = tmp_path / "old"
    app = create_app({"INSTANCE_DIR": str(instance), "DATABASE_URL": "", "TIMEZONE": "Asia/Shanghai",
                      **INDEPENDENT_OF_HOST_AND_HOUR})
    conn = db.connect(app.config["DATABASE"])
    make_user(conn, "rad", "radiologist")
    data = {**EXAM_FORM, "name": "李雷"}
    accession = patients.register_exam(conn, audit.SYSTEM, app.config, data, data).accession_number
    for number, (exam, patient) in enumerate([(accession, "P0001"), (accession, "P0001"), ("NOPE", "X9")], start=1):
        path = tmp_path / f"{number}.dcm"
        make_ct(path, accession=exam, patient_id=patient, instance_number=number)
        filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source("CT01", "127.0.0.1"))
    return app, conn


def test_an_installation_moves_from_sqlite_to_postgresql_with_every_row(tmp_path) -> None:
    app, old = _sqlite_installation(tmp_path)
    instance = Path(app.config["INSTANCE_DIR"])
    url = databases.empty_database(tmp_path / "new")

    moved = _flask(instance, "db", "copy", "--to", url)
    assert moved.returncode == 0, moved.stderr
    assert "every table's count matches" in moved.stdout and "the audit chain verifies in the copy" in moved.stdout
    new = db.connect(url)
    tables = db.table_names(old)
    assert db.table_names(new) == tables and len(tables) > 40
    for table in tables:
        assert [tuple(r) for r in new.execute(f"SELECT * FROM {table} ORDER BY 1")] == \
            [tuple(r) for r in old.execute(f"SELECT * FROM {table} ORDER BY 1")], table
    assert new.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 3

    # pacslite on the copy: new rows continue after the copied ids; the chain goes on and verifies
    moved_app = create_app({"INSTANCE_DIR": str(instance), "DATABASE_URL": url, **INDEPENDENT_OF_HOST_AND_HOUR})
    assert moved_app.config["DATABASE"] == url
    last_exam = old.execute("SELECT MAX(id) FROM exams").fetchone()[0]
    data = {**EXAM_FORM, "patient_id": "P0002"}
    reg = patients.register_exam(new, audit.SYSTEM, moved_app.config, data, data)
    assert patients.get_exam(new, reg.accession_number)["id"] == last_exam + 1
    verified = _flask(instance, "audit", "verify", url=url)
    assert verified.returncode == 0 and "audit log intact" in verified.stdout, verified.stderr

    # a second copy into the database in use is refused, and changes nothing
    count = new.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    again = _flask(instance, "db", "copy", "--to", url)
    assert again.returncode == 1 and "the target is not empty" in again.stderr
    assert new.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == count
    new.close()
    old.close()


def test_a_row_that_does_not_fit_stops_the_copy_and_leaves_the_target_empty(tmp_path) -> None:
    app, old = _sqlite_installation(tmp_path)
    # SQLite keeps any value in any column; PostgreSQL does not take text for a number
    old.execute("UPDATE instances SET size = 'large' WHERE id = (SELECT MAX(id) FROM instances)")
    url = databases.empty_database(tmp_path / "new")
    failed = _flask(Path(app.config["INSTANCE_DIR"]), "db", "copy", "--to", url)
    assert failed.returncode == 1 and "the copy failed and was rolled back" in failed.stderr
    assert "instances" in failed.stderr
    new = db.connect(url)
    assert all(new.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] == 0 for t in db.table_names(new))
    new.close()
    old.close()
    # a database that cannot be reached: the command says so, without a traceback
    unreachable = _flask(Path(app.config["INSTANCE_DIR"]), "db", "copy", "--to", url.rsplit("/", 1)[0] + "/no_such_db")
    assert unreachable.returncode == 1 and "no_such_db" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr, unreachable.stderr


def test_the_schema_on_postgresql_is_sqlites_table_for_table_and_column_for_column(tmp_path) -> None:
    """The PostgreSQL baseline (migrations/postgresql/) and the SQLite migrations give the same
    tables, columns and indexes; a column added to one and not the other fails here."""
    lite = db.connect(tmp_path / "schema.db")
    db.migrate(lite)
    pg = db.connect(databases.empty_database(tmp_path / "pg"))
    db.migrate(pg)
    assert db.schema_version(pg) == db.schema_version(lite) == len(db.migrations())
    for table in db.table_names(lite):
        lite_columns = [r[1] for r in lite.execute(f"PRAGMA table_info({table})")]
        pg_columns = [r[0] for r in pg.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ? ORDER BY ordinal_position", (table,))]
        assert pg_columns == lite_columns, table
    lite_indexes = {r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                               " AND name NOT LIKE 'sqlite_%'")}
    pg_indexes = {r[0] for r in pg.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    assert lite_indexes <= pg_indexes
    assert db.table_names(pg) == db.table_names(lite)


@pytest.mark.parametrize("sql, translated", [
    ("SELECT * FROM t WHERE a = ? AND b LIKE ? ESCAPE '\\'", "SELECT * FROM t WHERE a = %s AND b ILIKE %s ESCAPE '\\'"),
    ("SELECT '50%', ':not_a_name', '?' FROM t WHERE a = :a", "SELECT '50%%', ':not_a_name', '?' FROM t WHERE a = %(a)s"),
    ("INSERT OR IGNORE INTO t (a) VALUES (?)", "INSERT INTO t (a) VALUES (%s) ON CONFLICT DO NOTHING"),
    ("SELECT x FROM exams INDEXED BY exams_x WHERE +state = 'open'", "SELECT x FROM exams  WHERE state = 'open'"),
    ("SELECT 1 FROM t WHERE a IS NOT ? OR b IS ?", "SELECT 1 FROM t WHERE a IS DISTINCT FROM %s OR b IS NOT DISTINCT FROM %s"),
    ("SELECT ?2, ?1 -- a comment's ? stays\n", "SELECT %(p2)s, %(p1)s -- a comment's ? stays"),
])
def test_statements_are_translated_outside_quotes_only(sql: str, translated: str) -> None:
    assert dialect.statement(sql).sql == translated


def test_writers_in_several_processes_keep_the_audit_chain_in_order(tmp_path) -> None:
    """The write lock (an advisory lock held by every write transaction) orders the chain:
    three processes and three threads each append audit rows at once; the chain verifies."""
    url = databases.empty_database(tmp_path / "pg")
    app = create_app({"INSTANCE_DIR": str(tmp_path / "instance"), "DATABASE_URL": url, **INDEPENDENT_OF_HOST_AND_HOUR})
    files = db.files_dir(db.connect(url))
    writer = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from pacslite.core import audit, db\n"
              f"db.keep_files_in({url!r}, {str(files)!r})\n"
              f"conn = db.connect({url!r})\n"
              "for i in range(60):\n"
              "    with db.transaction(conn):\n"
              "        audit.record(conn, audit.Actor(sys.argv[1]), 'test.write', str(i))\n")
    processes = [subprocess.Popen([sys.executable, "-c", writer, f"process{n}"]) for n in range(3)]

    def thread_writes(name: str) -> None:
        conn = db.connect(url)
        for i in range(60):
            with db.transaction(conn):
                audit.record(conn, audit.Actor(name), "test.write", str(i))
        conn.close()
    threads = [threading.Thread(target=thread_writes, args=(f"thread{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    conn = db.connect(app.config["DATABASE"])
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'test.write'").fetchone()[0] == 360
    assert audit.verify(conn) is None
    conn.close()


def test_a_web_requests_connection_is_kept_for_the_next_but_never_one_holding_a_duty(tmp_path) -> None:
    url = databases.empty_database(tmp_path / "pg")
    first = db.connect(url, pooled=True)
    server_process = first.execute("SELECT pg_backend_pid()").fetchone()[0]
    first.close()
    again = db.connect(url, pooled=True)
    assert again.execute("SELECT pg_backend_pid()").fetchone()[0] == server_process  # no new server process
    assert db.take_duty(again, "test-duty")
    again.close()  # the duty's lock goes with its connection
    other = db.connect(url, pooled=True)
    assert other.execute("SELECT pg_backend_pid()").fetchone()[0] != server_process
    wait_for(lambda: db.take_duty(other, "test-duty"), "the closed connection's server process ended")
    other.close()


def test_a_nul_in_a_search_or_a_path_finds_nothing_on_either_database(client_as) -> None:
    """PostgreSQL's text cannot hold NUL: a hostile query is an ordinary search, not a 500."""
    desk = client_as("registrar")
    assert desk.get("/exams?q=a%00b").status_code == 200
    assert desk.get("/exams?department=%00x").status_code == 200
    assert desk.get("/exams/A%00B").status_code == 404
