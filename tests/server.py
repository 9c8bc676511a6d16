"""Start and stop the real pacslite process (`python app.py`) for tests, on 127.0.0.1."""
from __future__ import annotations

import os
import queue
import re
import signal
import threading
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT, free_port


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    dicom_port: int = 0
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


def start(instance: Path, timeout: float = 30, **env: str) -> Server:
    """Run app.py with this instance folder; returns once it says it is listening."""
    port = free_port()
    environ = {**os.environ, "PACSLITE_INSTANCE_DIR": str(instance), "PACSLITE_HTTP_HOST": "127.0.0.1",
               "PACSLITE_HTTP_PORT": str(port), "PACSLITE_DEFAULT_LANGUAGE": "en",
               "PACSLITE_DICOM_HOST": "127.0.0.1", "PACSLITE_DICOM_PORT": "0", "PYTHONUNBUFFERED": "1", **env}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
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
        if re.search(r"pacslite: listening on http://", line):
            return server
    process.kill()
    process.wait()
    raise AssertionError("pacslite did not start:\n" + "\n".join(server.output))
