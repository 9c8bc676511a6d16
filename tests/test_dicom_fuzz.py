"""A bounded fuzz of the DICOM port (issue 13): a few hundred mutated association requests,
command sets and datasets (bytes flipped, lengths changed, cut short, bytes inserted), sent
by a raw-socket peer. After every case pacslite still answers C-ECHO and /login, nothing is
left in its temporary area, and every image it acknowledged (0x0000) reads back whole."""
from __future__ import annotations

import random
import socket
import struct
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid

from pacslite.core import storage
from pacslite.pacs import wellformed
from tests import hostile
from tests import server as pacs_server
from tests.conftest import flask_cli
from tests.dicomkit import make_ct

SEED = 13
CASES = {"dataset": 220, "command": 40, "association": 60, "framing": 40}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> pacs_server.Pacs:
    instance = tmp_path_factory.mktemp("fuzz")
    assert flask_cli(instance, "ae", "add", "HOSTILE", "--host", "127.0.0.1").returncode == 0
    running = pacs_server.Pacs(instance, PACSLITE_DICOM_NETWORK_TIMEOUT="2")
    yield running
    assert running.server.stop() == 0


def base_image(syntax: str) -> Dataset:
    """A small CT with nested sequences (items and delimiters to damage), in ``syntax``."""
    with tempfile.TemporaryDirectory() as folder:
        ds = make_ct(Path(folder) / "ct.dcm", size=32, patient_id="FUZZ", accession="FUZZNONE")
    inner = Dataset()
    inner.CodeValue, inner.CodeMeaning = "T-D3000", "Chest"
    middle = Dataset()
    middle.ConceptNameCodeSequence = Sequence([inner])
    ds.ContentSequence = Sequence([middle, middle])
    if syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
    return ds


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of: flip a few bytes, overwrite a 4-byte field (a length, often), cut short, insert."""
    data = bytearray(data)
    kind = rng.choice(["flip", "length", "truncate", "insert"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "length":
        at = rng.randrange(0, len(data) - 4)
        value = rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFF0, len(data), rng.randrange(1 << 32)])
        data[at:at + 4] = struct.pack("<L", value)
    elif kind == "truncate":
        del data[rng.randrange(1, len(data)):]
    else:
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(data)


def store_pdus(assoc: hostile.Association, ds: Dataset, syntax: str, command: bytes | None, dataset: bytes) -> list[bytes]:
    context = assoc.context_for(str(ds.SOPClassUID))
    cmd = command if command is not None else hostile.command(
        AffectedSOPClassUID=ds.SOPClassUID, CommandField=0x0001, MessageID=1, Priority=0, CommandDataSetType=0,
        AffectedSOPInstanceUID=ds.SOPInstanceUID)
    return (hostile.fragments(context, cmd, assoc.max_pdu, is_command=True)
            + hostile.fragments(context, dataset, assoc.max_pdu))


def encoded(ds: Dataset, syntax: str) -> bytes:
    if syntax == RLELossless:
        return hostile.encode(ds, implicit=False)
    return hostile.encode(ds, implicit=syntax == ImplicitVRLittleEndian)


def answer_or_end(sock: socket.socket, wait: float) -> int | None:
    """The C-STORE status if one comes within ``wait`` seconds; else end the connection
    (half-close, so that the server sees the end at once) and wait for it to close."""
    sock.settimeout(wait)
    try:
        return int(hostile.read_response(hostile.Association(sock)).Status)
    except (TimeoutError, socket.timeout):
        pass
    except (ConnectionError, OSError, ValueError, KeyError, AttributeError, IndexError, struct.error):
        return None
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        while sock.recv(65536):
            pass
    except OSError:
        pass
    return None


def run_case(pacs: pacs_server.Pacs, kind: str, rng: random.Random) -> tuple[str, int | None]:
    """One mutated exchange; (the SOP Instance UID it named, the status it got or None)."""
    syntax = rng.choice([ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
    ds = base_image(syntax)
    ds.SOPInstanceUID = generate_uid()
    contexts = [(str(ds.SOPClassUID), [syntax])]
    if kind == "association":
        rq = hostile.associate_rq("HOSTILE", "PACSLITE", [(1, *contexts[0])])
        with hostile.connect(pacs.port) as sock:
            try:
                sock.sendall(mutate(rq, rng))
            except OSError:
                return ds.SOPInstanceUID, None
            return ds.SOPInstanceUID, answer_or_end(sock, 0.05)
    assoc = hostile.associate(pacs.port, contexts)
    dataset = encoded(ds, syntax)
    command = None
    if kind == "dataset":
        dataset = mutate(dataset, rng)
    elif kind == "command":
        command = mutate(hostile.command(AffectedSOPClassUID=ds.SOPClassUID, CommandField=0x0001, MessageID=1,
                                         Priority=0, CommandDataSetType=0,
                                         AffectedSOPInstanceUID=ds.SOPInstanceUID), rng)
    pdus = store_pdus(assoc, ds, syntax, command, dataset)
    if kind == "framing":  # the PDU and PDV headers themselves
        victim = rng.randrange(len(pdus))
        pdus[victim] = mutate(pdus[victim][:12], rng) + pdus[victim][12:]
    try:
        for data in pdus:
            assoc.send(data)
    except OSError:
        assoc.sock.close()
        return ds.SOPInstanceUID, None
    status = answer_or_end(assoc.sock, 10 if kind == "dataset" else 0.3)
    if status is not None:
        try:
            assoc.release()
        except OSError:
            pass
    assoc.sock.close()
    return ds.SOPInstanceUID, status


def reads_back_whole(path: Path) -> None:
    """Parses to its end; uncompressed pixels decode, compressed ones split into their frames.
    (A compressed stream's content is the sender's: pacslite keeps it as received and does not
    decode it on the way in, as neither storescp nor Orthanc do.)"""
    wellformed.check_file(path)
    ds = dcmread(path)
    for element in ds.iterall():
        _ = element.value
    if "PixelData" not in ds:
        return
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
        assert frames and all(frames)
    else:
        _ = ds.pixel_array


def test_mutated_pdus_and_datasets_never_stop_fill_or_fool_the_server(pacs) -> None:
    rng = random.Random(SEED)
    tmp = storage.tmp_dir(pacs.settings["STORAGE_DIR"])
    acknowledged, outcomes = [], {}
    started = time.monotonic()
    cases = [kind for kind, count in CASES.items() for _ in range(count)]
    rng.shuffle(cases)
    for number, kind in enumerate(cases):
        sop, status = run_case(pacs, kind, rng)
        outcomes[(kind, status)] = outcomes.get((kind, status), 0) + 1
        if status == 0x0000:
            acknowledged.append(sop)
        assert hostile.echo(pacs.port) == 0x0000, f"case {number} ({kind}): no C-ECHO afterwards"
        with urllib.request.urlopen(pacs.server.url + "/login", timeout=10) as page:
            assert page.status == 200, f"case {number} ({kind}): /login afterwards"
        deadline = time.monotonic() + 10
        while any(tmp.iterdir()):
            assert time.monotonic() < deadline, f"case {number} ({kind}) left {list(tmp.iterdir())} in tmp"
            time.sleep(0.02)
    elapsed = time.monotonic() - started
    # every acknowledged image reads back whole
    assert acknowledged, outcomes
    for sop in acknowledged:
        [row] = pacs.query("SELECT storage_path FROM instances WHERE sop_instance_uid = ?", sop)
        reads_back_whole(storage.resolve(pacs.settings["STORAGE_DIR"], row[0]))
    refused = sum(count for (kind, status), count in outcomes.items() if status not in (0, None))
    assert refused > 50, outcomes  # the fuzz did reach the checks
    print(f"fuzz: {len(cases)} cases in {elapsed:.1f} s, {len(acknowledged)} acknowledged, outcomes {outcomes}")
