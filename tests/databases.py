"""The database the tests run on: SQLite (the default) or PostgreSQL.

``PACSLITE_TEST_DATABASE=postgresql`` runs the suite on PostgreSQL: a private cluster of Debian's
PostgreSQL 15 (initdb in a temporary folder, listening on 127.0.0.1 only, stopped when the tests
end; ``PACSLITE_TEST_POSTGRESQL_URL`` uses a running server instead), and every instance folder
a test makes gets its own database, copied from a migrated template, dropped after the test.

Processes the tests start inherit the cluster (its address is put in the environment). One in
a private network namespace, where 127.0.0.1 is another machine's, reaches it through its Unix
socket (``PACSLITE_TEST_POSTGRESQL_VIA_SOCKET=1``).
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

ON_POSTGRESQL = os.environ.get("PACSLITE_TEST_DATABASE", "sqlite") == "postgresql"
TEMPLATE = "pacslite_template"
BIN = Path("/usr/lib/postgresql/15/bin")

_lock = threading.Lock()
_server: str | None = None  # postgresql://…/ without a database name
SOCKET = "PACSLITE_TEST_POSTGRESQL_SOCKET"  # "<folder> <port>" of the cluster's Unix socket
_made: list[str] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and the server refuse to run as root: as root, they run as Debian's postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _start_cluster(durable: bool = False) -> str:
    folder = Path(tempfile.mkdtemp(prefix="pacslite-pg-"))
    folder.chmod(0o755)  # its socket is reached from a user namespace too; the data folder stays 0700
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(_as_postgres([str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "pacslite",
                                 "--locale=C.UTF-8", "-E", "UTF8"]), check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c max_connections=400 -c shared_buffers=64MB"
    if not durable:  # a test cluster: a crash of the machine loses it all (pacslite's own kills do not)
        options += " -c fsync=off -c full_page_writes=off"
    subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options,
                                 "-w", "start"]), check=True, capture_output=True)

    def stop() -> None:
        subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    atexit.register(stop)
    os.environ[SOCKET] = f"{folder} {port}"
    return f"postgresql://pacslite@127.0.0.1:{port}/"


def _url(name: str) -> str:
    if os.environ.get("PACSLITE_TEST_POSTGRESQL_VIA_SOCKET"):
        folder, port = os.environ[SOCKET].split()
        return f"postgresql://pacslite@/{name}?host={folder}&port={port}"
    assert _server is not None
    return _server + name


def _admin(sql: str) -> None:
    import psycopg
    with psycopg.connect(_url("postgres"), autocommit=True) as conn:
        conn.execute(sql)


def server(durable: bool = False) -> str:
    """The PostgreSQL server's URL (no database), started on first use, with the template.
    ``durable``: with PostgreSQL's defaults (fsync on), for benchmarks."""
    global _server
    with _lock:
        if _server is None:
            _server = os.environ.get("PACSLITE_TEST_POSTGRESQL_URL") or _start_cluster(durable)
            os.environ["PACSLITE_TEST_POSTGRESQL_URL"] = _server  # the processes the tests start use it too
            if os.environ.get("PACSLITE_TEST_TEMPLATE_READY"):
                return _server
            from pacslite.core import db
            _admin(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
            _admin(f"CREATE DATABASE {TEMPLATE}")
            conn = db.connect(_url(TEMPLATE))
            try:
                db.migrate(conn)
            finally:
                conn.close()
            os.environ["PACSLITE_TEST_TEMPLATE_READY"] = "1"
        return _server


def name_for(instance: Path) -> str:
    return "t_" + hashlib.sha1(str(Path(instance).resolve()).encode()).hexdigest()[:20]


def url_for(instance: Path) -> str:
    """The database URL of this instance folder: empty on SQLite (pacslite's default file), on
    PostgreSQL a database of its own, made on first use."""
    return new_database(instance) if ON_POSTGRESQL else ""


def new_database(instance: Path) -> str:
    """A PostgreSQL database of pacslite's schema for this instance folder, made on first use
    (whichever database the suite runs on)."""
    server()
    name = name_for(instance)
    with _lock:
        if name not in _made:
            _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            _admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
            _made.append(name)
    return _url(name)


def of(instance: Path) -> str | Path:
    """What ``db.connect`` opens for this instance folder."""
    return url_for(instance) or Path(instance) / "pacslite.db"


def env_for(instance: Path) -> dict[str, str]:
    """The environment a pacslite process (app.py, flask) of this instance folder needs."""
    url = url_for(instance)
    return {"PACSLITE_DATABASE_URL": url} if url else {}


def mark() -> int:
    return len(_made)


def drop_made(since: int = 0) -> None:
    """Drop the databases made since ``mark()`` (processes still connected are cut off)."""
    with _lock:
        names, _made[since:] = _made[since:], []
    for name in names:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def drop_trigger(conn, name: str, table: str) -> None:
    """What someone with write access to the database can do: drop a guard."""
    on = f" ON {table}" if getattr(conn, "dialect", "sqlite") == "postgresql" else ""
    conn.execute(f"DROP TRIGGER {name}{on}")


def empty_database(instance: Path) -> str:
    """A new, empty PostgreSQL database for this instance folder (as the admin guide makes one)."""
    server()
    name = name_for(instance)
    with _lock:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        _admin(f"CREATE DATABASE {name} TEMPLATE template0")
        _made.append(name)
    return _url(name)


def restore(dump: Path, instance: Path) -> str:
    """The admin guide's restore of a PostgreSQL backup: a new empty database, ``pg_restore``."""
    url = empty_database(instance)
    subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "--dbname", url, str(dump)],
                   check=True, capture_output=True)
    return url


def refuse_inserts(conn, table: str) -> None:
    """Make every INSERT into ``table`` fail, as a full disk or a broken database would."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        conn.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON {table}"
                     " FOR EACH ROW EXECUTE FUNCTION pacslite_refuse('refused')")
    else:
        conn.execute(f"CREATE TEMP TRIGGER refuse BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'refused'); END")


def files_dir(instance: Path) -> Path:
    """Where the instance's audit key and anchors are: beside SQLite's file, or in the store."""
    return Path(instance) / "storage" / "database" if ON_POSTGRESQL else Path(instance)
