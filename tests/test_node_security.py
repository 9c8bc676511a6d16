"""A secure node (issue 27), against the real process (app.py) over real sockets: an AE title
works only from its host, the web server takes a department's idle connections, DIMSE data
sets are bounded before they are decoded, and DICOM goes over TLS."""
from __future__ import annotations

import json
import socket
import ssl
import struct
import urllib.request
from pathlib import Path

import pytest

from tests import hostile
from tests import server as pacs_server
from pydicom import dcmread

from tests.conftest import flask_cli, wait_for
from tests.dicomkit import make_ct, run, self_signed_certificate, store_results, storescu


def lines(pacs) -> list[str]:
    pacs.server._drain()
    return pacs.server.output


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> pacs_server.Pacs:
    instance = tmp_path_factory.mktemp("node")
    certs = tmp_path_factory.mktemp("certs")
    _, pinned = self_signed_certificate(certs, "tlsws")
    for args in (["WS1", "--host", "127.0.0.1", "--may", "query,retrieve"],
                 ["FARAWAY", "--host", "10.9.9.9", "--may", "query"],
                 ["ROAMING", "--host", "10.9.9.10", "--any-host", "--may", "query"],
                 ["LEGACY", "--may", "query"],
                 ["NAMED", "--host", "localhost", "--may", "query"],
                 ["TWOCARDS", "--host", "10.9.9.11", "--also-from", "127.0.0.3", "--may", "query"],
                 ["TLSWS", "--host", "127.0.0.1", "--certificate", str(pinned), "--may", "store,query,retrieve"],
                 ["TLSANON", "--host", "127.0.0.1", "--tls", "--may", "store"],
                 ["PLAIN", "--host", "127.0.0.1", "--may", "store"],
                 ["COMMIT", "--host", "127.0.0.1", "--may", "store,commitment,mpps"]):
        added = flask_cli(instance, "ae", "add", *args)
        assert added.returncode == 0, added.stderr
    running = pacs_server.Pacs(instance)
    running.certs = certs
    yield running
    assert running.server.stop() == 0


# ---------------------------------------------------------------- node authentication

def test_an_ae_title_is_accepted_only_from_its_host(pacs) -> None:
    """The attack run: ``ae add WS1 --host 127.0.0.1``; a caller elsewhere using the title WS1
    queried every patient and moved their images; an AE configured at 10.9.9.9 was accepted
    from 127.0.0.1."""
    assert hostile.echo(pacs.port, calling="WS1") == 0x0000
    for calling, source in (("WS1", "127.0.0.2"), ("FARAWAY", "127.0.0.1"), ("TWOCARDS", "127.0.0.2")):
        with hostile.connect(pacs.port, source) as sock:
            sock.sendall(hostile.associate_rq(calling, "PACSLITE", [(1, hostile.VERIFICATION, [hostile.IMPLICIT])]))
            assert hostile.read_pdu(sock)[0] == hostile.A_ASSOCIATE_RJ, (calling, source)
    # a host name stands for its addresses; a second address; "any host" and no host as before
    for calling, source in (("NAMED", "127.0.0.1"), ("TWOCARDS", "127.0.0.3"), ("ROAMING", "127.0.0.2"),
                            ("LEGACY", "127.0.0.2")):
        assert hostile.echo(pacs.port, calling=calling, source=source) == 0x0000, calling
    refused = {(r[0], r[1]): r[2] for r in pacs.query("SELECT calling_ae, address, reason FROM association_rejections")}
    assert refused[("WS1", "127.0.0.2")] == refused[("FARAWAY", "127.0.0.1")] == "wrong_host"
    audited = pacs.query("SELECT actor, outcome, detail FROM audit_log WHERE action = 'dicom.associate'"
                         " AND address = '127.0.0.2'")
    assert ("ae:WS1", "denied") in [(a, o) for a, o, _ in audited] and "wrong_host" in audited[0][2]
    assert "refused an association from WS1@127.0.0.2 calling PACSLITE: wrong_host" in "\n".join(lines(pacs))


def test_the_sweep_lists_the_aes_accepted_from_any_host(pacs) -> None:
    from pacslite import sweep
    conn = pacs.conn()
    try:
        sweep.run(conn, pacs.settings)
    finally:
        conn.close()
    rows = pacs.query("SELECT subject, detail FROM alerts WHERE rule = 'ae_any_host' AND state = 'open'")
    assert {subject for subject, _ in rows} == {"ae:ROAMING", "ae:LEGACY"}
    assert {json.loads(detail)["why"] for _, detail in rows} == {"marked_any_host", "no_host"}
    flask_cli(pacs.instance, "ae", "update", "LEGACY", "--host", "127.0.0.1")
    conn = pacs.conn()
    try:
        sweep.run(conn, pacs.settings)
    finally:
        conn.close()
    assert pacs.query("SELECT state FROM alerts WHERE rule = 'ae_any_host' AND subject = 'ae:LEGACY'")[0][0] == "cleared"


# ---------------------------------------------------------------- the web server's connections

def idle_keep_alive(url: str) -> socket.socket:
    """A connection that asked for the login page, read the whole answer, and stays open."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"GET /login HTTP/1.1\r\nHost: pacs\r\nConnection: keep-alive\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return sock


def test_a_login_answers_with_300_idle_keep_alive_connections_open(pacs) -> None:
    """The load run: at about 98 open connections (waitress's default limit of 100) the next
    GET /login hung, neither refused nor answered."""
    held = [idle_keep_alive(pacs.server.url) for _ in range(300)]
    try:
        with urllib.request.urlopen(pacs.server.url + "/login", timeout=10) as response:
            assert response.status == 200 and b"password" in response.read().lower()
    finally:
        for sock in held:
            sock.close()


# ---------------------------------------------------------------- DIMSE data sets, bounded before decoded

COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def rss_mib(pacs) -> float:
    for line in open(f"/proc/{pacs.server.process.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def commitment_request(references: int) -> bytes:
    """A storage commitment N-ACTION data set naming ``references`` instances (implicit VR),
    written by hand: pydicom takes longer than the test to encode 300,000 items."""
    def element(group: int, number: int, value: bytes) -> bytes:
        value += b"\0" * (len(value) % 2)
        return struct.pack("<HHL", group, number, len(value)) + value
    item_body = element(0x0008, 0x1150, b"1.2.840.10008.5.1.4.1.1.2") + element(0x0008, 0x1155, b"1.2.3.4.5.6.7.8.9")
    item = struct.pack("<HHL", 0xFFFE, 0xE000, len(item_body)) + item_body
    sequence = (struct.pack("<HHL", 0x0008, 0x1199, 0xFFFFFFFF) + item * references
                + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
    return element(0x0008, 0x1195, b"1.2.3.4.27") + sequence


def test_an_oversized_n_action_is_aborted_as_it_arrives(pacs) -> None:
    """The attack run: an N-ACTION naming 300,000 instances (19 MB) was refused 0x0213 only
    after 16 s and 600 MB. Now its data set is counted as it arrives and the association
    aborted past DICOM_MAX_ACTION_BYTES (4 MiB), before anything decodes it."""
    before = rss_mib(pacs)
    data = commitment_request(300_000)
    assert len(data) > 18 << 20
    # a long socket timeout: on a loaded machine the server may take a while to read the first PDUs
    assoc = hostile.associate(pacs.port, [(COMMITMENT, [hostile.IMPLICIT])], calling="COMMIT", timeout=60)
    command = hostile.command(CommandField=0x0130, MessageID=1, RequestedSOPClassUID=COMMITMENT,
                              RequestedSOPInstanceUID=COMMITMENT_INSTANCE, ActionTypeID=1, CommandDataSetType=0)
    cid = assoc.context_for(COMMITMENT)
    sent = 0
    try:
        for pdu in hostile.fragments(cid, command, assoc.max_pdu, is_command=True) + \
                hostile.fragments(cid, data, assoc.max_pdu):
            assoc.send(pdu)
            sent += len(pdu)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert hostile.closed_or_aborted(assoc.sock) in ("abort", "closed")
    assoc.sock.close()
    assert sent < 12 << 20, f"{sent} bytes were taken"
    assert rss_mib(pacs) - before < 48, (before, rss_mib(pacs))
    assert pacs.query("SELECT COUNT(*) FROM commitments WHERE transaction_uid = '1.2.3.4.27'")[0][0] == 0
    # the abort reaches the peer before the server's log line reaches its output: wait for the line
    wait_for(lambda: "the data set of a N-ACTION-RQ passed 4194304 bytes" in "\n".join(lines(pacs)),
             "the server logs why it aborted", 10)
    # a request within the limit is answered as always
    small = hostile.associate(pacs.port, [(COMMITMENT, [hostile.IMPLICIT])], calling="COMMIT")
    for pdu in hostile.fragments(cid, command, small.max_pdu, is_command=True) + \
            hostile.fragments(cid, commitment_request(10), small.max_pdu):
        small.send(pdu)
    assert int(hostile.read_response(small).Status) == 0x0000
    small.release()


# ---------------------------------------------------------------- DICOM over TLS

def tls_args(pacs, name: str | None) -> list[str]:
    """DCMTK's options for TLS with the client certificate ``name`` (None: anonymous), trusting pacslite's."""
    own = ["+cf", str(pacs.instance / "tls" / "pacslite.crt")]
    if name is None:
        return ["+tla", *own]
    key, certificate = pacs.certs / f"{name}.key", pacs.certs / f"{name}.crt"
    if not key.exists():
        self_signed_certificate(pacs.certs, name)
    return ["+tls", str(key), str(certificate), *own]


def filed_ct(pacs, tmp_path: Path, patient_id: str) -> Path:
    reg = pacs.register(patient_id=patient_id, name="张三", sex="M", birth_date="1980-02-03", modality="CT",
                        procedure="胸部CT平扫", station_ae="")
    path = tmp_path / f"{patient_id}.dcm"
    make_ct(path, accession=reg.accession_number, patient_id=patient_id, name="ZHANG^SAN", sex="M",
            birth_date="19800203")
    return path


def test_dcmtk_stores_queries_and_retrieves_over_tls_with_its_pinned_certificate(pacs, tmp_path) -> None:
    assert pacs.tls_port and (pacs.instance / "tls" / "pacslite.key").stat().st_mode & 0o077 == 0
    image = filed_ct(pacs, tmp_path, "TL0001")
    sent = storescu(pacs.tls_port, [image], aet="TLSWS", extra=tuple(tls_args(pacs, "tlsws")))
    assert list(store_results(sent.stdout + sent.stderr).values()) == ["Success"], sent.stderr[-1500:]
    (tmp_path / "found").mkdir()
    found = run(["findscu", "-v", "-S", "-X", "--output-directory", str(tmp_path / "found"), "-aet", "TLSWS",
                 "-aec", "PACSLITE", *tls_args(pacs, "tlsws"), "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "PatientID=TL0001", "-k", "StudyInstanceUID", "127.0.0.1", str(pacs.tls_port)])
    answers = [dcmread(p) for p in sorted((tmp_path / "found").glob("rsp*.dcm"))]
    assert found.returncode == 0 and [a.StudyInstanceUID for a in answers] == [dcmread(image).StudyInstanceUID], \
        found.stderr[-1500:]
    # retrieving over TLS: test_pacslite_sends_over_tls… (DCMTK 3.6.7's movescu and getscu have no TLS)
    # an AE that requires TLS without a pinned certificate: anonymous TLS (no client certificate)
    anonymous = storescu(pacs.tls_port, [image], aet="TLSANON", extra=tuple(tls_args(pacs, None)))
    assert list(store_results(anonymous.stdout + anonymous.stderr).values()) == ["Success"], anonymous.stderr[-1500:]
    # any AE may use the TLS port
    plain_over_tls = storescu(pacs.tls_port, [image], aet="PLAIN", extra=tuple(tls_args(pacs, None)))
    assert list(store_results(plain_over_tls.stdout + plain_over_tls.stderr).values()) == ["Success"]


def test_tls_is_refused_without_the_certificate_an_ae_requires(pacs, tmp_path) -> None:
    image = filed_ct(pacs, tmp_path, "TL0002")
    cases = {  # (port, calling AE, TLS options) → the reason recorded
        "not over TLS": (pacs.port, "TLSWS", [], "tls_required"),
        "not over TLS, no certificate pinned": (pacs.port, "TLSANON", [], "tls_required"),
        "no certificate": (pacs.tls_port, "TLSWS", tls_args(pacs, None), "wrong_certificate"),
        "a certificate pacslite does not know": (pacs.tls_port, "TLSWS", tls_args(pacs, "stranger"), "tls_handshake"),
    }
    for case, (port, calling, options, reason) in cases.items():
        sent = storescu(port, [image], aet=calling, extra=tuple(options))
        assert "Success" not in store_results(sent.stdout + sent.stderr).values(), case
        wait_for(lambda: pacs.query("SELECT COUNT(*) FROM association_rejections WHERE reason = ? AND address"
                                    " = '127.0.0.1'", reason)[0][0], f"{case}: refused as {reason}")
    assert pacs.query("SELECT COUNT(*) FROM instances i JOIN series se ON se.id = i.series_ref JOIN studies s"
                      " ON s.id = se.study_ref WHERE s.patient_id = 'TL0002'")[0][0] == 0
    # TLS 1.1 is refused (BCP 195: 1.2 or later)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        with old.wrap_socket(socket.create_connection(("127.0.0.1", pacs.tls_port), timeout=10)):
            pass


def test_a_certificate_pinned_while_running_is_trusted_within_seconds(pacs) -> None:
    """The TLS port trusts pinned certificates; one pinned on the modalities page while pacslite
    runs is trusted within ServerContexts.RECHECK_SECONDS (5 s), without a restart."""
    key, certificate = self_signed_certificate(pacs.certs, "latecomer")
    added = flask_cli(pacs.instance, "ae", "add", "LATECOMER", "--host", "127.0.0.1", "--certificate", str(certificate))
    assert added.returncode == 0, added.stderr
    echo = ["echoscu", "-aet", "LATECOMER", "-aec", "PACSLITE", "+tls", str(key), str(certificate),
            "+cf", str(pacs.instance / "tls" / "pacslite.crt"), "127.0.0.1", str(pacs.tls_port)]
    wait_for(lambda: run(echo, timeout=30).returncode == 0, "the newly pinned certificate is trusted", seconds=20)


def test_a_silent_client_on_the_tls_port_does_not_hold_the_others(pacs) -> None:
    """pynetdicom does the TLS handshake in the thread that accepts: one client that connects
    and says nothing froze the TLS port for everyone."""
    with socket.create_connection(("127.0.0.1", pacs.tls_port), timeout=30) as silent:
        echo = run(["echoscu", "-aet", "TLSWS", "-aec", "PACSLITE", *tls_args(pacs, "tlsws"), "-to", "10",
                    "127.0.0.1", str(pacs.tls_port)], timeout=30)
        assert echo.returncode == 0, echo.stderr[-1500:]
        silent.settimeout(60)
        assert silent.recv(1) == b""  # dropped after the network timeout


def test_pacslite_sends_over_tls_to_an_ae_marked_so(pacs, tmp_path) -> None:
    """C-MOVE over TLS to a destination that requires TLS and pacslite's certificate; both
    peers pynetdicom on loopback (DCMTK 3.6.7's movescu has no TLS, its storescp no loopback bind)."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]
    key, certificate = self_signed_certificate(pacs.certs, "tlsdest")
    image = filed_ct(pacs, tmp_path, "TL0003")
    sent = storescu(pacs.port, [image], aet="PLAIN")
    assert list(store_results(sent.stdout + sent.stderr).values()) == ["Success"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=pacs.instance / "tls" / "pacslite.crt")
    received = []
    scp = AE("TLSDEST")
    scp.supported_contexts = AllStoragePresentationContexts
    server = scp.start_server(("127.0.0.1", 0), block=False, ssl_context=context,
                              evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(e.request.AffectedSOPInstanceUID)
                                             or 0x0000)])
    try:
        port = server.server_address[1]
        added = flask_cli(pacs.instance, "ae", "add", "TLSDEST", "--host", "127.0.0.1", "--port", str(port), "--may", "",
                          "--certificate", str(certificate))
        assert added.returncode == 0, added.stderr
        mover = AE("TLSWS")
        mover.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.load_verify_locations(cafile=pacs.instance / "tls" / "pacslite.crt")
        client.load_cert_chain(pacs.certs / "tlsws.crt", pacs.certs / "tlsws.key")
        assoc = mover.associate("127.0.0.1", pacs.tls_port, ae_title="PACSLITE", tls_args=(client, None))
        assert assoc.is_established
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = dcmread(image).StudyInstanceUID
        statuses = [int(status.Status) for status, _ in
                    assoc.send_c_move(identifier, "TLSDEST", StudyRootQueryRetrieveInformationModelMove)]
        assoc.release()
        assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    finally:
        server.shutdown()
    assert received == [dcmread(image).SOPInstanceUID]
