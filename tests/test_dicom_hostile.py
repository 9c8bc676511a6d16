"""Hostile DICOM peers against the real process (issue 13): each case replays what an attacker
or a broken modality did, with raw sockets (tests/hostile.py) or pynetdicom, on loopback, and
checks that pacslite neither froze, filled up, nor acknowledged what it cannot read back."""
from __future__ import annotations

import os
import re
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from pacslite.core import storage
from pacslite.pacs import capacity
from tests import hostile
from tests import server as pacs_server
from tests.conftest import csrf_token, flask_cli, wait_for
from tests.dicomkit import dataset_bytes, make_ct

CALLERS = ("HOSTILE", "FINDSCU", "STORESCU")
NETWORK_TIMEOUT = 2  # seconds, short so that the tests wait little
PER_ADDRESS = 4
SETTINGS = {"PACSLITE_DICOM_NETWORK_TIMEOUT": str(NETWORK_TIMEOUT),
            "PACSLITE_DICOM_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
            "PACSLITE_DICOM_MAX_ASSOCIATIONS": "8"}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> pacs_server.Pacs:
    instance = tmp_path_factory.mktemp("hostile")
    for title in CALLERS:  # 127.0.0.2 is "another host" of the same peer in the per-address tests
        added = flask_cli(instance, "ae", "add", title, "--host", "127.0.0.1", "--also-from", "127.0.0.2")
        assert added.returncode == 0, added.stderr
    running = pacs_server.Pacs(instance, **SETTINGS)
    yield running
    assert running.server.stop() == 0


def admin_client(pacs: pacs_server.Pacs):
    """A test client of the pages on the server's instance, logged in as an admin."""
    from pacslite import create_app
    from tests.conftest import INDEPENDENT_OF_HOST_AND_HOUR, login
    app = create_app({"INSTANCE_DIR": str(pacs.instance), "DEFAULT_LANGUAGE": "en", **INDEPENDENT_OF_HOST_AND_HOUR})
    name = f"admin{len(pacs.query('SELECT id FROM users'))}"
    pacs.add_user(name, "admin")
    client = app.test_client()
    login(client, name, "Secret-pass-1")
    return client


def worklist_find(port: int, name: str, timeout: float = 10) -> list[int]:
    """A worklist C-FIND on PatientName; the statuses of every response (pending ones included)."""
    ae = AE(ae_title="FINDSCU")
    ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSLITE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.PatientName = name
    identifier.PatientID = ""
    try:
        return [int(status.Status) if status else -1
                for status, _ in assoc.send_c_find(identifier, ModalityWorklistInformationFind)]
    finally:
        assoc.release()


def login_page(pacs: pacs_server.Pacs) -> int:
    with urllib.request.urlopen(pacs.server.url + "/login", timeout=10) as response:
        return response.status


def test_a_pathological_wildcard_answers_at_once_and_the_pages_stay_responsive(pacs) -> None:
    """Case 1: ``****…#`` made the backtracking regex run for minutes while holding the GIL."""
    pacs.register(patient_id="WILD01", name="张三", station_ae="")
    hostile = "*" * 60 + "#"
    statuses: list[list[int]] = []
    worker = threading.Thread(target=lambda: statuses.extend(worklist_find(pacs.port, hostile) for _ in range(5)))
    worker.start()
    pages = [login_page(pacs) for _ in range(5)]  # while the queries run
    worker.join(timeout=60)
    assert not worker.is_alive(), "the hostile worklist queries did not finish"
    assert pages == [200] * 5
    assert statuses == [[0x0000]] * 5  # no match, and a final success: answered, not timed out
    # wildcards still match as they should
    assert worklist_find(pacs.port, "Z*A*N*G*^*S*?N") == [0xFF00, 0x0000]
    assert worklist_find(pacs.port, "*?" * 40) == [0x0000]  # longer than any name: no match
    assert worklist_find(pacs.port, "*" * 2000) == [0xA900]  # absurdly long: refused, not searched


def ct(**fields) -> Dataset:
    """A CT image (tests/dicomkit.make_ct) as a dataset."""
    with tempfile.TemporaryDirectory() as folder:
        return make_ct(Path(folder) / "ct.dcm", **fields)


def rss_mib(pacs: pacs_server.Pacs) -> float:
    for line in open(f"/proc/{pacs.server.process.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def send_until_refused(sock, total: int) -> int:
    """Send zeros until the server closes the connection; how many bytes it took."""
    sent, block = 0, bytes(1 << 20)
    try:
        while sent < total:
            sock.sendall(block)
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_a_pdu_longer_than_announced_is_aborted_without_being_read(pacs) -> None:
    """Case 2: ``01 00 FF FF FF F0`` then zeros grew the process by the bytes sent."""
    before = rss_mib(pacs)
    with hostile.connect(pacs.port) as sock:
        sock.sendall(bytes.fromhex("0100FFFFFFF0"))
        assert hostile.closed_or_aborted(sock) == "abort"
        sent = send_until_refused(sock, 256 << 20)
    assert sent < 64 << 20, f"{sent} bytes were taken after the refusal"
    assert rss_mib(pacs) - before < 32, (before, rss_mib(pacs))

    # after association: a P-DATA one byte longer than pacslite's maximum PDU is aborted …
    assoc = hostile.associate(pacs.port, [(hostile.VERIFICATION, [hostile.IMPLICIT])])
    assert assoc.max_pdu == 131072
    assoc.send(hostile.pdu(hostile.P_DATA_TF, b"")[:2] + (assoc.max_pdu + 1).to_bytes(4, "big"))
    assert hostile.closed_or_aborted(assoc.sock) == "abort"
    assoc.sock.close()
    # … while PDUs of exactly the maximum carry an image as always
    image = hostile.outgoing(ct(size=512))
    response = hostile.store(pacs.port, image.data, image.sop_class, image.sop_instance)
    assert int(response.Status) == 0x0000
    assert hostile.echo(pacs.port) == 0x0000


def test_silent_peers_are_dropped_and_one_address_cannot_take_every_slot(pacs) -> None:
    """Case 3: 17 sockets each sending 8 bytes of a PDU held all 16 association slots."""
    slow = []
    for _ in range(PER_ADDRESS + 6):  # more than its share, from 127.0.0.1
        sock = hostile.connect(pacs.port, timeout=NETWORK_TIMEOUT * 5)
        sock.sendall(hostile.associate_rq("HOSTILE", "PACSLITE", [(1, hostile.VERIFICATION, [hostile.IMPLICIT])])[:8])
        slow.append(sock)
    # another host (127.0.0.2) is answered at once meanwhile
    assert hostile.echo(pacs.port, source="127.0.0.2", timeout=NETWORK_TIMEOUT) == 0x0000
    # the connections beyond the address's share were closed at once, the others once silent too long
    endings = [hostile.closed_or_aborted(sock) for sock in slow]
    assert endings == ["closed"] * len(slow)
    for sock in slow:
        sock.close()

    # established, then silent in the middle of a PDU: dropped too
    assoc = hostile.associate(pacs.port, [(hostile.VERIFICATION, [hostile.IMPLICIT])])
    assoc.send(hostile.pdv(1, 3, bytes(100))[:40])
    assert hostile.closed_or_aborted(assoc.sock) in ("closed", "abort")
    assoc.sock.close()
    assert hostile.echo(pacs.port) == 0x0000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process (all its threads) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_associations_held_open_and_idle_cost_the_server_next_to_nothing(pacs) -> None:
    """pynetdicom's association threads looked for work every millisecond: four idle
    associations took 0.13 of a core. Here they wait for it: the peer can hold its share open
    without using the server's processor (measured over most of the network timeout)."""
    held = [hostile.associate(pacs.port, [(hostile.VERIFICATION, [hostile.IMPLICIT])]) for _ in range(PER_ADDRESS)]
    try:
        pid = pacs.server.process.pid
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(NETWORK_TIMEOUT * 0.75)  # the interval measured, not a wait for anything
        used, elapsed = cpu_seconds(pid) - before, time.monotonic() - started
        assert used < 0.02 * elapsed * PER_ADDRESS, f"{used:.3f} s of CPU in {elapsed:.2f} s idle"
    finally:
        for assoc in held:
            assoc.sock.close()
    assert hostile.echo(pacs.port) == 0x0000


def tmp_files(pacs: pacs_server.Pacs, store: Path | None = None) -> list[Path]:
    return [p for p in storage.tmp_dir(store or pacs.settings["STORAGE_DIR"]).iterdir() if p.is_file()]


def half_sent_store(pacs: pacs_server.Pacs) -> hostile.Association:
    """An association in the middle of a C-STORE: the command and 1 MiB of an 8 MiB dataset
    sent, the partial file visible in the temporary area."""
    big = ct(size=512)
    big.NumberOfFrames = 16
    big.PixelData = bytes(16 * 512 * 512 * 2)
    image = hostile.outgoing(big)
    assoc = hostile.associate(pacs.port, [(image.sop_class, [image.syntax])])
    pdus = hostile.store_request(assoc, assoc.context_for(image.sop_class), image.sop_class, image.sop_instance,
                                 image.data)
    for data in pdus[:10]:
        assoc.send(data)
    wait_for(lambda: any(p.stat().st_size > 512 * 1024 for p in tmp_files(pacs)), "the partial file is there")
    return assoc


@pytest.mark.parametrize("ending", ["abort", "close", "silence"])
def test_an_interrupted_transfer_leaves_nothing_in_the_temporary_area(pacs, ending) -> None:
    """Case 4: aborted transfers stayed in <store>/tmp until the next start."""
    assert not tmp_files(pacs)
    assoc = half_sent_store(pacs)
    if ending == "abort":
        assoc.abort()
    elif ending == "close":
        assoc.sock.close()
    wait_for(lambda: not tmp_files(pacs), f"the partial file is removed after the peer's {ending}")
    assoc.sock.close()
    assert hostile.echo(pacs.port) == 0x0000


def test_a_transfer_that_would_cross_the_high_water_mark_is_cut_off(tmp_path) -> None:
    """Case 4: the high-water mark is also enforced while a dataset arrives: the store is a
    64 MiB filesystem of its own with the mark at 50 %, and a 48 MiB image is refused 0xA700
    with its partial file removed as soon as it crossed the mark, while small images still fit."""
    from tests.test_dicom_durability import MOUNT_TMPFS
    instance = tmp_path / "instance"
    store = instance / "storage"
    store.mkdir(parents=True)
    assert flask_cli(instance, "ae", "add", "HOSTILE", "--host", "127.0.0.1").returncode == 0
    running = pacs_server.Pacs(instance, PACSLITE_STORAGE_HIGH_WATER_PERCENT="50",
                               wrapper=("unshare", "--mount", "--map-root-user", "sh", "-c", MOUNT_TMPFS, "sh", "64m",
                                        str(store)))
    seen = Path(f"/proc/{running.server.process.pid}/root") / store.relative_to("/")  # the server's view
    try:
        big = ct(size=512)
        big.NumberOfFrames = 96
        big.PixelData = bytes(96 * 512 * 512 * 2)
        image = hostile.outgoing(big)
        response = hostile.store(running.port, image.data, image.sop_class, image.sop_instance)
        assert int(response.Status) == 0xA700
        assert not tmp_files(running, seen), "the refused transfer left its file"
        assert not running.query("SELECT 1 FROM instances")
        assert capacity.usage(seen).used_fraction < 0.5
        small = hostile.outgoing(ct(size=256))
        assert int(hostile.store(running.port, small.data, small.sop_class, small.sop_instance).Status) == 0
    finally:
        assert running.server.stop() == 0
    cut = [line for line in running.server.output if "reached its high-water mark" in line]
    assert cut, running.server.output[-20:]
    received = int(re.search(r"after (\d+) bytes", cut[0]).group(1))
    assert received < 40 * 1024 * 1024, f"cut off only after {received} bytes"


def refused_and_gone(pacs: pacs_server.Pacs, response: Dataset, sop_instance: str) -> str:
    """The C-STORE was refused 0xC000, and nothing of it stayed: no row, no file in tmp."""
    assert int(response.Status) == 0xC000, hex(int(response.Status))
    assert not pacs.query("SELECT 1 FROM instances WHERE sop_instance_uid = ?", sop_instance)
    assert not pacs.query("SELECT 1 FROM instance_conflicts WHERE sop_instance_uid = ?", sop_instance)
    wait_for(lambda: not tmp_files(pacs), "the temporary area is empty")
    return str(response.get("ErrorComment", ""))


@pytest.mark.parametrize("damage", ["pixels short of the image", "a length beyond the end", "implicit as explicit"])
def test_data_that_cannot_be_read_back_is_not_acknowledged(pacs, damage) -> None:
    """Case 5: truncated pixel data, PixelData declared 0x7FFFFFF0 with 4 KiB sent, and
    implicit-VR bytes in an explicit-VR context were all answered 0x0000."""
    ds = ct(size=256)
    if damage == "pixels short of the image":
        ds.PixelData = ds.PixelData[:-4096]
        data = hostile.encode(ds, implicit=False)
    elif damage == "a length beyond the end":
        whole = hostile.encode(ds, implicit=False)
        at = whole.index(b"\xe0\x7f\x10\x00OW")
        data = whole[:at + 8] + (0x7FFFFFF0).to_bytes(4, "little") + bytes(4096)
    else:
        data = hostile.encode(ds, implicit=True)
    comment = refused_and_gone(pacs, hostile.store(pacs.port, data, ds.SOPClassUID, ds.SOPInstanceUID),
                               ds.SOPInstanceUID)
    assert comment.startswith("not a whole data set"), comment
    assert hostile.echo(pacs.port) == 0x0000


def test_deep_sequences_are_refused_and_what_is_stored_opens_everywhere(pacs, tmp_path) -> None:
    """Case 6: sequences nested 500 deep answered 0xC211 with the file left in tmp, or were
    stored and then the study page and re-filing answered 500."""
    from pacslite.pacs import wellformed
    ds = ct(size=64, patient_id="DEEP01", accession="NOSUCH")
    plain = hostile.encode(ds, implicit=False)
    deep = hostile.with_element_before_pixels(plain, hostile.nested_sequences(500))
    comment = refused_and_gone(pacs, hostile.store(pacs.port, deep, ds.SOPClassUID, ds.SOPInstanceUID),
                               ds.SOPInstanceUID)
    assert "nested deeper than" in comment, comment

    # as deep as accepted: stored, and every page that reads it answers
    deepest = hostile.with_element_before_pixels(plain, hostile.nested_sequences(wellformed.MAX_SEQUENCE_DEPTH))
    assert int(hostile.store(pacs.port, deepest, ds.SOPClassUID, ds.SOPInstanceUID).Status) == 0x0000
    [(study_id, instance_id)] = pacs.query("SELECT s.id, i.id FROM instances i JOIN series se ON se.id = i.series_ref"
                                           " JOIN studies s ON s.id = se.study_ref WHERE i.sop_instance_uid = ?",
                                           ds.SOPInstanceUID)
    reg = pacs.register(patient_id="DEEP01", name="张三")
    client = admin_client(pacs)
    for path in (f"/studies/{study_id}", f"/instances/{instance_id}/header", f"/instances/{instance_id}/render.png"):
        assert client.get(path).status_code == 200, path
    moved = client.post(f"/studies/{study_id}/refile", data={
        "csrf_token": csrf_token(client, f"/studies/{study_id}"), "accession_number": reg.accession_number,
        "reason": "typed wrong"})
    assert moved.status_code == 302, moved.get_data(as_text=True)[-500:]
    assert pacs.query("SELECT e.accession_number FROM studies s JOIN exams e ON e.id = s.exam_ref WHERE s.id = ?",
                      study_id)[0][0] == reg.accession_number


def test_the_same_image_in_another_encoding_is_a_duplicate_and_copies_kept_aside_do_not_pile_up(pacs, tmp_path):
    """Case 7: a re-send in another transfer syntax became a duplicate_conflict, and every
    identical repeat of that kept-aside copy added another (4 files for one SOP Instance UID)."""
    from pydicom.uid import RLELossless
    from tests.dicomkit import storescu, store_results
    original = tmp_path / "original.dcm"
    ds = make_ct(original, size=128, patient_id="DUP01", accession="DUPNONE", name="ZHANG^SAN")
    ds.private_block(0x0009, "PACSLITE TEST", create=True).add_new(0x10, "LO", "private value")
    ds.save_as(original, enforce_file_format=True)
    compressed = tmp_path / "rle.dcm"
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.save_as(compressed, enforce_file_format=True)
    changed = tmp_path / "changed.dcm"
    altered = make_ct(changed, size=128, patient_id="DUP01", accession="DUPNONE", name="ZHANG^SAN",
                      sop_uid=ds.SOPInstanceUID, study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID,
                      seed=7)
    assert altered.PixelData != dcmread(original).PixelData

    def send(path: Path, *options: str) -> str:
        sent = storescu(pacs.port, [path], extra=options)
        return list(store_results(sent.stdout + sent.stderr).values())[0]

    def copies() -> tuple[int, int]:
        return (pacs.query("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?", ds.SOPInstanceUID)[0][0],
                pacs.query("SELECT COUNT(*) FROM instance_conflicts WHERE sop_instance_uid = ?",
                           ds.SOPInstanceUID)[0][0])

    files_before = sum(1 for p in Path(pacs.settings["STORAGE_DIR"], "dicom").rglob("*") if p.is_file())
    assert send(original) == "Success" and copies() == (1, 0)
    for options in (("-xi",), ("-xb",)):  # storescu re-encodes it: implicit VR, big endian
        assert send(original, *options) == "Success" and copies() == (1, 0), options
    assert send(compressed, "-xr") == "Success" and copies() == (1, 0)  # RLE lossless: the same pixels
    for _ in range(4):  # a different image under the same UID: kept aside once
        assert send(changed) == "Success" and copies() == (1, 1)
    renamed = tmp_path / "renamed.dcm"
    other = dcmread(original)
    other.PatientName = "LI^SI"  # the same pixels under another name: not the same image
    other.save_as(renamed, enforce_file_format=True)
    assert send(renamed, "-xi") == "Success" and copies() == (1, 2)
    files_after = sum(1 for p in Path(pacs.settings["STORAGE_DIR"], "dicom").rglob("*") if p.is_file())
    assert files_after - files_before == 3  # the original and the two kept-aside copies


PRINT_MANAGEMENT = "1.2.840.10008.5.1.1.9"  # Basic Grayscale Print Management Meta: never offered
CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"  # Siemens CSA Non-Image: a private storage SOP class


def test_refused_services_are_listed_and_private_storage_is_accepted(pacs) -> None:
    """Case 8: Q/R, MPPS, commitment or private-SOP-class associations were refused at
    presentation-context level without a trace; a configured modality's private storage SOP
    class is now stored as received and filed."""
    for _ in range(2):
        assoc = hostile.associate(pacs.port, [(hostile.VERIFICATION, [hostile.IMPLICIT]),
                                              (PRINT_MANAGEMENT, [hostile.IMPLICIT])], calling="FINDSCU")
        assert set(assoc.accepted) == {1}
        assoc.release()
    recorded = "SELECT attempts FROM refused_contexts WHERE abstract_syntax = ?"  # written after the accept
    wait_for(lambda: [tuple(r) for r in pacs.query(recorded, PRINT_MANAGEMENT)] == [(2,)], "both are counted")
    [row] = pacs.query("SELECT calling_ae, address, reason, attempts FROM refused_contexts WHERE abstract_syntax = ?",
                       PRINT_MANAGEMENT)
    assert tuple(row) == ("FINDSCU", "127.0.0.1", "abstract_syntax_not_supported", 2)
    page = admin_client(pacs).get("/admin/modalities").get_data(as_text=True)
    services = page[page.index('id="refused-services"'):]
    assert "Basic Grayscale Print Management Meta SOP Class" in services and PRINT_MANAGEMENT in services
    assert "FINDSCU" in services

    reg = pacs.register(patient_id="CSA01", name="张三")
    ds = ct(size=64, patient_id="CSA01", accession=reg.accession_number, name="ZHANG^SAN", sex="M",
            birth_date="19800203")
    ds.SOPClassUID = CSA_NON_IMAGE
    image = hostile.outgoing(ds)
    assert int(hostile.store(pacs.port, image.data, CSA_NON_IMAGE, image.sop_instance, calling="STORESCU").Status) == 0
    [(path, sop_class)] = pacs.query("SELECT storage_path, sop_class_uid FROM instances WHERE sop_instance_uid = ?",
                                     image.sop_instance)
    assert sop_class == CSA_NON_IMAGE
    assert dataset_bytes(storage.resolve(pacs.settings["STORAGE_DIR"], path)) == image.data  # as received
    exam = pacs.query("SELECT instance_count FROM exams WHERE accession_number = ?", reg.accession_number)[0]
    assert exam[0] == 1


def test_private_storage_can_be_refused(tmp_path) -> None:
    instance = tmp_path / "instance"
    assert flask_cli(instance, "ae", "add", "STORESCU", "--host", "127.0.0.1").returncode == 0
    running = pacs_server.Pacs(instance, PACSLITE_DICOM_ACCEPT_PRIVATE_STORAGE="0")
    try:
        assoc = hostile.associate(running.port, [(CSA_NON_IMAGE, [hostile.EXPLICIT])], calling="STORESCU")
        assert assoc.accepted == {}
        assoc.release()
        rows = running.query("SELECT calling_ae, reason FROM refused_contexts WHERE abstract_syntax = ?", CSA_NON_IMAGE)
        assert [tuple(r) for r in rows] == [("STORESCU", "abstract_syntax_not_supported")]
    finally:
        assert running.server.stop() == 0


def refuse(port: int, calling: str, source: str = "127.0.0.1") -> int:
    """An association attempt as ``calling``; the PDU type answered (3: A-ASSOCIATE-RJ)."""
    with hostile.connect(port, source) as sock:
        sock.sendall(hostile.associate_rq(calling, "PACSLITE", [(1, hostile.VERIFICATION, [hostile.IMPLICIT])]))
        return hostile.read_pdu(sock)[0]


def test_a_flood_of_unknown_callers_stays_bounded_and_real_refusals_stay_visible(pacs) -> None:
    """Case 9: 300 unknown callers added 300 rejection rows and 300 audit rows, and the page
    showed only the newest 100."""
    from pacslite.ris import aes
    audits_before = pacs.query("SELECT COUNT(*) FROM audit_log WHERE action = 'dicom.associate'"
                               " AND address = '127.0.0.1'")[0][0]
    attempts_before = pacs.query("SELECT COALESCE(SUM(attempts), 0) FROM association_rejections"
                                 " WHERE address = '127.0.0.1'")[0][0]
    for n in range(300):
        assert refuse(pacs.port, f"FLOOD{n:04d}") == hostile.A_ASSOCIATE_RJ
    rows = pacs.query("SELECT calling_ae, attempts FROM association_rejections WHERE address = '127.0.0.1'")
    assert len(rows) <= aes.REFUSAL_ROWS_PER_ADDRESS + 1
    assert sum(r[1] for r in rows) == attempts_before + 300  # every attempt counted, in bounded rows
    assert dict(rows).get(aes.OTHERS, 0) >= 300 - aes.REFUSAL_ROWS_PER_ADDRESS
    audits = pacs.query("SELECT COUNT(*) FROM audit_log WHERE action = 'dicom.associate'"
                        " AND address = '127.0.0.1'")[0][0] - audits_before
    assert audits <= 2  # at most one a minute (the flood may cross a minute)

    # a real modality, from another address, is still there to be added
    assert refuse(pacs.port, "NEWCT", source="127.0.0.2") == hostile.A_ASSOCIATE_RJ
    page = admin_client(pacs).get("/admin/modalities").get_data(as_text=True)
    rejections = page[page.index('id="rejections"'):page.index('id="refused-services"')]
    assert "NEWCT" in rejections and "127.0.0.2" in rejections and "other AE titles" in rejections
    assert rejections.count("Add as modality") <= aes.REFUSAL_ROWS_PER_ADDRESS + 1


def test_each_ae_is_offered_only_what_it_may_use(pacs) -> None:
    """Issue 14: a workstation may query and retrieve, a modality store and read the worklist;
    what an AE may not use is refused as "not permitted" and listed."""
    from pacslite.core import audit
    from pacslite.ris import aes
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
    conn = pacs.conn()
    try:
        aes.add_ae(conn, audit.SYSTEM, {"ae_title": "WLONLY", "host": "127.0.0.1", "rights": "worklist"})
        aes.add_ae(conn, audit.SYSTEM, {"ae_title": "STOREONLY", "host": "127.0.0.1", "rights": ["store"]})
    finally:
        conn.close()
    worklist = str(ModalityWorklistInformationFind)
    contexts = [(hostile.VERIFICATION, [hostile.IMPLICIT]), (str(CTImageStorage), [hostile.EXPLICIT]),
                (worklist, [hostile.IMPLICIT]), (CSA_NON_IMAGE, [hostile.EXPLICIT])]
    for calling, offered in (("WLONLY", {hostile.VERIFICATION, worklist}),
                             ("STOREONLY", {hostile.VERIFICATION, str(CTImageStorage), CSA_NON_IMAGE})):
        assoc = hostile.associate(pacs.port, contexts, calling=calling)
        assert {assoc.abstract[cid] for cid in assoc.accepted} == offered, calling
        assoc.release()
    wait_for(lambda: len(pacs.query("SELECT 1 FROM refused_contexts WHERE calling_ae IN ('WLONLY', 'STOREONLY')")) == 3,
             "the refusals are recorded (after the accept)")
    refused = {(r[0], r[1]): r[2] for r in pacs.query(
        "SELECT calling_ae, abstract_syntax, reason FROM refused_contexts WHERE calling_ae IN ('WLONLY', 'STOREONLY')")}
    assert refused == {("WLONLY", str(CTImageStorage)): "not_permitted",
                       ("WLONLY", CSA_NON_IMAGE): "abstract_syntax_not_supported",  # private storage: a store right
                       ("STOREONLY", worklist): "not_permitted"}, refused
    page = admin_client(pacs).get("/admin/modalities").get_data(as_text=True)
    assert "Not permitted for this AE" in page[page.index('id="refused-services"'):]
