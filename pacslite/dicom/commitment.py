"""Storage commitment's report on the requesting association (PS3.4 J.3.3).

pynetdicom answers the N-ACTION from the handler's return value; the report can only follow
once that answer is out. So this serves the Storage Commitment SOP class in pynetdicom's place:
its own N-ACTION service, then, still in the association's thread (no race with pynetdicom's
reactor for incoming messages), each report the handler kept (:func:`handlers.on_n_action`) as an
N-EVENT-REPORT. It waits for the acknowledgement only while the peer keeps the association open:
a peer that releases or aborts instead gets the report on a new association
(:func:`pacslite.pacs.commitment.run_due`).
"""
from __future__ import annotations

import logging
import time
from io import BytesIO
from typing import Any

from pynetdicom.dimse_primitives import N_ACTION, N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE
from pynetdicom.service_class_n import StorageCommitmentServiceClass
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from ..core import db
from ..pacs import commitment
from .handlers import COMMITMENT_INSTANCE

log = logging.getLogger(__name__)


def _await_answer(service: Any, message_id: int, seconds: float) -> tuple[int | None, str]:
    """The status the peer answered the N-EVENT-REPORT with, or None and why there was none.
    Requests the peer sends meanwhile are put back for the reactor."""
    assoc, kept = service.assoc, []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            context_id, message = service.dimse.get_msg(block=False)
            if message is None:
                if not assoc.is_established or not assoc.dul.is_alive():
                    return None, "the association ended"
                if isinstance(assoc.dul.peek_next_pdu(), (A_RELEASE, A_ABORT, A_P_ABORT)):
                    return None, "the requesting AE closed the association"
                time.sleep(0.002)
            elif isinstance(message, N_EVENT_REPORT) and message.MessageIDBeingRespondedTo == message_id:
                return int(message.Status), ""
            else:
                kept.append((context_id, message))
        return None, "no answer on the association"
    finally:
        for item in kept:
            service.dimse.msg_queue.put(item)


def report_here(service: Any, context: Any, row: Any, message_id: int) -> str:
    """Send one report on this association; '' when the peer acknowledged it with success."""
    event_type, info = commitment.report(row)
    syntax = context.transfer_syntax[0]
    request = N_EVENT_REPORT()
    request.MessageID = message_id
    request.AffectedSOPClassUID = StorageCommitmentPushModel
    request.AffectedSOPInstanceUID = COMMITMENT_INSTANCE
    request.EventTypeID = event_type
    request.EventInformation = BytesIO(encode(info, syntax.is_implicit_VR, syntax.is_little_endian,
                                              syntax.is_deflated))
    service.dimse.send_msg(request, context.context_id)
    status, why = _await_answer(service, message_id, float(service.assoc.dimse_timeout or 30))
    if status is None:
        return why
    return "" if status == 0x0000 else f"the requesting AE answered the report with 0x{status:04X}"


def serve(service: Any, req: Any, context: Any) -> None:
    """Storage Commitment SCP: the N-ACTION, then the reports it produced on this association."""
    if not isinstance(req, N_ACTION):
        StorageCommitmentServiceClass.pacslite_original_scp(service, req, context)
        return
    service._n_action_scp(req, context)
    ids = getattr(service.assoc, "pacslite_commitments", [])
    service.assoc.pacslite_commitments = []
    if not ids:
        return
    pacslite = service.assoc.pacslite
    conn = db.connect(pacslite.database)
    try:
        for number, commitment_id in enumerate(ids, start=1):
            row = commitment.get(conn, commitment_id)
            try:
                error = report_here(service, context, row, number) if service.assoc.is_established \
                    else "the association ended"
            except Exception as exc:  # never leave a report marked as being sent: a new association follows
                log.exception("storage commitment %s: sending the report failed", row["transaction_uid"])
                error = f"sending the report failed: {exc}"
            if error:
                log.info("storage commitment %s: report not taken on the association (%s); a new one follows",
                         row["transaction_uid"], error)
                commitment.not_delivered(conn, pacslite.settings, row, error, counts=False)
            else:
                commitment.delivered(conn, row, "same")
    finally:
        conn.close()


def install() -> None:
    """Serve Storage Commitment with :func:`serve`."""
    if not hasattr(StorageCommitmentServiceClass, "pacslite_original_scp"):
        StorageCommitmentServiceClass.pacslite_original_scp = StorageCommitmentServiceClass.SCP  # type: ignore[attr-defined]
        StorageCommitmentServiceClass.SCP = serve  # type: ignore[method-assign]
