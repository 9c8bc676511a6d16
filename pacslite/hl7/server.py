"""The MLLP listener: an asyncio loop in its own thread, beside the DICOM server.

python-hl7's MLLP stream reader frames the messages (a message longer than
HL7_MAX_MESSAGE_BYTES is refused and the connection closed); each message is handled in a small
pool of threads with their own database connections (:func:`handlers.handle`), one at a time
per connection, as MLLP's request and acknowledgement go. A peer that is silent, or sends one
message more slowly than HL7_NETWORK_TIMEOUT allows, is dropped; connections are bounded in all
and per address. ``start()`` returns once it accepts connections; ``stop()`` closes it.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from hl7.mllp import InvalidBlockError
from hl7.mllp.streams import END_BLOCK, START_BLOCK, MLLPStreamReader

from ..core import db, proxies
from ..ris import messages
from . import codec, handlers

log = logging.getLogger(__name__)

#: Threads applying messages (each with its connection); connections beyond wait their turn.
WORKERS = 4


class Hl7Server:
    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="hl7")
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._open: collections.Counter[str] = collections.Counter()
        self._trusted = proxies.parse_networks(settings["TRUSTED_PROXIES"])
        self._writers: set[asyncio.StreamWriter] = set()

    # ------------------------------------------------------------ life

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(self._listen())
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as exc:  # noqa: BLE001 - told to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="hl7-listener", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        log.info("HL7 listening on %s:%s", self.settings["HL7_HOST"], self.port)

    async def _listen(self) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        limit = int(self.settings["HL7_MAX_MESSAGE_BYTES"])

        def factory() -> asyncio.StreamReaderProtocol:
            reader = MLLPStreamReader(limit=limit)
            return asyncio.StreamReaderProtocol(reader, self._serve)

        return await loop.create_server(factory, self.settings["HL7_HOST"], self.settings["HL7_PORT"],
                                        reuse_port=bool(self.settings["SHARE_PORTS"]) or None)

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            if self._server is not None:
                await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        except Exception:  # noqa: BLE001 - stopping: log and go on
            log.exception("HL7: the listener did not close cleanly")
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._loop = None

    # ------------------------------------------------------------ connections

    def _admit(self, address: str) -> bool:
        s = self.settings
        if sum(self._open.values()) >= s["HL7_MAX_CONNECTIONS"] or self._open[address] >= s[
                "HL7_MAX_CONNECTIONS_PER_ADDRESS"]:
            return False
        self._open[address] += 1
        return True

    async def _serve(self, reader: MLLPStreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if self._trusted and proxies.is_trusted(address, self._trusted):
            try:  # the sender's own address, from the load balancer's PROXY line
                line = await asyncio.wait_for(reader.readuntil(b"\r\n"), proxies.HEADER_SECONDS)
                address = (proxies.parse_header(line) or (address, 0))[0]
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                    ConnectionError, OSError) as exc:
                log.warning("HL7: refused a connection from the proxy %s: %s", address, exc)
                writer.transport.abort()
                return
        if not self._admit(address):
            log.warning("HL7: refused a connection from %s (too many open)", address)
            writer.transport.abort()
            return
        self._writers.add(writer)
        timeout = float(self.settings["HL7_NETWORK_TIMEOUT"])
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    block = await asyncio.wait_for(reader.readblock(), timeout)
                except ValueError:  # longer than HL7_MAX_MESSAGE_BYTES: answered, then closed
                    await self._send(writer, self._too_long(), timeout)
                    break
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, InvalidBlockError, ConnectionError):
                    break
                ack = await loop.run_in_executor(self._pool, self._handle, block, address)
                await self._send(writer, ack, timeout)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]
            self._writers.discard(writer)
            writer.transport.abort()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, ack: bytes, timeout: float) -> None:
        writer.write(START_BLOCK + ack + END_BLOCK + b"\r")
        await asyncio.wait_for(writer.drain(), timeout)

    def _too_long(self) -> bytes:
        outcome = messages.Outcome(messages.REJECTED, f"the message is longer than"
                                   f" {self.settings['HL7_MAX_MESSAGE_BYTES']} bytes", messages.INTERNAL)
        return codec.ack(self.settings, b"", None, outcome, {})

    def _handle(self, block: bytes, address: str) -> bytes:
        """In a worker thread: the message's acknowledgement (its change committed first)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = db.connect(self.settings["DATABASE"])
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        try:
            return handlers.handle(conn, self.settings, block, address)
        except Exception:  # noqa: BLE001 - the connection still gets an answer
            log.exception("HL7: a message from %s could not be handled", address)
            outcome = messages.Outcome(messages.REJECTED, "internal error: send the message again later",
                                       messages.INTERNAL)
            return codec.ack(self.settings, block, None, outcome, {})
