"""The one DICOM sender: stored images to another AE, over an association pacslite opens
(C-MOVE, forward rules, "send to…") or over the requesting one (C-GET); and storage
commitment reports that could not go on the requesting association. What goes and in which
form is :mod:`pacslite.pacs.outbound`'s (and :mod:`pacslite.pacs.commitment`'s) decision; this only
knows pynetdicom."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification  # type: ignore[attr-defined]

from ..pacs import outbound
from . import network, tls
from .handlers import COMMITMENT_INSTANCE

log = logging.getLogger(__name__)


def _requestor(settings: Mapping[str, Any]) -> AE:
    ae = AE(settings["AE_TITLE"])
    ae.acse_timeout = ae.network_timeout = settings["DICOM_NETWORK_TIMEOUT"]
    ae.dimse_timeout = settings["DICOM_DIMSE_TIMEOUT"]
    return ae


def open_to(settings: Mapping[str, Any], destination: Mapping[str, Any], rows: list[Any]) -> Any:
    """An association to a configured AE proposing what ``rows`` need; None if it cannot be made."""
    ae = _requestor(settings)
    for sop_class, syntaxes in outbound.contexts_for(rows):
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(destination["host"], destination["port"], ae_title=destination["ae_title"],
                         max_pdu=settings["DICOM_MAX_PDU"], tls_args=tls.tls_args(settings, destination))
    if not assoc.is_established:
        log.warning("cannot associate with %s (%s:%s)", destination["ae_title"], destination["host"],
                    destination["port"])
        return None
    network.no_delay(assoc.dul.socket.socket)
    return assoc


def echo(settings: Mapping[str, Any], destination: Mapping[str, Any]) -> tuple[int | None, str]:
    """C-ECHO a configured AE (the modalities page's test): (status, "") when it answered,
    (None, why) otherwise, why being ``rejected``, ``unreachable`` or ``no_answer``."""
    ae = _requestor(settings)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = min(10, settings["DICOM_NETWORK_TIMEOUT"])
    ae.add_requested_context(Verification)
    assoc = ae.associate(destination["host"], destination["port"], ae_title=destination["ae_title"],
                         tls_args=tls.tls_args(settings, destination))
    if assoc.is_rejected:
        return None, "rejected"
    if not assoc.is_established:
        return None, "unreachable"
    try:
        answer = assoc.send_c_echo()
        status = int(answer.Status) if answer and "Status" in answer else None
        return status, "" if status is not None else "no_answer"
    finally:
        assoc.release()


def accepted_for_sending(assoc: Any, own: bool) -> dict[str, set[str]]:
    """The syntaxes each SOP class may be sent in: every accepted context on an association
    pacslite opened (``own``); on a requesting one (C-GET), those where pacslite acts as SCU."""
    found: dict[str, set[str]] = {}
    for cx in assoc.accepted_contexts:
        if own or cx.as_scu:
            found.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return found


def store_one(assoc: Any, settings: Mapping[str, Any], row: Any, accepted: set[str], number: int,
              how: str, transfer: outbound.Transfer, originator: tuple[str, int] | None = None) -> int | None:
    """One C-STORE of a stored image; its status (None: not sent, the reason logged and, the
    first time, kept in ``transfer``). ``originator``: the AE title and message ID of the
    C-MOVE this sub-operation serves."""
    try:
        data = outbound.payload(settings["STORAGE_DIR"], row, accepted)
    except outbound.Unsendable as exc:
        log.warning("%s: %s not sent: %s", how, row["sop_instance_uid"], exc)
        transfer.why = transfer.why or str(exc)
        return None
    try:
        status = assoc.send_c_store(data, msg_id=(number % 65535) + 1,
                                    originator_aet=originator[0] if originator else None,
                                    originator_id=originator[1] if originator else None)
    except Exception as exc:  # the receiver went away, refused the context, …
        log.warning("%s: %s not sent: %s", how, row["sop_instance_uid"], exc)
        return None
    return int(status.Status) if status and "Status" in status else None


def send(settings: Mapping[str, Any], assoc: Any, own: bool, rows: list[Any], transfer: outbound.Transfer,
         how: str, stop: Callable[[], bool] = lambda: False, progress: Callable[[], None] = lambda: None,
         originator: tuple[str, int] | None = None) -> None:
    """Send ``rows`` over ``assoc`` (None: it could not be opened, every image fails), counting
    in ``transfer``; ``stop`` is asked before each image (a C-CANCEL), ``progress`` after it."""
    if assoc is None:
        for row in rows:
            transfer.done(row, None)
        return
    accepted = accepted_for_sending(assoc, own)
    try:
        for number, row in enumerate(rows):
            if stop():
                return
            transfer.done(row, store_one(assoc, settings, row, accepted.get(row["sop_class_uid"], set()), number,
                                         how, transfer, originator))
            if transfer.remaining:
                progress()
    finally:
        if own:
            assoc.release()


def send_to(settings: Mapping[str, Any], destination: Mapping[str, Any], rows: list[Any], how: str) -> outbound.Transfer:
    """Open an association to ``destination`` and send ``rows`` (forward rules, "send to…")."""
    transfer = outbound.Transfer(remaining=len(rows))
    send(settings, open_to(settings, destination, rows) if rows else None, True, rows, transfer, how)
    return transfer


def send_commitment_report(settings: Mapping[str, Any], destination: Mapping[str, Any], event_type: int,
                           info: Dataset) -> str:
    """A storage commitment report (N-EVENT-REPORT) on a new association to the requesting AE,
    pacslite in the SCP role (PS3.4 J.3.3); '' when it was acknowledged with success."""
    ae = _requestor(settings)
    ae.add_requested_context(StorageCommitmentPushModel, list(outbound.UNCOMPRESSED))
    role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    try:
        assoc = ae.associate(destination["host"], destination["port"], ae_title=destination["ae_title"],
                             max_pdu=settings["DICOM_MAX_PDU"], ext_neg=[role],
                             tls_args=tls.tls_args(settings, destination))
    except Exception as exc:
        return f"cannot associate with {destination['ae_title']}: {exc}"
    if not assoc.is_established:
        return f"cannot associate with {destination['ae_title']} ({destination['host']}:{destination['port']})"
    try:
        status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    except Exception as exc:  # the context was refused, the peer went away
        return f"{destination['ae_title']} did not take the report: {exc}"
    finally:
        if assoc.is_established:
            assoc.release()
    if not status or "Status" not in status:
        return f"{destination['ae_title']} did not answer the report"
    return "" if status.Status == 0x0000 else f"{destination['ae_title']} answered the report with 0x{status.Status:04X}"
