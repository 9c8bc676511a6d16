"""Start and stop the real pacslite process (`python app.py`) for tests, on 127.0.0.1."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import threading
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacslite.core import audit, config, db
from pacslite.ris import patients, users
from tests import databases
from tests.conftest import EXAM_FORM, INDEPENDENT_OF_HOST_AND_HOUR, ROOT, free_port


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    dicom_port: int = 0
    tls_port: int = 0
    hl7_port: int = 0
    output: list[str] = field(default_factory=list)
    lines: "queue.Queue[str | None]" = field(default_factory=queue.Queue)

    def _pump(self) -> None:
        """Reader thread: every line the process prints, then None at its end."""
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _drain(self) -> None:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.output.append(line)

    @property
    def admin_password(self) -> str | None:
        for i, line in enumerate(self.output):
            if "Created the account 'admin'" in line:
                return self.output[i + 1].strip()
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"pacslite did not stop within {timeout}s of signal {sig}")
        self._reader.join(timeout=5)
        self._drain()
        return code


def start(instance: Path, timeout: float = 30, wrapper: tuple[str, ...] = (), **env: str) -> Server:
    """Run app.py with this instance folder; returns once it says it is listening.

    ``wrapper`` is a command that runs it (it must exec it, so that signals reach it)."""
    port = int(env["PACSLITE_HTTP_PORT"]) if "PACSLITE_HTTP_PORT" in env else free_port()
    environ = {**os.environ, "PACSLITE_INSTANCE_DIR": str(instance), "PACSLITE_HTTP_HOST": "127.0.0.1",
               "PACSLITE_HTTP_PORT": str(port), "PACSLITE_DEFAULT_LANGUAGE": "en",
               "PACSLITE_DICOM_HOST": "127.0.0.1", "PACSLITE_DICOM_PORT": "0", "PACSLITE_DICOM_TLS_PORT": "0",
               "PACSLITE_HL7_PORT": "0", **databases.env_for(instance),
               "PYTHONUNBUFFERED": "1",
               **{f"PACSLITE_{k}": str(v) for k, v in INDEPENDENT_OF_HOST_AND_HOUR.items()}, **env}
    process = subprocess.Popen([*wrapper, sys.executable, "app.py"], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    server = Server(process, f"http://127.0.0.1:{port}")
    server._reader = threading.Thread(target=server._pump, daemon=True)
    server._reader.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = server.lines.get(timeout=deadline - time.monotonic())
        except queue.Empty:
            break
        if line is None:
            break
        server.output.append(line)
        dicom = re.search(r"pacslite: DICOM \S+ on [0-9.]+:(\d+)", line)
        if dicom:
            server.dicom_port = int(dicom.group(1))
        over_tls = re.search(r"pacslite: DICOM over TLS on [0-9.]+:(\d+)", line)
        if over_tls:
            server.tls_port = int(over_tls.group(1))
        hl7 = re.search(r"pacslite: HL7 on [0-9.]+:(\d+)", line)
        if hl7:
            server.hl7_port = int(hl7.group(1))
        if re.search(r"pacslite: listening on http://", line):
            return server
    process.kill()
    process.wait()
    raise AssertionError("pacslite did not start:\n" + "\n".join(server.output))


class Pacs:
    """A running pacslite (app.py) and what a test needs around it: its database and settings."""

    def __init__(self, instance: Path, database: str = "", **options: Any) -> None:
        """``database``: a PostgreSQL URL to use instead of the suite's database for this instance."""
        self.instance = instance
        self.database = database or databases.of(instance)
        named = {"DATABASE_URL": database} if database else {}
        self.settings = config.load({"INSTANCE_DIR": str(instance), **INDEPENDENT_OF_HOST_AND_HOUR, **named})
        db.keep_files_in(self.database, Path(self.settings["STORAGE_DIR"]) / "database")
        self.options = {"PACSLITE_DATABASE_URL": database, **options} if database else options
        self.server = start(instance, **self.options)
        self.port = self.server.dicom_port
        self.tls_port = self.server.tls_port
        self.hl7_port = self.server.hl7_port

    def conn(self):
        return db.connect(self.database)

    def register(self, **changes) -> patients.Registration:
        data = {**EXAM_FORM, **changes}
        if data["scheduled_date"]:
            data["scheduled_at"] = patients.combine_local(data["scheduled_date"], data["scheduled_time"],
                                                          self.settings["TIMEZONE"])
        conn = self.conn()
        try:
            return patients.register_exam(conn, audit.SYSTEM, self.settings, data, data, confirm_demographics=True)
        finally:
            conn.close()

    def query(self, sql: str, *params) -> list:
        conn = self.conn()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def add_user(self, username: str, role: str, password: str = "Secret-pass-1", display_name: str = "",
                 department: str = "") -> None:
        conn = self.conn()
        try:
            users.create(conn, audit.SYSTEM, {"username": username, "password": password, "roles": [role],
                                              "display_name": display_name or username, "department": department})
        finally:
            conn.close()

    def send_series(self, directory: Path, count: int, **fields: Any) -> list[Path]:
        """``count`` CT images of one new series, sent with storescu; all must be stored."""
        from pydicom.uid import generate_uid
        from tests.dicomkit import make_ct, store_results, storescu
        directory.mkdir(parents=True, exist_ok=True)
        study_uid, series_uid, files = generate_uid(), generate_uid(), []
        for number in range(1, count + 1):
            path = directory / f"{series_uid}-{number}.dcm"
            make_ct(path, study_uid=study_uid, series_uid=series_uid, instance_number=number, seed=number, **fields)
            files.append(path)
        sent = storescu(self.port, files)
        assert set(store_results(sent.stdout + sent.stderr).values()) == {"Success"}, sent.stderr[-2000:]
        return files

    def token(self, username: str, role: str) -> str:
        """An API token of a new user with this role."""
        conn = self.conn()
        try:
            users.create(conn, audit.SYSTEM, {"username": username, "password": "Secret-pass-1", "roles": [role]})
            return users.create_token(conn, audit.SYSTEM, username)
        finally:
            conn.close()

    def restart(self, **options: Any) -> None:
        """Start it again on its instance folder, with the options it was started with (or these)."""
        self.server = start(self.instance, **(options or self.options))
        self.port, self.tls_port, self.hl7_port = self.server.dicom_port, self.server.tls_port, self.server.hl7_port

    def api(self, path: str, token: str) -> Any:
        request = urllib.request.Request(self.server.url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
