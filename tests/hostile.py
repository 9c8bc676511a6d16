"""A hostile DICOM peer: raw sockets that send exactly the bytes a test chooses (PS3.8 PDUs by
hand), so that tests can send what no well-behaved toolkit would: lies about lengths, half
PDUs, malformed datasets, floods. Everything talks to 127.0.0.x only."""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT, EXPLICIT = ImplicitVRLittleEndian, ExplicitVRLittleEndian
VERIFICATION = "1.2.840.10008.1.1"
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = range(1, 8)


def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def _uid(kind: int, value: str) -> bytes:
    return _item(kind, value.encode("ascii"))


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body)) + body


def associate_rq(calling: str, called: str, contexts: list[tuple[int, str, list[str]]], max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``contexts`` as (id, abstract syntax, transfer syntaxes)."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode("ascii") + calling.ljust(16).encode("ascii") + bytes(32)
    body += _uid(0x10, APPLICATION_CONTEXT)
    for context_id, abstract, syntaxes in contexts:
        sub = _uid(0x30, abstract) + b"".join(_uid(0x40, ts) for ts in syntaxes)
        body += _item(0x20, bytes([context_id, 0, 0, 0]) + sub)
    user = _item(0x51, struct.pack(">L", max_pdu)) + _uid(0x52, "1.2.826.0.1.3680043.9.7433.1")
    body += _item(0x50, user)
    return pdu(A_ASSOCIATE_RQ, body)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    """A TCP connection to pacslite on 127.0.0.1 from ``source`` (another 127.0.0.x is another host)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return bytes(data)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """The next PDU: (type, body). ConnectionError when the peer closed; timeout as the socket's."""
    kind, _, length = struct.unpack(">BBL", recv_exactly(sock, 6))
    return kind, recv_exactly(sock, length)


def closed_or_aborted(sock: socket.socket) -> str:
    """Wait (up to the socket's timeout) until the server ends the connection: 'abort' when it
    sent an A-ABORT, 'closed' when it just closed; raises TimeoutError if it does neither."""
    try:
        while True:
            kind, _ = read_pdu(sock)
            if kind == A_ABORT:
                return "abort"
    except (ConnectionError, ConnectionResetError):
        return "closed"


@dataclass
class Association:
    sock: socket.socket
    accepted: dict[int, str] = field(default_factory=dict)  # context id → transfer syntax
    abstract: dict[int, str] = field(default_factory=dict)  # context id → abstract syntax
    max_pdu: int = 16384  # what the server receives at most
    next_message_id: int = 1

    def context_for(self, abstract: str) -> int:
        return next(cid for cid, syntax in self.abstract.items() if syntax == abstract and cid in self.accepted)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def release(self) -> None:
        self.send(pdu(A_RELEASE_RQ, bytes(4)))
        try:
            while read_pdu(self.sock)[0] != A_RELEASE_RP:
                pass
        except ConnectionError:
            pass
        self.sock.close()

    def abort(self) -> None:
        self.send(pdu(A_ABORT, bytes(4)))
        self.sock.close()


def parse_accept(body: bytes) -> tuple[dict[int, str], int]:
    """The accepted contexts ({id: transfer syntax}) and the acceptor's maximum PDU length."""
    accepted, max_pdu, offset = {}, 0, 68
    while offset < len(body):
        kind, length = body[offset], struct.unpack(">H", body[offset + 2:offset + 4])[0]
        payload = body[offset + 4:offset + 4 + length]
        if kind == 0x21 and payload[2] == 0:
            ts_length = struct.unpack(">H", payload[6:8])[0]
            accepted[payload[0]] = payload[8:8 + ts_length].decode("ascii").rstrip("\0 ")
        elif kind == 0x50:
            sub = 0
            while sub < len(payload):
                sub_kind, sub_length = payload[sub], struct.unpack(">H", payload[sub + 2:sub + 4])[0]
                if sub_kind == 0x51:
                    max_pdu = struct.unpack(">L", payload[sub + 4:sub + 8])[0]
                sub += 4 + sub_length
        offset += 4 + length
    return accepted, max_pdu


def associate(port: int, contexts: list[tuple[str, list[str]]], *, calling: str = "HOSTILE",
              called: str = "PACSLITE", source: str = "127.0.0.1", timeout: float = 10) -> Association:
    """An established association; contexts are (abstract syntax, transfer syntaxes), ids 1, 3, 5…"""
    numbered = [(1 + 2 * n, abstract, syntaxes) for n, (abstract, syntaxes) in enumerate(contexts)]
    sock = connect(port, source, timeout)
    sock.sendall(associate_rq(calling, called, numbered))
    kind, body = read_pdu(sock)
    if kind != A_ASSOCIATE_AC:
        sock.close()
        raise ConnectionRefusedError(f"association not accepted: PDU type {kind}, {body.hex()}")
    accepted, max_pdu = parse_accept(body)
    return Association(sock, accepted, {cid: abstract for cid, abstract, _ in numbered}, max_pdu or 1 << 32)


def encode(ds: Dataset, implicit: bool = True, little: bool = True) -> bytes:
    """``ds`` encoded without file meta, in the given VR encoding and byte order."""
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = implicit, little
    write_dataset(out, ds)
    return out.getvalue()


@dataclass(frozen=True)
class Outgoing:
    """A dataset as it goes on the wire (no file meta), and the UIDs its C-STORE names."""

    data: bytes
    sop_class: str
    sop_instance: str
    syntax: str = ExplicitVRLittleEndian


def outgoing(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> Outgoing:
    """``ds`` encoded for the wire in an uncompressed ``syntax`` (big endian included)."""
    little = syntax != "1.2.840.10008.1.2.2"
    return Outgoing(encode(ds, implicit=syntax == ImplicitVRLittleEndian, little=little), str(ds.SOPClassUID),
                    str(ds.SOPInstanceUID), syntax)


def nested_sequences(depth: int, implicit: bool = False) -> bytes:
    """A ContentSequence (0040,A730) nested ``depth`` deep, undefined lengths, little endian:
    built by hand, since pydicom takes exponential time to write deep nesting."""
    tag = struct.pack("<HH", 0x0040, 0xA730)
    sequence = tag + (b"" if implicit else b"SQ\0\0") + b"\xff\xff\xff\xff"
    item, item_end = b"\xfe\xff\x00\xe0\xff\xff\xff\xff", b"\xfe\xff\x0d\xe0" + bytes(4)
    sequence_end = b"\xfe\xff\xdd\xe0" + bytes(4)
    code = struct.pack("<HH", 0x0008, 0x0100) + (struct.pack("<L", 2) if implicit else b"SH" + struct.pack("<H", 2))
    inner = code + b"X "
    for _ in range(depth):
        inner = sequence + item + inner + item_end + sequence_end
    return inner


def with_element_before_pixels(dataset: bytes, element: bytes, implicit: bool = False) -> bytes:
    """``dataset`` (little endian, pixel data last) with ``element`` inserted before the pixels."""
    at = dataset.index(b"\xe0\x7f\x10\x00" + (b"" if implicit else b"O"))
    return dataset[:at] + element + dataset[at:]


def command(**elements: object) -> bytes:
    """A DIMSE command set (implicit VR little endian, group length first)."""
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    body = encode(ds)
    ds.CommandGroupLength = len(body)
    return encode(ds)


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    """One P-DATA-TF PDU holding one presentation data value (control: 0/2 dataset, 1/3 command; +2 last)."""
    return pdu(P_DATA_TF, struct.pack(">LBB", len(data) + 2, context_id, control) + data)


def fragments(context_id: int, data: bytes, max_pdu: int, is_command: bool = False) -> list[bytes]:
    """``data`` cut into P-DATA-TF PDUs that respect the receiver's maximum PDU length."""
    size = max(1, max_pdu - 6) if max_pdu else len(data) or 1
    chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    base = 1 if is_command else 0
    return [pdv(context_id, base | (2 if n == len(chunks) - 1 else 0), chunk) for n, chunk in enumerate(chunks)]


def store_request(assoc: Association, context_id: int, sop_class: str, sop_instance: str, dataset: bytes) -> list[bytes]:
    """The PDUs of a C-STORE-RQ carrying ``dataset`` (already encoded in the context's syntax)."""
    message_id, assoc.next_message_id = assoc.next_message_id, assoc.next_message_id + 1
    cmd = command(AffectedSOPClassUID=sop_class, CommandField=0x0001, MessageID=message_id, Priority=0,
                  CommandDataSetType=0x0000, AffectedSOPInstanceUID=sop_instance)
    return fragments(context_id, cmd, assoc.max_pdu, is_command=True) + fragments(context_id, dataset, assoc.max_pdu)


def read_response(assoc: Association) -> Dataset:
    """The next DIMSE response's command set (Status, ErrorComment, …)."""
    data = b""
    while True:
        kind, body = read_pdu(assoc.sock)
        if kind != P_DATA_TF:
            raise ConnectionError(f"expected P-DATA, got PDU type {kind}")
        offset = 0
        while offset < len(body):
            length = struct.unpack(">L", body[offset:offset + 4])[0]
            control, value = body[offset + 5], body[offset + 6:offset + 4 + length]
            offset += 4 + length
            if control & 1:
                data += value
                if control & 2:
                    return read_dataset(BytesIO(data), is_implicit_VR=True, is_little_endian=True)


def store(port: int, dataset: bytes, sop_class: str, sop_instance: str, *, syntax: str = ExplicitVRLittleEndian,
          calling: str = "HOSTILE", source: str = "127.0.0.1") -> Dataset:
    """Send one dataset as it is (no checks) on its own association; the C-STORE response."""
    assoc = associate(port, [(sop_class, [syntax])], calling=calling, source=source)
    try:
        for data in store_request(assoc, assoc.context_for(sop_class), sop_class, sop_instance, dataset):
            assoc.send(data)
        return read_response(assoc)
    finally:
        assoc.release()


def echo(port: int, *, calling: str = "HOSTILE", source: str = "127.0.0.1", timeout: float = 10) -> int:
    """A C-ECHO on a new association; its status."""
    assoc = associate(port, [(VERIFICATION, [ImplicitVRLittleEndian])], calling=calling, source=source,
                      timeout=timeout)
    try:
        cmd = command(AffectedSOPClassUID=VERIFICATION, CommandField=0x0030, MessageID=1, CommandDataSetType=0x0101)
        for data in fragments(assoc.context_for(VERIFICATION), cmd, assoc.max_pdu, is_command=True):
            assoc.send(data)
        return int(read_response(assoc).Status)
    finally:
        assoc.release()
