"""What pynetdicom's network layer does not bound, bounded: PDU lengths, slow peers, and how
many connections one address may hold. A PACS is one server for a whole department: one peer
must not fill its memory, freeze an association thread or lock the others out.

- **PDU length.** pynetdicom reads a PDU's whole declared length into memory before it looks
  at it (``01 00 FF FF FF F0`` grew the process by 300 MB). Here the 6-byte header is checked
  first: before association a PDU may be at most :data:`ASSOCIATE_RQ_CAP` bytes, after it at
  most the maximum PDU length pacslite announced; anything longer is answered with an
  A-ABORT at once and the connection closed, without reading the body.
- **Slow peers.** The accepted socket has no timeout, so a peer that sent half a PDU and
  stopped held an association thread for ever. Here a receive or a send that waits longer
  than the network timeout fails (kernel socket timeouts), and a PDU still incomplete after
  the network timeout is dropped at its next receive (no trickling a byte at a time).
- **Connections per address.** One address may hold at most ``DICOM_MAX_CONNECTIONS_PER_ADDRESS``
  connections; more are closed at once, so that one misbehaving host cannot take every
  association slot.
- **The end of an association** calls a hook whatever ended it, so that what it leaves
  behind is cleared.
"""
from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from typing import Any, Callable

from pynetdicom.association import Association
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

log = logging.getLogger(__name__)

#: The largest A-ASSOCIATE-RQ accepted (and any PDU before association): 128 presentation
#: contexts with several transfer syntaxes each take about 20 KiB.
ASSOCIATE_RQ_CAP = 64 * 1024
#: After association, when pacslite announces no maximum (DICOM_MAX_PDU = 0).
UNANNOUNCED_CAP = 16 * 1024 * 1024
#: A-ABORT from the service provider, "invalid PDU parameter value" (PS3.8 9.3.8).
ABORT_SOURCE, ABORT_REASON = 0x02, 0x06
PDU_TYPES = range(0x01, 0x08)


def no_delay(sock: socket.socket) -> None:
    """Send small PDUs at once: with Nagle's algorithm on (pynetdicom leaves it on), the last
    PDU of a message waits for the peer's delayed ACK, about 40 ms, once per image sent."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class GuardedSocket(AssociationSocket):
    """pynetdicom's association socket with the PDU length checked and a deadline per PDU.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type and length) and then ``recv(length)``;
    :meth:`recv` knows which of the two it is serving.
    """

    network_timeout: float = 30.0
    max_pdu: int = 0
    _body_expected: int | None = None
    _deadline: float = 0.0

    def guard(self, network_timeout: float, max_pdu: int) -> None:
        """Kernel timeouts on the (blocking) socket: a peer silent for ``network_timeout`` makes
        a receive or a send fail, at no cost per call (a Python socket timeout would poll first)."""
        self.network_timeout, self.max_pdu = network_timeout, max_pdu
        if self.socket is not None:
            seconds = int(network_timeout)
            timeval = struct.pack("ll", seconds, int((network_timeout - seconds) * 1e6))
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            no_delay(self.socket)

    def _cap(self, pdu_type: int) -> int:
        if self.assoc.dul.state_machine.current_state == "Sta2":  # awaiting the A-ASSOCIATE-RQ
            return ASSOCIATE_RQ_CAP
        if pdu_type == 0x04:  # P-DATA-TF: what pacslite announced as its maximum
            return self.max_pdu or UNANNOUNCED_CAP
        return ASSOCIATE_RQ_CAP

    def _recv_until_deadline(self, count: int) -> bytearray:
        """Up to ``count`` bytes. Each receive waits at most the network timeout (the socket's
        own); a peer that trickles a byte now and then is cut off once the PDU's deadline passed."""
        sock = self.socket
        assert sock is not None
        data = bytearray()
        while len(data) < count:
            if time.monotonic() > self._deadline:
                raise TimeoutError(f"the peer sent {len(data)} of {count} bytes within {self.network_timeout} s")
            chunk = sock.recv(min(count - len(data), 65536))
            if not chunk:
                break
            data += chunk
        return data

    def recv(self, nr_bytes: int) -> bytearray:
        if self._body_expected is not None and nr_bytes == self._body_expected:
            self._body_expected = None
            return self._recv_until_deadline(nr_bytes)
        self._deadline = time.monotonic() + self.network_timeout
        header = self._recv_until_deadline(nr_bytes)
        if len(header) == 6:
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type in PDU_TYPES:
                if length > self._cap(pdu_type):
                    self._refuse(pdu_type, length)
                    return bytearray()  # pynetdicom takes an empty header as "connection closed"
                self._body_expected = length
        return header

    def _refuse(self, pdu_type: int, length: int) -> None:
        peer = self.assoc.requestor.address
        log.warning("aborted the connection from %s: a PDU of type %d declared %d bytes, more than the %d"
                    " accepted", peer, pdu_type, length, self._cap(pdu_type))
        abort = A_ABORT_RQ()
        abort.source, abort.reason_diagnostic = ABORT_SOURCE, ABORT_REASON
        try:
            assert self.socket is not None
            self.socket.sendall(abort.encode())
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class EndingAssociation(Association):
    """An association that calls ``on_end(self)`` when its thread ends, however it ends.

    pynetdicom's connection-closed event is not raised on every path (an exception in its
    reader kills the association without it), and what an association leaves behind (a
    partly received file, a database connection) must go whatever happened.
    """

    on_end: Callable[[Any], object] | None = None

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.on_end is not None:
                self.on_end(self)


class GuardedRequestHandler(RequestHandler):
    """Gives each accepted association a :class:`GuardedSocket` and its end hook."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assoc.__class__ = EndingAssociation  # the same object: not started yet
        assoc.on_end = self.server.on_association_end
        sock = assoc.dul.socket
        sock.__class__ = GuardedSocket  # the same object, with the guarded recv
        sock.guard(float(self.server.network_timeout), int(self.ae.maximum_pdu_size))
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """The association server, with at most ``per_address`` live connections from one address."""

    def __init__(self, *args: Any, per_address: int, network_timeout: float,
                 on_association_end: Callable[[Any], object] | None = None, **kwargs: Any) -> None:
        self.per_address = per_address
        self.network_timeout = network_timeout
        self.on_association_end = on_association_end
        self._live: dict[str, list[socket.socket]] = {}
        self._live_lock = threading.Lock()
        self._last_warning: dict[str, float] = {}
        super().__init__(*args, request_handler=GuardedRequestHandler, **kwargs)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse (close at once) a connection beyond the address's share."""
        address = str(client_address[0])
        with self._live_lock:
            live = [s for s in self._live.get(address, []) if s.fileno() != -1]
            if self.per_address and len(live) >= self.per_address:
                self._live[address] = live
                self._warn(address, len(live))
                return False
            self._live[address] = [*live, request]
            for other in [a for a, socks in self._live.items() if not any(s.fileno() != -1 for s in socks)]:
                del self._live[other]
        return True

    def _warn(self, address: str, count: int) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(address, 0.0) >= 60:
            self._last_warning[address] = now
            log.warning("refused connections from %s: it holds %d already, the most one address may", address, count)
