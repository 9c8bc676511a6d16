"""Two pacslite nodes behind HAProxy (Debian's haproxy, docs/haproxy-pacslite.cfg as it is), in a
private network namespace with an address for HAProxy, each node, a modality and a stranger
(tests/two_nodes_scenario.py). The database is PostgreSQL whichever suite runs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pacslite.core import proxies
from tests import databases
from tests.conftest import ROOT


def test_two_nodes_behind_haproxy_share_the_work_and_one_survives_the_others_death(tmp_path) -> None:
    databases.server()  # the cluster is started here; the namespace reaches it through its socket
    script = (f'PACSLITE_TEST_POSTGRESQL_VIA_SOCKET=1 exec "{sys.executable}" -m tests.two_nodes_scenario'
              f' "{tmp_path}"')
    done = subprocess.run(["unshare", "--net", "--map-root-user", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # DICOM in TCP mode: two associations at once are one on each node (leastconn)
    assert seen["established"] == [True, True] and seen["owners"] == ["node1", "node2"]
    assert seen["store_status"] == 0
    # the PROXY line carries the modality's own address: the AE check and the audit see it, not HAProxy's
    assert seen["arrival_address"] == "10.1.0.20"
    assert seen["stranger_established"] is False and seen["rejection_address"] == "10.1.0.21"
    # the pages in HTTP mode: one login, the session valid on both nodes, the browser's address audited
    assert seen["login_status"] == 302 and seen["pages"] == [200, 200, 200, 200]
    assert seen["login_address"] == "10.1.0.20"
    # node 1 killed: HAProxy's checks take it out within seconds; everything goes on through node 2
    assert seen["failover_seconds"] < 15
    assert seen["after_kill"] == [True] * 6 and seen["pages_after_kill"] == [200, 200, 200, 200]


def test_the_guide_shows_the_haproxy_configuration_that_is_tested() -> None:
    configuration = (ROOT / "docs" / "haproxy-pacslite.cfg").read_text(encoding="utf-8").rstrip("\n")
    assert configuration in (ROOT / "docs" / "beyond-one-server.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("line, address", [
    (b"PROXY TCP4 10.1.0.20 10.1.0.10 40000 11112\r\n", ("10.1.0.20", 40000)),
    (b"PROXY TCP6 fd00::20 fd00::10 40000 11112\r\n", ("fd00::20", 40000)),
    (b"PROXY UNKNOWN\r\n", None),  # HAProxy's own check: the connection's address stands
])
def test_a_proxy_line_gives_the_callers_address(line: bytes, address) -> None:
    assert proxies.parse_header(line) == address


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 10.1.0.20 10.1.0.10 40000 11112\n",  # no CR
    b"PROXY TCP4 not-an-address 10.1.0.10 40000 11112\r\n",
    b"PROXY TCP4 fd00::20 10.1.0.10 40000 11112\r\n",  # a v6 address announced as TCP4
    b"PROXY TCP4 10.1.0.20 10.1.0.10 0 11112\r\n",
    b"PROXY TCP4 10.1.0.20 10.1.0.10 40000\r\n",
    b"\x01\x00\x00\x00\x00\xcd\x00\x01" + b"A" * 99 + b"\r\n",  # an association from a node that is no proxy
    b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
])
def test_anything_else_from_a_trusted_proxy_is_refused(line: bytes) -> None:
    with pytest.raises(proxies.ProxyHeaderError):
        proxies.parse_header(line)


def test_a_proxy_line_is_read_only_from_a_trusted_proxy_and_garbage_from_it_is_refused(tmp_path) -> None:
    """The real server with TRUSTED_PROXIES = 127.0.0.1: garbage from the proxy is closed at once;
    a PROXY line from 127.0.0.2 (not trusted) is read as DICOM (unknown PDUs), no address it names
    is recorded, and the server goes on answering."""
    import socket

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from tests.server import Pacs
    pacs = Pacs(tmp_path / "instance", PACSLITE_TRUSTED_PROXIES='["127.0.0.1"]', PACSLITE_DICOM_ACCEPT_ANY_CALLER="1")
    try:
        def answer_to(source: str, data: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", pacs.port), timeout=10, source_address=(source, 0)) as sock:
                sock.sendall(data)
                received = b""
                try:
                    while chunk := sock.recv(4096):
                        received += chunk
                except ConnectionResetError:  # closed with our bytes unread
                    pass
                return received
        assert answer_to("127.0.0.1", b"GET / HTTP/1.0\r\n\r\n") == b""  # closed, nothing said
        with socket.create_connection(("127.0.0.1", pacs.port), timeout=10, source_address=("127.0.0.2", 0)) as sock:
            sock.sendall(b"PROXY TCP4 10.9.9.9 127.0.0.1 1234 11112\r\n")  # read as DICOM: unknown PDUs
        ae = AE(ae_title="ANYONE")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACSLITE", bind_address=("127.0.0.2", 0))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        claimed = pacs.query("SELECT COUNT(*) FROM audit_log WHERE address = '10.9.9.9'")[0][0]
        claimed += pacs.query("SELECT COUNT(*) FROM association_rejections WHERE address = '10.9.9.9'")[0][0]
        assert claimed == 0
    finally:
        pacs.server.stop()
