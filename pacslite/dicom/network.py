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
- **Data sets of DIMSE messages** other than C-STORE's (which go to a file as they arrive)
  are counted as their fragments arrive: one longer than its limit (a C-FIND identifier, an
  MPPS, an N-ACTION; ``DICOM_MAX_*_BYTES``) is dropped unread and the association aborted,
  before pydicom decodes anything (an N-ACTION of 19 MB took 16 s and 600 MB to refuse).
- **The end of an association** calls a hook whatever ended it, so that what it leaves
  behind is cleared.
- **Waiting, not polling.** pynetdicom 3.0's two threads per association wake every
  millisecond to look for work; here they wait for it (:class:`WaitingDUL`).
"""
from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from typing import Any, Callable

from io import BytesIO

from pynetdicom import dimse_messages, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from ..core import proxies

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
        abort_connection(self, f"a PDU of type {pdu_type} declared {length} bytes, more than the"
                               f" {self._cap(pdu_type)} accepted")


def abort_connection(sock: Any, why: str) -> None:
    """A-ABORT (service provider, invalid PDU parameter) and close at once.

    Closed, not only shut down: what the peer had already sent is never read or decoded, and
    the kernel answers it with a reset, so a peer pushing data stops at once. (After a mere
    shutdown the kernel stops announcing its window: a sender stalled on a full window waited
    for its next window probe, a minute and more on a loaded machine.) pynetdicom's reader
    then finds the socket closed and ends the association as for any closed connection.
    """
    log.warning("aborted the connection from %s: %s", sock.assoc.requestor.address, why)
    abort = A_ABORT_RQ()
    abort.source, abort.reason_diagnostic = ABORT_SOURCE, ABORT_REASON
    raw = sock.socket
    if raw is None:
        return
    try:
        raw.sendall(abort.encode())
        raw.shutdown(socket.SHUT_WR)  # the A-ABORT goes out ahead of the reset
    except OSError:
        pass
    finally:
        raw.close()


#: The data-set limit of each DIMSE request, by its message class name (set by :func:`bound_data_sets`).
_DATA_SET_LIMITS: dict[str, int] = {}
_DEFAULT_LIMIT_KEY = "C_FIND_RQ"


def bound_data_sets(limits: dict[str, int]) -> None:
    """Count each DIMSE message's data set as it arrives (pynetdicom keeps it in memory until
    the message is whole); one over its limit is dropped and the association aborted.
    ``limits``: message class name (C_FIND_RQ, N_ACTION_RQ …) → bytes (0: none); others get
    C-FIND's."""
    _DATA_SET_LIMITS.clear()
    _DATA_SET_LIMITS.update(limits)
    message_class = dimse_messages.DIMSEMessage
    if getattr(message_class.decode_msg, "pacslite_bounded", False):
        return
    decode = message_class.decode_msg

    def bounded_decode(self: Any, primitive: Any, assoc: Any = None) -> bool:
        done = decode(self, primitive, assoc)
        data = self.data_set
        if isinstance(data, BytesIO) and not getattr(self, "_data_set_file", None):
            name = type(self).__name__
            limit = _DATA_SET_LIMITS.get(name, _DATA_SET_LIMITS.get(_DEFAULT_LIMIT_KEY, 0))
            if limit and data.tell() > limit:
                self.data_set = BytesIO()  # the memory goes back at once
                sock = getattr(getattr(assoc, "dul", None), "socket", None)
                if sock is not None:
                    abort_connection(sock, f"the data set of a {name.replace('_', '-')} passed {limit} bytes")
                return False  # never handed on: nothing decodes it
        return done

    bounded_decode.pacslite_bounded = True  # type: ignore[attr-defined]
    message_class.decode_msg = bounded_decode  # type: ignore[method-assign]


#: The longest an association's threads wait without being woken: what nobody wakes them for
#: (the ARTIM and idle timers, a socket closed from another thread) is seen within this.
LONGEST_WAIT = 0.05


class WaitingDUL(DULServiceProvider):
    """pynetdicom's reader of an association, waiting for work instead of looking for it.

    pynetdicom 3.0 polls: an idle association's reader sleeps a millisecond and looks again,
    and so does its association thread, 2,000 wake-ups a second per association (four
    associations cost 0.13 of a core doing nothing; while four stored, two fifths of the
    receiving process's samples were in those loops, fighting the working threads for the
    GIL). This reader waits in ``select`` on its socket and on a wake-up pair, written when the
    association queues a PDU or stops the reader, and tells the association thread through
    :attr:`activity` each time it has handled an event. Otherwise the loop is pynetdicom's
    ``run_reactor`` (3.0.4, pinned in requirements.txt).
    """

    activity: threading.Event
    _wake_r: socket.socket
    _wake_w: socket.socket

    @classmethod
    def adopt(cls, dul: DULServiceProvider) -> None:
        """Make a not yet started reader wait (the same object, so that what holds it stays right)."""
        dul.__class__ = cls
        assert isinstance(dul, cls)
        dul.activity = threading.Event()
        dul._wake_r, dul._wake_w = socket.socketpair()
        dul._wake_r.setblocking(False)
        dul._wake_w.setblocking(False)

    def run(self) -> None:
        try:
            self.run_reactor()
        finally:
            self.activity.set()  # the association thread sees the reader gone at once
            self._wake_r.close()
            self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (it is awake anyway) or closed (it has ended)
            pass

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._wake()
        return bool(super().stop_dul())

    def _wait_for_work(self) -> None:
        """Until the peer sends, the association queues a PDU, or :data:`LONGEST_WAIT`."""
        waiting_on: list[Any] = [self._wake_r]
        sock = self.socket
        if sock is not None and sock.socket is not None and sock._is_connected:
            waiting_on.append(sock.socket)
        try:
            select.select(waiting_on, [], [], LONGEST_WAIT)
        except (OSError, ValueError):  # the socket closed meanwhile: the loop sees it
            return
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def run_reactor(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:  # queued ahead of any other event of this turn
                self.event_queue.put("Evt18")
            try:  # send one queued primitive, or read one PDU
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                self._abort_on_failure(exc)
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            self.activity.set()
            idle = False

    def _abort_on_failure(self, exc: Exception) -> None:
        """As pynetdicom does: past its state machine, an A-ABORT, and both threads end."""
        log.error("exception in the association's reader, aborting: %s", exc, exc_info=exc)
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class EndingAssociation(Association):
    """An accepted association that calls ``on_end(self)`` when its thread ends, however it
    ends, and waits for its reader's news instead of looking every millisecond (:class:`WaitingDUL`).

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

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop (3.0.4): serve each DIMSE message, end on release, abort,
        the reader's end or the idle timer. It waits only when the last turn found nothing,
        and clears the reader's :attr:`~WaitingDUL.activity` before looking, so that news
        arriving while it looks wakes the next wait at once. While it waits it counts as
        paused: whoever pauses it (to send on this association) need not wait for a turn."""
        activity = self.dul.activity
        self._is_paused = False
        idle = False
        while not self._kill:
            self._is_paused = True
            if idle:
                activity.wait(LONGEST_WAIT)
            activity.clear()
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            idle = msg is None
            if msg:
                self._serve_request(msg, int(context_id))
            if self._ended_by_peer_or_timer():
                return

    def _ended_by_peer_or_timer(self) -> bool:
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            log.debug("association released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires for its subscribers
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            log.error("network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return True
        return False


class GuardedRequestHandler(RequestHandler):
    """Gives each accepted association a :class:`GuardedSocket` and its end hook; on the TLS
    port, first the handshake, in the association's own thread and within the network timeout
    (pynetdicom does it in the thread that accepts: one silent client froze the port)."""

    def handle(self) -> None:
        if isinstance(self.request, ssl.SSLSocket) and not self._handshake(self.request):
            return
        super().handle()

    def _handshake(self, sock: ssl.SSLSocket) -> bool:
        address = str(self.client_address[0])
        sock.settimeout(float(self.server.network_timeout))
        try:
            sock.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            log.warning("refused a TLS connection from %s: %s", address, exc)
            if self.server.on_refused is not None:
                self.server.on_refused(address, "tls_handshake")
            try:
                sock.close()
            except OSError:
                pass
            return False
        sock.settimeout(None)  # blocking again: the guarded socket sets kernel timeouts
        return True

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assoc.__class__ = EndingAssociation  # the same object: not started yet
        WaitingDUL.adopt(assoc.dul)
        assoc.on_end = self.server.on_association_end
        sock = assoc.dul.socket
        sock.__class__ = GuardedSocket  # the same object, with the guarded recv
        sock.guard(float(self.server.network_timeout), int(self.ae.maximum_pdu_size))
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """The association server, with at most ``per_address`` live connections from one address."""

    def __init__(self, *args: Any, per_address: int, network_timeout: float,
                 on_association_end: Callable[[Any], object] | None = None,
                 tls_context: Callable[[], ssl.SSLContext] | None = None,
                 on_refused: Callable[[str, str], object] | None = None, share_port: bool = False,
                 trusted_proxies: list[proxies.Network] | None = None, **kwargs: Any) -> None:
        self.share_port = share_port
        self.trusted_proxies = trusted_proxies or []
        self.per_address = per_address
        self.network_timeout = network_timeout
        self.on_association_end = on_association_end
        self.tls_context, self.on_refused = tls_context, on_refused
        self._live: dict[str, list[socket.socket]] = {}
        self._live_lock = threading.Lock()
        self._last_warning: dict[str, float] = {}
        super().__init__(*args, request_handler=GuardedRequestHandler, **kwargs)

    def server_bind(self) -> None:
        if self.share_port:  # other pacslite processes listen on the same port (SHARE_PORTS)
            assert self.socket is not None
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; from a trusted proxy read the caller's address from its PROXY line; on the TLS
        port wrap the socket without its handshake (done by the handler)."""
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.trusted_proxies and proxies.is_trusted(str(address[0]), self.trusted_proxies):
            try:  # the caller's own address, from the load balancer's PROXY line (before any TLS)
                address = proxies.read_header(client) or address
            except OSError as exc:
                client.close()
                raise OSError(f"refused a connection from the proxy {address[0]}: {exc}") from exc
        if self.tls_context is not None:
            try:
                client = self.tls_context().wrap_socket(client, server_side=True, do_handshake_on_connect=False)
            except Exception as exc:  # anything but OSError would end the accepting thread
                client.close()
                raise OSError(f"could not set up TLS for {address[0]}: {exc}") from exc
        return client, address

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
