"""The DICOM server: one pynetdicom AE with Verification, Storage and Modality Worklist.

Started by ``app.py`` next to the web server and stopped with it. Everything it does goes
through the domain modules; this file only knows pynetdicom.
"""
from __future__ import annotations

import functools
import logging
import tempfile
from typing import Any, Callable, Mapping

from pynetdicom import AE, _config, dimse_messages, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification  # type: ignore[attr-defined]
from pydicom import uid

from .. import aes, db, storage
from . import handlers

log = logging.getLogger(__name__)

#: Transfer syntaxes accepted for storage, as sent: nothing is transcoded on the way in.
STORAGE_TRANSFER_SYNTAXES = [
    uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless,
    uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000,
    uid.RLELossless,
]
#: Query and verification answer in the uncompressed syntaxes.
PLAIN_TRANSFER_SYNTAXES = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian]

#: An AE title no caller can have (a backslash is not allowed in one): "accept nobody".
_NOBODY = "\\"


class _AcceptingAE(AE):
    """An AE whose list of accepted calling AE titles is read from the database per association."""

    def __init__(self, ae_title: str, allowed: Callable[[], list[str] | None]) -> None:
        super().__init__(ae_title)
        self._allowed = allowed

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        titles = self._allowed()
        if titles is None:
            return []  # pynetdicom: an empty list accepts every caller
        return titles or [_NOBODY]


def receive_into(directory: str) -> None:
    """Make pynetdicom write each received C-STORE dataset straight into ``directory``.

    pynetdicom's chunked receive writes the dataset, as it arrives, into a
    ``NamedTemporaryFile`` in the system's temporary folder. Pointing that at the store's own
    temporary area puts the file on the store's file system, so filing renames it into place
    instead of copying it.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[attr-defined]
        tempfile.NamedTemporaryFile, dir=directory)


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
        ae = _AcceptingAE(s["AE_TITLE"], self.allowed_callers)
        ae.require_called_aet = True
        ae.maximum_pdu_size = s["DICOM_MAX_PDU"]
        ae.maximum_associations = s["DICOM_MAX_ASSOCIATIONS"]
        ae.acse_timeout = s["DICOM_ACSE_TIMEOUT"]
        ae.dimse_timeout = s["DICOM_DIMSE_TIMEOUT"]
        ae.network_timeout = s["DICOM_NETWORK_TIMEOUT"]
        ae.add_supported_context(Verification, PLAIN_TRANSFER_SYNTAXES)
        ae.add_supported_context(ModalityWorklistInformationFind, PLAIN_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, STORAGE_TRANSFER_SYNTAXES)
        return ae

    def _on_rejected(self, event: Any) -> None:
        allowed = self.allowed_callers()
        calling = str(event.assoc.requestor.ae_title).strip()
        called = str(getattr(event.assoc.requestor.primitive, "called_ae_title", "")).strip()
        if called != self.settings["AE_TITLE"]:
            reason = "wrong_called_ae"
        elif allowed is not None and calling not in allowed:
            reason = "unknown_calling_ae"
        else:
            log.warning("refused an association from %s: too many associations", calling)
            return
        handlers.on_rejected(event, self.database, reason)

    def start(self) -> None:
        s = self.settings
        receive_into(str(storage.tmp_dir(s["STORAGE_DIR"])))
        ae = self._make_ae()
        bound = [
            (evt.EVT_C_ECHO, handlers.on_echo),
            (evt.EVT_C_STORE, handlers.on_store, [self.connections, s]),
            (evt.EVT_C_FIND, handlers.on_find, [self.connections, s]),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_CONN_CLOSE, handlers.on_closed, [self.connections]),
        ]
        self._server = ae.start_server((s["DICOM_HOST"], s["DICOM_PORT"]), block=False, evt_handlers=bound)
        log.info("DICOM %s listening on %s:%s", s["AE_TITLE"], s["DICOM_HOST"], self.port)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.connections.close_all()
