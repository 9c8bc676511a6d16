"""C-MOVE and C-GET as pacslite serves them: pynetdicom's own services hand the images to send
over as pydicom Datasets, which it encodes again, so an image would not arrive byte for byte
as stored, and would sit whole in memory. This serves both itself, in pynetdicom's place: the
images are what :mod:`pacslite.pacs.qr` says the identifier names (filed ones only), each goes in
the form :mod:`pacslite.pacs.outbound` chooses (the stored file streamed as it is, or decompressed),
with pending responses carrying the counts and C-CANCEL honoured. C-MOVE sends over its own
association to a destination configured here (never an address taken from the request);
C-GET over the requesting association, to the storage contexts it accepted in the SCP role.
"""
from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelGet,  # type: ignore[attr-defined]
                                  PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)

from ..ris import aes
from ..pacs import outbound, qr
from . import sender
from ..core.audit import Actor
from ..core.query import QueryError

log = logging.getLogger(__name__)

MOVE_MODELS = {str(PatientRootQueryRetrieveInformationModelMove): qr.PATIENT_ROOT,
               str(StudyRootQueryRetrieveInformationModelMove): qr.STUDY_ROOT}
GET_MODELS = {str(PatientRootQueryRetrieveInformationModelGet): qr.PATIENT_ROOT,
              str(StudyRootQueryRetrieveInformationModelGet): qr.STUDY_ROOT}
MOVE_DESTINATION_UNKNOWN, UNABLE_TO_PERFORM, IDENTIFIER_MISMATCH = 0xA801, 0xA702, 0xA900
PENDING, CANCELLED, WARNING, SUCCESS = 0xFF00, 0xFE00, 0xB000, 0x0000


def _respond(service: Any, req: Any, cx_id: int, status: int, transfer: outbound.Transfer | None,
             syntax: Any, comment: str = "") -> None:
    rsp = C_GET() if str(req.AffectedSOPClassUID) in GET_MODELS else C_MOVE()
    rsp.MessageIDBeingRespondedTo = req.MessageID
    rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
    rsp.Status = status
    if comment:
        rsp.ErrorComment = "".join(c for c in comment if " " <= c <= "~" and c != "\\")[:64]
    if transfer is not None:
        if status == PENDING or status == CANCELLED:
            rsp.NumberOfRemainingSuboperations = transfer.remaining
        rsp.NumberOfCompletedSuboperations = transfer.completed
        rsp.NumberOfFailedSuboperations = transfer.failed
        rsp.NumberOfWarningSuboperations = transfer.warning
        if status in (CANCELLED, WARNING, UNABLE_TO_PERFORM) and transfer.failed_uids:
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = transfer.failed_uids
            rsp.Identifier = BytesIO(encode(failed, syntax.is_implicit_VR, syntax.is_little_endian,
                                            syntax.is_deflated))
    service.dimse.send_msg(rsp, cx_id)


def _retrieve(service: QueryRetrieveServiceClass, req: Any, context: Any, how: str) -> None:
    """C-MOVE or C-GET: the identifier read, the images found, sent, counted, audited, answered."""
    server = service.assoc.pacslite
    settings, cx_id, syntax = server.settings, int(context.context_id), context.transfer_syntax[0]
    conn = server.connections.of(service.assoc)
    requestor = service.assoc.requestor
    actor = Actor(f"ae:{str(requestor.ae_title).strip()}", str(requestor.address))
    model = (MOVE_MODELS if how == "C-MOVE" else GET_MODELS).get(str(req.AffectedSOPClassUID))
    try:
        identifier = decode(req.Identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
        rows = qr.retrievable(conn, identifier, model) if model else None
    except (QueryError, ValueError, TypeError, AttributeError, LookupError) as exc:
        _respond(service, req, cx_id, IDENTIFIER_MISMATCH, None, syntax, str(exc))
        return
    if rows is None:
        _respond(service, req, cx_id, UNABLE_TO_PERFORM, None, syntax, f"not a {how} information model")
        return
    if how == "C-MOVE":
        destination = aes.find_ae(conn, str(req.MoveDestination or "").strip())
        if destination is None or not destination["host"]:
            log.warning("C-MOVE from %s to unknown destination %r refused", actor.name, str(req.MoveDestination))
            _respond(service, req, cx_id, MOVE_DESTINATION_UNKNOWN, None, syntax, "move destination unknown")
            return
        receiver, name = None, destination["ae_title"]
    else:
        receiver, name = service.assoc, actor.name.removeprefix("ae:")
    transfer = outbound.Transfer(remaining=len(rows))
    if rows:
        own = receiver is None
        if own:
            receiver = sender.open_to(settings, destination, rows)
        sender.send(settings, receiver, own, rows, transfer, how, stop=lambda: service.is_cancelled(req.MessageID),
                    progress=lambda: _respond(service, req, cx_id, PENDING, transfer, syntax),
                    originator=(actor.name.removeprefix("ae:"), req.MessageID) if own else None)
        if not service.assoc.is_established:
            return
    outbound.record(conn, actor, name, transfer, how)
    if transfer.remaining:  # cancelled
        _respond(service, req, cx_id, CANCELLED, transfer, syntax)
    elif transfer.failed or transfer.warning:
        status = UNABLE_TO_PERFORM if not transfer.completed and not transfer.warning else WARNING
        _respond(service, req, cx_id, status, transfer, syntax, transfer.why)
    else:
        _respond(service, req, cx_id, SUCCESS, transfer, syntax)


def move_scp(service: QueryRetrieveServiceClass, req: Any, context: Any) -> None:
    """pacslite's C-MOVE SCP (replaces ``QueryRetrieveServiceClass._move_scp``)."""
    _retrieve(service, req, context, "C-MOVE")


def get_scp(service: QueryRetrieveServiceClass, req: Any, context: Any) -> None:
    """pacslite's C-GET SCP (replaces ``QueryRetrieveServiceClass._get_scp``)."""
    _retrieve(service, req, context, "C-GET")


def install() -> None:
    """Serve C-MOVE and C-GET with :func:`move_scp` and :func:`get_scp`, and send stored files
    as they are (chunked)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    QueryRetrieveServiceClass._move_scp = move_scp  # type: ignore[method-assign]
    QueryRetrieveServiceClass._get_scp = get_scp  # type: ignore[method-assign]
