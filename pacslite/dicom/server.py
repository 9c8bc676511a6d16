"""The DICOM server: one pynetdicom AE with Verification, Storage (private SOP classes of
configured modalities included), Modality Worklist, Query/Retrieve, Modality Performed
Procedure Step and Storage Commitment.

Started by ``app.py`` next to the web server and stopped with it. Everything it does goes
through the domain modules; this file only knows pynetdicom.
"""
from __future__ import annotations

import functools
import logging
import ssl
import threading
from typing import Any, Mapping

from pynetdicom import AE, evt, register_uid
from pynetdicom.presentation import AllStoragePresentationContexts, build_context
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import (ModalityPerformedProcedureStep,  # type: ignore[attr-defined]
                                  ModalityWorklistInformationFind, StorageCommitmentPushModel,
                                  PatientRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelFind, Verification)
from pydicom import uid

from ..core import db, proxies, storage, uids
from ..ris import aes
from ..pacs import arrivals
from . import commitment, handlers, network, receive, retrieve, tls

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
#: UIDs under this root are the standard's; any other SOP class is private.
DICOM_ROOT = "1.2.840.10008."
#: Query and verification answer in the uncompressed syntaxes.
PLAIN_TRANSFER_SYNTAXES = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian]

#: At most this many private SOP classes are taken for storage (pynetdicom keeps each for good).
MAX_PRIVATE_SOP_CLASSES = 256
_private_classes: set[str] = set()
_private_lock = threading.Lock()


def _register_private_storage(sop_class: str) -> bool:
    """Make pynetdicom serve C-STORE for a private SOP class; False when the cap is reached."""
    with _private_lock:
        if sop_class not in _private_classes:
            if len(_private_classes) >= MAX_PRIVATE_SOP_CLASSES:
                return False
            register_uid(sop_class, "PacslitePrivateStorage_" + sop_class.replace(".", "_"), StorageServiceClass)
            _private_classes.add(sop_class)
    return True


def accept_private_storage(assoc: Any) -> None:
    """Support, for this association, the private SOP classes it proposes (e.g. Siemens CSA
    Non-Image 1.3.12.2.1107.5.9.1), as storage, stored as received like any image."""
    acceptor = assoc.acceptor
    supported = {str(cx.abstract_syntax) for cx in acceptor.supported_contexts}
    added = []
    for proposed in assoc.requestor.primitive.presentation_context_definition_list:
        sop_class = str(proposed.abstract_syntax)
        if sop_class in supported or sop_class.startswith(DICOM_ROOT) or not uids.is_uid(sop_class):
            continue
        if _register_private_storage(sop_class):
            added.append(build_context(sop_class, STORAGE_TRANSFER_SYNTAXES))
            supported.add(sop_class)
    if added:
        acceptor.supported_contexts = [*acceptor.supported_contexts, *added]


#: The services each right opens (verification is open to every accepted caller).
RIGHT_SERVICES: dict[str, frozenset[str]] = {
    "store": frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts),
    "worklist": frozenset({str(ModalityWorklistInformationFind)}),
    "query": frozenset({str(PatientRootQueryRetrieveInformationModelFind),
                        str(StudyRootQueryRetrieveInformationModelFind)}),
    # C-GET sends back over the same association: the storage contexts, in the SCP role
    "retrieve": frozenset(retrieve.MOVE_MODELS) | frozenset(retrieve.GET_MODELS)
    | frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts),
    "mpps": frozenset({str(ModalityPerformedProcedureStep)}),
    "commitment": frozenset({str(StorageCommitmentPushModel)}),
}


def offer_only(assoc: Any, rights: frozenset[str]) -> None:
    """Support, for this association, only the services its AE may use; remember the others
    (its refused contexts are then listed as "not permitted", not "not supported")."""
    acceptor = assoc.acceptor
    allowed = {str(Verification)}.union(*(RIGHT_SERVICES.get(r, frozenset()) for r in rights))
    offered = acceptor.supported_contexts
    assoc.pacslite_withheld = {str(cx.abstract_syntax) for cx in offered if str(cx.abstract_syntax) not in allowed}
    acceptor.supported_contexts = [cx for cx in offered if str(cx.abstract_syntax) in allowed]


def data_set_limits(settings: Mapping[str, Any]) -> dict[str, int]:
    """The largest data set of each DIMSE request (C-STORE's goes to a file: the store's mark bounds it)."""
    find, mpps, action = (int(settings[k]) for k in ("DICOM_MAX_FIND_BYTES", "DICOM_MAX_MPPS_BYTES",
                                                     "DICOM_MAX_ACTION_BYTES"))
    return {"C_STORE_RQ": 0, "C_FIND_RQ": find, "C_MOVE_RQ": find, "C_GET_RQ": find, "N_CREATE_RQ": mpps,
            "N_SET_RQ": mpps, "N_ACTION_RQ": action, "N_EVENT_REPORT_RQ": action}


class DicomServer:
    """The listening AE. ``start()`` returns once it accepts connections; ``stop()`` closes it."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.database = settings["DATABASE"]
        self.connections = handlers.Connections(self.database)
        self._server: Any = None
        self._tls_server: Any = None

    def admit(self, assoc: Any, calling: str) -> aes.Admission:
        """What the calling AE may do on this association, or why it may not connect (its
        host, TLS and certificate checked: node authentication)."""
        sock = assoc.dul.socket.socket
        over_tls = isinstance(sock, ssl.SSLSocket)
        conn = db.connect(self.database)
        try:
            return aes.admit(conn, calling, str(assoc.requestor.address), over_tls=over_tls,
                             peer_certificate=sock.getpeercert(binary_form=True) if over_tls else None,
                             accept_any_caller=self.settings["DICOM_ACCEPT_ANY_CALLER"])
        finally:
            conn.close()

    def _record_refused_connection(self, address: str, reason: str) -> None:
        """A connection refused before any AE title was said (a failed TLS handshake)."""
        conn = db.connect(self.database)
        try:
            aes.record_rejection(conn, "", self.settings["AE_TITLE"], address, reason)
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
        for service in (ModalityWorklistInformationFind, PatientRootQueryRetrieveInformationModelFind,
                        StudyRootQueryRetrieveInformationModelFind, *retrieve.MOVE_MODELS, *retrieve.GET_MODELS,
                        ModalityPerformedProcedureStep, StorageCommitmentPushModel):
            ae.add_supported_context(service, PLAIN_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:  # either role: a C-GET's requestor is the SCP
            ae.add_supported_context(context.abstract_syntax, STORAGE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        return ae

    def _on_requested(self, event: Any) -> None:
        """Refuse a wrong called AE title or an unknown caller, after recording the attempt;
        offer an accepted caller only the services it may use.

        Done here rather than by pynetdicom's own checks so that the attempt is committed
        before the caller hears "rejected" (pynetdicom lets EVT_REQUESTED send the reject).
        Fails closed: pynetdicom accepts an association whose handler raised, so nothing may escape.
        """
        try:
            self._admit_or_reject(event)
        except Exception:
            log.exception("refused an association: its admission could not be decided")
            event.assoc.acse.send_reject(0x02, 0x02, 0x01)  # rejected-transient, by the provider (ACSE), no reason
            event.assoc.kill()

    def _admit_or_reject(self, event: Any) -> None:
        primitive = event.assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        admission = self.admit(event.assoc, calling)
        rights = admission.rights
        if called != self.settings["AE_TITLE"]:
            reason, diagnostic = "wrong_called_ae", 0x07
        elif rights is None:
            reason, diagnostic = admission.refusal, 0x03  # calling AE title not recognised (from here, so)
        elif not self._take_address_place(event.assoc):
            handlers.record_refusal(event, self.database, "too_many_from_address")
            event.assoc.acse.send_reject(0x02, 0x03, 0x02)  # rejected-transient, by the provider: local limit exceeded
            event.assoc.kill()
            return
        else:
            event.assoc.pacslite = self  # what the services pacslite serves itself (C-MOVE, C-GET) need
            event.assoc.pacslite_rights = rights
            event.assoc.pacslite_batch = arrivals.new_batch()  # what it stores is one delivery
            offer_only(event.assoc, rights)
            if "store" in rights and self.settings["DICOM_ACCEPT_PRIVATE_STORAGE"]:
                accept_private_storage(event.assoc)
            return
        handlers.record_refusal(event, self.database, reason)
        event.assoc.acse.send_reject(0x01, 0x01, diagnostic)  # rejected-permanent, by the service user
        event.assoc.kill()

    def _take_address_place(self, assoc: Any) -> bool:
        """One of the associations the caller's address may hold, counted across every process
        and server on the database (each process also counts its own connections as they are
        accepted); held by the association's database connection until it ends."""
        return db.take_place(self.connections.of(assoc), f"dicom associations from {assoc.requestor.address}",
                             int(self.settings["DICOM_MAX_CONNECTIONS_PER_ADDRESS"]))

    def start(self) -> None:
        s = self.settings
        receive.receive_into(str(storage.tmp_dir(s["STORAGE_DIR"])), s["STORAGE_HIGH_WATER_PERCENT"])
        network.bound_data_sets(data_set_limits(s))
        retrieve.install()
        commitment.install()
        ae = self._make_ae()
        self._server = self._serve(ae, s["DICOM_PORT"], None)
        log.info("DICOM %s listening on %s:%s", s["AE_TITLE"], s["DICOM_HOST"], self.port)
        if s["DICOM_TLS_PORT"] >= 0:
            tls.ensure_certificate(s)
            self._tls_server = self._serve(ae, s["DICOM_TLS_PORT"], tls.ServerContexts(s).current)
            log.info("DICOM %s over TLS listening on %s:%s", s["AE_TITLE"], s["DICOM_HOST"], self.tls_port)

    def _serve(self, ae: AE, port: int, tls_context: Any) -> Any:
        """A listening server on ``port`` (TLS when ``tls_context`` gives the context), started."""
        s = self.settings
        bound = [
            (evt.EVT_C_ECHO, handlers.on_echo),
            (evt.EVT_C_STORE, handlers.on_store, [self.connections, s, receive.ReceiveFile.claim]),
            (evt.EVT_C_FIND, handlers.on_find, [self.connections, s]),
            (evt.EVT_N_CREATE, handlers.on_n_create, [self.connections, s]),
            (evt.EVT_N_SET, handlers.on_n_set, [self.connections, s]),
            (evt.EVT_N_ACTION, handlers.on_n_action, [self.connections]),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, handlers.on_accepted, [self.connections]),
        ]
        server = ae.make_server((s["DICOM_HOST"], port), evt_handlers=bound,
                                server_class=network.GuardedServer,
                                per_address=s["DICOM_MAX_CONNECTIONS_PER_ADDRESS"],
                                network_timeout=s["DICOM_NETWORK_TIMEOUT"],
                                on_association_end=functools.partial(handlers.on_ended, self.connections,
                                                                     receive.ReceiveFile.abandon),
                                tls_context=tls_context, on_refused=self._record_refused_connection,
                                share_port=bool(s["SHARE_PORTS"]),
                                trusted_proxies=proxies.parse_networks(s["TRUSTED_PROXIES"]))
        ae._servers.append(server)  # as AE.start_server does: server.shutdown() takes it out again
        threading.Thread(target=server.serve_forever, name="dicom-accept", daemon=True).start()
        return server

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else 0

    @property
    def tls_port(self) -> int:
        """The TLS port (0 when DICOM over TLS is off)."""
        return int(self._tls_server.server_address[1]) if self._tls_server else 0

    def stop(self) -> None:
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
        self._server = self._tls_server = None
        self.connections.close_all()
