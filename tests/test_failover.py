"""Two pacslite processes on one PostgreSQL database and one store, sharing the DICOM and HTTP
ports (SO_REUSEPORT): one is killed in the middle of a burst from four senders (two DCMTK
storescu, two pynetdicom), and nothing acknowledged is lost; the senders' retries land on the
survivor; the survivor takes over every background duty; the audit chain verifies.

The database is PostgreSQL whichever suite runs (several processes need it)."""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from pacslite.core import audit, db, storage
from tests import databases, hostile
from tests.conftest import free_port
from tests.dicomkit import make_ct, store_results
from tests.server import Server, start

#: Every background duty app.py starts (app._background_work).
DUTIES = ("sweep", "jobs", "audit-anchor", "outbound", "commitment-reports", "expected-images",
          "critical-escalation", "hl7-outbound", "scrub")
IMAGES_PER_SENDER = 30


def _images(directory: Path, sender: int) -> dict[str, str]:
    """One study per sender: {path: SOP Instance UID}."""
    directory.mkdir()
    files: dict[str, str] = {}
    study = series = None
    for number in range(1, IMAGES_PER_SENDER + 1):
        path = directory / f"{number:03d}.dcm"
        ds = make_ct(path, study_uid=study, series_uid=series, instance_number=number, seed=sender * 1000 + number,
                     accession=f"FAIL{sender}", patient_id=f"FO{sender}")
        study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
        files[str(path)] = ds.SOPInstanceUID
    return files


class Sender(threading.Thread):
    """A modality: sends its images; what is not acknowledged is sent again on a new association
    (at most ``attempts`` of them). ``acknowledged`` holds the SOP UIDs pacslite said it has."""

    def __init__(self, name: str, port: int, files: dict[str, str], dcmtk: bool) -> None:
        super().__init__(name=name)
        self.port, self.files, self.dcmtk = port, files, dcmtk
        self.acknowledged: set[str] = set()
        self.associations = 0
        self.errors: list[str] = []

    def run(self) -> None:
        for _ in range(40):
            pending = [p for p, sop in self.files.items() if sop not in self.acknowledged]
            if not pending:
                return
            self.associations += 1
            (self._storescu if self.dcmtk else self._pynetdicom)(pending)
        self.errors.append("gave up with images unacknowledged")

    def _storescu(self, pending: list[str]) -> None:
        done = subprocess.run(["storescu", "-v", "-aet", self.name, "-aec", "PACSLITE", "127.0.0.1", str(self.port),
                               *pending[:10]], capture_output=True, text=True, timeout=120)
        for path, result in store_results(done.stdout + done.stderr).items():
            if result == "Success":
                self.acknowledged.add(self.files[path])

    def _pynetdicom(self, pending: list[str]) -> None:
        ae = AE(ae_title=self.name)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="PACSLITE")
        if not assoc.is_established:
            return
        for path in pending[:5]:
            status = assoc.send_c_store(dcmread(path))
            if not status or status.Status != 0:
                break
            self.acknowledged.add(self.files[path])
        if assoc.is_established:
            assoc.release()


def _owns_an_association(pid: int, port: int) -> bool:
    """Whether process ``pid`` has an established connection on the DICOM port (ss, iproute2)."""
    listing = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True).stdout
    return f"pid={pid}," in listing


def _duty_holders(conn) -> dict[str, str]:
    """{duty: the application name of the connection holding its lock}."""
    held = {}
    for name in DUTIES:
        key = db.duty_key(name) & 0xFFFFFFFFFFFFFFFF
        row = conn.execute("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                           " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = ? AND l.objid = ?"
                           " AND l.objsubid = 1", (key >> 32, key & 0xFFFFFFFF)).fetchone()
        if row:
            held[name] = row[0]
    return held


def _process_name(server: Server) -> str:
    return f"pacslite {server.process.pid}@"


def test_a_killed_process_loses_nothing_acknowledged_and_the_survivor_takes_over(tmp_path) -> None:
    instance = tmp_path / "instance"
    url = databases.empty_database(instance)
    dicom_port, http_port = free_port(), free_port()
    shared = {"PACSLITE_DATABASE_URL": url, "PACSLITE_SHARE_PORTS": "1", "PACSLITE_DICOM_PORT": str(dicom_port),
              "PACSLITE_HTTP_PORT": str(http_port), "PACSLITE_DICOM_ACCEPT_ANY_CALLER": "1"}
    first = start(instance, **shared)
    second = start(instance, **shared)
    servers = [first, second]
    try:
        assert first.dicom_port == second.dicom_port == dicom_port
        senders = [Sender(f"SENDER{n}", dicom_port, _images(tmp_path / f"s{n}", n), dcmtk=n < 2) for n in range(4)]
        for sender in senders:
            sender.start()
        # kill the first process mid-burst, while it holds an association and images were acknowledged
        deadline = time.monotonic() + 120
        while not (sum(len(s.acknowledged) for s in senders) >= 10 and _owns_an_association(first.process.pid,
                                                                                           dicom_port)):
            assert time.monotonic() < deadline, "the first process never received an association"
            assert any(s.is_alive() for s in senders), "the burst ended before the kill"
        first.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        assert sum(len(s.acknowledged) for s in senders) < 4 * IMAGES_PER_SENDER, "the kill came after the burst"
        for sender in senders:
            sender.join(timeout=300)
        assert [s.errors for s in senders] == [[], [], [], []]  # after the kill only the survivor listens

        conn = db.connect(url)
        # every acknowledged image is in the index and on disk, with the hash it was stored with
        store = instance / "storage"
        rows = conn.execute("SELECT sop_instance_uid, storage_path, sha256 FROM instances").fetchall()
        indexed = {r["sop_instance_uid"] for r in rows}
        acknowledged = set().union(*(s.acknowledged for s in senders))
        assert len(acknowledged) == 4 * IMAGES_PER_SENDER and acknowledged == indexed
        for row in rows:
            assert storage.sha256_file(store / row["storage_path"])[1] == row["sha256"]

        # the survivor holds every duty within a minute of the kill (the sweep among them)
        survivor = _process_name(second)

        def survivor_holds_every_duty() -> bool:
            holders = _duty_holders(conn)
            return set(holders) == set(DUTIES) and all(h.startswith(survivor) for h in holders.values())
        while not survivor_holds_every_duty():
            assert time.monotonic() - killed_at < 60, f"duties not taken over: {_duty_holders(conn)}"
            time.sleep(0.5)  # polling the database for the state itself

        # the audit chain verifies, with the key and anchors in the shared store
        db.keep_files_in(url, store / "database")
        assert audit.verify(conn) is None
        conn.close()
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.stop()



VERIFICATION = "1.2.840.10008.1.1"
#: The connections _ask opened, closed at the end of the test.
_OPEN: list = []


def _ask(port: int) -> tuple[int, bytes]:
    """An A-ASSOCIATE-RQ for verification: the answer's PDU type and body; the socket is kept
    open (an accepted association stays until it is closed) in :data:`_OPEN`."""
    sock = hostile.connect(port)
    sock.sendall(hostile.associate_rq("PLACES", "PACSLITE", [(1, VERIFICATION, [hostile.IMPLICIT])]))
    kind, body = hostile.read_pdu(sock)
    _OPEN.append(sock)
    return kind, body



def _accepted_once_free(port: int, deadline: float) -> None:
    """Ask again until accepted: a place comes back when the server notices the association ended."""
    while (answer := _ask(port))[0] != hostile.A_ASSOCIATE_AC:
        assert answer[0] == hostile.A_ASSOCIATE_RJ and time.monotonic() < deadline, answer
        _OPEN.pop().close()


def test_an_address_holds_its_associations_across_processes_and_a_dead_process_gives_them_back(tmp_path) -> None:
    """DICOM_MAX_CONNECTIONS_PER_ADDRESS counts every process on the database: two processes,
    two places for 127.0.0.1; the third association, to either, is refused (transient, local
    limit exceeded) and noted; a released one and a killed process give their places back."""
    instance = tmp_path / "instance"
    url = databases.empty_database(instance)
    shared = {"PACSLITE_DATABASE_URL": url, "PACSLITE_DICOM_ACCEPT_ANY_CALLER": "1",
              "PACSLITE_DICOM_MAX_CONNECTIONS_PER_ADDRESS": "2"}
    first, second = start(instance, **shared), start(instance, **shared)
    try:
        assert _ask(first.dicom_port)[0] == _ask(second.dicom_port)[0] == hostile.A_ASSOCIATE_AC
        kind, body = _ask(first.dicom_port)  # the first process holds one: alone it would accept
        assert (kind, tuple(body[1:4])) == (hostile.A_ASSOCIATE_RJ, (2, 3, 2))
        assert _ask(second.dicom_port)[0] == hostile.A_ASSOCIATE_RJ
        conn = db.connect(url)
        assert conn.execute("SELECT attempts FROM association_rejections WHERE calling_ae = 'PLACES'"
                            " AND reason = 'too_many_from_address'").fetchone()[0] == 2
        conn.close()
        # one released (closed) on the second process: its place is free for the first
        _OPEN[1].close()
        _accepted_once_free(first.dicom_port, time.monotonic() + 60)
        # the first process, holding both places now, dies: the second has both again
        first.stop(signal.SIGKILL)
        _accepted_once_free(second.dicom_port, time.monotonic() + 60)
        _accepted_once_free(second.dicom_port, time.monotonic() + 60)
        with pytest.raises(ConnectionError):  # its own two: closed as it connects, as on one process
            _ask(second.dicom_port)
    finally:
        for sock in _OPEN:
            sock.close()
        _OPEN.clear()
        for server in (first, second):
            if server.process.poll() is None:
                server.stop()
