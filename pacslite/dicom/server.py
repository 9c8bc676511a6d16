"""The DICOM server: one pynetdicom AE with Verification, Storage and Modality Worklist.

Started by ``app.py`` next to the web server and stopped with it. Everything it does goes
through the domain modules; this file only knows pynetdicom.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification  # type: ignore[attr-defined]
from pydicom import uid

from .. import aes, db, storage
from . import handlers, network, receive

log = logging.getLogger(__name__)

#: Transfer syntaxes accepted for storage, in order of preference when a sender offers several
#: for one SOP class: lossless compressed first (kept as the modality compressed it), then
#: uncompressed, then lossy last, so that pacslite never makes a sender compress lossy an image
#: it could send without loss. Nothing is transcoded on the way in.
STORAGE_TRANSFER_SYNTAXES = [
    uid.JPEGLSLossless, uid.JPEGLosslessSV1, uid.JPEGLossless, uid.JPEG2000Lossless, uid.RLELossless,
    uid.DeflatedExplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian,
    uid.ExplicitVRBigEndian, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLSNearLossless, uid.JPEG2000,
]
#: Query and verification answer in the uncompressed syntaxes.
PLAIN_TRANSFER_SYNTAXES = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian]

class DicomServer:
    """The listening AE. ``start()`` returns once it accepts connections; ``stop()`` closes it."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.database = settings["DATABASE"]
        self.connections = handlers.Connections(self.database)
        self._server: Any = None

    def allowed_callers(self) -> list[str] | None:
        """Configured AE titles, or None when the setting accepts any caller."""
        if self.settings["DICOM_ACCEPT_ANY_CALLER"]:
            return None
        conn = db.connect(self.database)
        try:
            return aes.known_titles(conn)
        finally:
            conn.close()

    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(s["AE_TITLE"])
        ae.require_called_aet = False  # both AE titles are checked in _on_requested, which records refusals
        ae.require_calling_aet = []
        ae.maximum_pdu_size = s["DICOM_MAX_PDU"]
        ae.maximum_associations = s["DICOM_MAX_ASSOCIATIONS"]
        # a peer that connects and says nothing is dropped after the shorter of the two
        ae.acse_timeout = min(s["DICOM_ACSE_TIMEOUT"], s["DICOM_NETWORK_TIMEOUT"])
        ae.dimse_timeout = s["DICOM_DIMSE_TIMEOUT"]
        ae.network_timeout = s["DICOM_NETWORK_TIMEOUT"]
        ae.add_supported_context(Verification, PLAIN_TRANSFER_SYNTAXES)
        ae.add_supported_context(ModalityWorklistInformationFind, PLAIN_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, STORAGE_TRANSFER_SYNTAXES)
        return ae

    def _on_requested(self, event: Any) -> None:
        """Refuse a wrong called AE title or an unknown caller, after recording the attempt.

        Done here rather than by pynetdicom's own checks so that the attempt is committed
        before the caller hears "rejected" (pynetdicom lets EVT_REQUESTED send the reject).
        """
        primitive = event.assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        allowed = self.allowed_callers()
        if called != self.settings["AE_TITLE"]:
            reason, diagnostic = "wrong_called_ae", 0x07
        elif allowed is not None and calling not in allowed:
            reason, diagnostic = "unknown_calling_ae", 0x03
        else:
            return
        handlers.record_refusal(event, self.database, reason)
        event.assoc.acse.send_reject(0x01, 0x01, diagnostic)  # rejected-permanent, by the service user
        event.assoc.kill()

    def start(self) -> None:
        s = self.settings
        receive.receive_into(str(storage.tmp_dir(s["STORAGE_DIR"])), s["STORAGE_HIGH_WATER_PERCENT"])
        ae = self._make_ae()
        bound = [
            (evt.EVT_C_ECHO, handlers.on_echo),
            (evt.EVT_C_STORE, handlers.on_store, [self.connections, s, receive.ReceiveFile.claim]),
            (evt.EVT_C_FIND, handlers.on_find, [self.connections, s]),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_CONN_CLOSE, handlers.on_closed, [self.connections, receive.ReceiveFile.abandon]),
        ]
        server = ae.make_server((s["DICOM_HOST"], s["DICOM_PORT"]), evt_handlers=bound,
                                server_class=network.GuardedServer,
                                per_address=s["DICOM_MAX_CONNECTIONS_PER_ADDRESS"],
                                network_timeout=s["DICOM_NETWORK_TIMEOUT"])
        ae._servers.append(server)  # as AE.start_server does: server.shutdown() takes it out again
        threading.Thread(target=server.serve_forever, name="dicom-accept", daemon=True).start()
        self._server = server
        log.info("DICOM %s listening on %s:%s", s["AE_TITLE"], s["DICOM_HOST"], self.port)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.connections.close_all()
