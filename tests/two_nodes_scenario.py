"""Two pacslite nodes behind HAProxy, in a private network namespace (run by test_two_nodes.py):

    unshare --net --map-root-user sh -c 'PACSLITE_TEST_POSTGRESQL_VIA_SOCKET=1 python -m tests.two_nodes_scenario WORKDIR'

HAProxy on 10.1.0.10 with docs/haproxy-pacslite.cfg as it is; the nodes on 10.1.0.11 and
10.1.0.12, one PostgreSQL database (the tests' cluster, through its Unix socket) and one store;
a modality on 10.1.0.20, a stranger on 10.1.0.21. Prints what it saw as JSON."""
from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from pydicom import dcmread

from pacslite.core import audit, db
from pacslite.ris import aes
from tests import databases
from tests.conftest import PASSWORD, ROOT, make_user
from tests.dicomkit import make_ct
from tests.server import Server, start

PROXY, NODES, MODALITY, STRANGER = "10.1.0.10", ("10.1.0.11", "10.1.0.12"), "10.1.0.20", "10.1.0.21"


def _network() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in (PROXY, *NODES, MODALITY, STRANGER):
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)


def _node(instance: Path, store: Path, address: str, url: str) -> Server:
    return start(instance, PACSLITE_DATABASE_URL=url, PACSLITE_STORAGE_DIR=str(store), PACSLITE_HTTP_HOST=address,
                 PACSLITE_HTTP_PORT="8080", PACSLITE_DICOM_HOST=address, PACSLITE_DICOM_PORT="11112",
                 PACSLITE_HL7_HOST=address, PACSLITE_HL7_PORT="2575", PACSLITE_DICOM_TLS_PORT="-1",
                 PACSLITE_TRUSTED_PROXIES=json.dumps([PROXY]))


def _associate(source: str, calling: str = "CT01") -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae.associate(PROXY, 11112, ae_title="PACSLITE", bind_address=(source, 0))


def _owner_of_connections(pids: dict[int, str]) -> list[str]:
    """Which node holds each established connection on the DICOM port (ss, iproute2)."""
    listing = subprocess.run(["ss", "-tnpH", "state", "established", "( sport = :11112 )"],
                             capture_output=True, text=True).stdout
    return sorted(name for pid, name in pids.items() for _ in re.findall(rf"pid={pid},", listing))


def _page(path: str, cookie: str = "", data: dict[str, str] | None = None) -> tuple[int, str, str]:
    """A request through HAProxy from the modality's address: (status, body, session cookie)."""
    connection = http.client.HTTPConnection(PROXY, 8080, timeout=30, source_address=(MODALITY, 0))
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if data is not None:
        body = urllib.parse.urlencode(data)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    connection.request("POST" if data is not None else "GET", path, body=body, headers=headers)
    response = connection.getresponse()
    text = response.read().decode("utf-8", "replace")
    set_cookie = response.getheader("Set-Cookie") or ""
    connection.close()
    return response.status, text, set_cookie.split(";", 1)[0] or cookie


def _until(condition: Any, seconds: float, what: str) -> float:
    """Seconds until ``condition()`` held (polling the state itself); raises after ``seconds``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise SystemExit(f"timed out waiting until {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def scenario(work: Path) -> dict[str, Any]:
    _network()
    store = work / "store"
    url = databases.new_database(work / "node1")
    results: dict[str, Any] = {}
    first = _node(work / "node1", store, NODES[0], url)
    (work / "node2").mkdir()
    shutil.copy(work / "node1" / "secret_key", work / "node2" / "secret_key")  # sessions valid on both
    second = _node(work / "node2", store, NODES[1], url)
    config = work / "haproxy.cfg"
    shutil.copy(ROOT / "docs" / "haproxy-pacslite.cfg", config)
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        conn = db.connect(url)
        db.keep_files_in(url, store / "database")
        aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "host": MODALITY, "port": "104", "modality": "CT"})
        make_user(conn, "desk", "registrar")

        def echo_through_haproxy() -> bool:
            assoc = _associate(MODALITY)
            ok = assoc.is_established
            if ok:
                assoc.release()
            return ok
        results["haproxy_ready_seconds"] = _until(echo_through_haproxy, 30, "an echo passes through HAProxy")

        # two associations at once: leastconn gives one to each node; each node sees the modality's address
        held = [_associate(MODALITY), _associate(MODALITY)]
        results["established"] = [a.is_established for a in held]
        results["owners"] = _owner_of_connections({first.process.pid: "node1", second.process.pid: "node2"})
        path = work / "image.dcm"
        make_ct(path, accession="TWO01", patient_id="TN01")
        results["store_status"] = held[0].send_c_store(dcmread(path)).Status
        for assoc in held:
            assoc.release()
        results["arrival_address"] = conn.execute("SELECT address FROM arrivals").fetchone()[0]
        # the AE title from another address is refused, behind the proxy as before it
        stranger = _associate(STRANGER)
        results["stranger_established"] = stranger.is_established
        if stranger.is_established:
            stranger.release()
        results["rejection_address"] = conn.execute(
            "SELECT address FROM association_rejections ORDER BY id DESC LIMIT 1").fetchone()[0]

        # the pages: logged in once, the session holds on both nodes (round robin)
        status, page, cookie = _page("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        status, _, cookie = _page("/login", cookie, {"username": "desk", "password": PASSWORD, "csrf_token": token})
        results["login_status"] = status
        results["pages"] = [_page("/exams", cookie)[0] for _ in range(4)]
        results["login_address"] = conn.execute(
            "SELECT address FROM audit_log WHERE action = 'login' ORDER BY id DESC LIMIT 1").fetchone()[0]

        # node 1 dies: HAProxy stops sending to it; associations and pages go on through node 2
        first.stop(signal.SIGKILL)
        results["failover_seconds"] = _until(lambda: all(echo_through_haproxy() for _ in range(4)), 30,
                                             "HAProxy no longer sends to the dead node")
        results["after_kill"] = [echo_through_haproxy() for _ in range(6)]
        results["pages_after_kill"] = [_page("/exams", cookie)[0] for _ in range(4)]
        conn.close()
    finally:
        haproxy.send_signal(signal.SIGTERM)
        print(haproxy.communicate(timeout=30)[0][-2000:], file=sys.stderr)
        for server in (first, second):
            if server.process.poll() is None:
                server.stop()
    return results


if __name__ == "__main__":
    print(json.dumps(scenario(Path(sys.argv[1]))))
