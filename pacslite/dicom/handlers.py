"""One handler per DIMSE event. Each turns the event into a call of a domain function.

Handlers run in pynetdicom's association threads; each association uses its own database
connection (:class:`Connections`), closed when the connection ends.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pydicom.dataset import Dataset
from pynetdicom import events
from pynetdicom.sop_class import (ModalityWorklistInformationFind,  # type: ignore[attr-defined]
                                  PatientRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelFind)

from ..core import audit, clock, db, names, query, uids
from ..ris import aes, mpps, worklist
from ..pacs import arrivals, commitment, filing, qr
from ..pacs.index import Source

log = logging.getLogger(__name__)

#: Refused: not authorized (PS3.7 C.5.18), a C-STORE from an AE without the store right.
NOT_AUTHORIZED = 0x0124

# C-FIND statuses (PS3.4 C.4.1.1.4)
FIND_PENDING = 0xFF00
FIND_CANCELLED = 0xFE00
FIND_IDENTIFIER_MISMATCH = 0xA900
FIND_UNABLE_TO_PROCESS = 0xC000


class Connections:
    """A database connection per association, opened on first use."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._lock = threading.Lock()
        self._by_assoc: dict[int, sqlite3.Connection] = {}

    def of(self, assoc: Any) -> sqlite3.Connection:
        key = id(assoc)
        with self._lock:
            conn = self._by_assoc.get(key)
            if conn is None:
                conn = self._by_assoc[key] = db.connect(self.database)
            return conn

    def existing(self, assoc: Any) -> sqlite3.Connection | None:
        """The association's connection if it has used the database, else None."""
        with self._lock:
            return self._by_assoc.get(id(assoc))

    def close(self, assoc: Any) -> None:
        with self._lock:
            conn = self._by_assoc.pop(id(assoc), None)
        if conn is not None:
            conn.close()

    def close_all(self) -> None:
        with self._lock:
            conns, self._by_assoc = list(self._by_assoc.values()), {}
        for conn in conns:
            conn.close()


def source_of(event: events.Event) -> Source:
    """The calling AE and address; the association is one delivery (:mod:`pacslite.pacs.arrivals`)."""
    requestor = event.assoc.requestor
    return Source(names.printable(str(requestor.ae_title)), str(requestor.address),
                  getattr(event.assoc, "pacslite_batch", ""))


def on_echo(event: events.Event) -> int:
    return 0x0000


def failure(status: int, reason: str) -> Dataset:
    """A failure status with an Error Comment (LO: 64 characters of plain ASCII) the modality can show."""
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = "".join(c for c in reason if " " <= c <= "~" and c != "\\")[:64]  # \ separates values
    return answer


def on_store(event: events.Event, connections: Connections, settings: Mapping[str, Any],
             claim: Callable[[str], OSError | None]) -> int | Dataset:
    """C-STORE: the dataset is already a file in the store's temporary area (chunked receive).

    Never raises: pynetdicom would answer 0xC211 and leave the file behind.
    """
    request = event.request
    source = source_of(event)
    path = str(event.dataset_path)
    if "store" not in getattr(event.assoc, "pacslite_rights", ()):  # offered for C-GET's replies only
        claim(path)
        Path(path).unlink(missing_ok=True)
        return failure(NOT_AUTHORIZED, "this AE may not store images here")
    try:
        error = claim(path)
        if error is not None:
            raise filing.IngestError(filing.OUT_OF_RESOURCES, str(error))
        outcome = filing.ingest(connections.of(event.assoc), settings["STORAGE_DIR"], Path(path),
                                source, sop_class_uid=str(request.AffectedSOPClassUID),
                                sop_instance_uid=str(request.AffectedSOPInstanceUID),
                                high_water_percent=settings["STORAGE_HIGH_WATER_PERCENT"])
    except filing.IngestError as exc:
        log.warning("C-STORE from %s@%s refused with 0x%04X: %s", source.calling_ae, source.address,
                    exc.status, exc)
        Path(path).unlink(missing_ok=True)
        return failure(exc.status, str(exc))
    except Exception:
        log.exception("C-STORE from %s@%s failed", source.calling_ae, source.address)
        Path(path).unlink(missing_ok=True)
        return failure(filing.OUT_OF_RESOURCES, "pacslite could not store the image")
    log.debug("C-STORE %s from %s: %s %s", outcome.sop_instance_uid, source.calling_ae, outcome.result,
              outcome.accession_number or outcome.reason)
    return filing.SUCCESS


#: The C-FIND information models pacslite answers, by SOP class.
FIND_MODELS = {str(ModalityWorklistInformationFind): "worklist",
               str(PatientRootQueryRetrieveInformationModelFind): qr.PATIENT_ROOT,
               str(StudyRootQueryRetrieveInformationModelFind): qr.STUDY_ROOT}
#: Warning (PS3.4 C.4.1.1.4): the response limit (QR_MAX_ANSWERS) was reached.
FIND_TRUNCATED = 0xB001


def _answers(conn: sqlite3.Connection, settings: Mapping[str, Any], identifier: Any, model: str,
             charset: str, calling_ae: str) -> Iterator[Any]:
    if model == "worklist":
        return worklist.query(conn, settings, identifier, charset, calling_ae)
    return qr.find(conn, settings, identifier, model, charset)


def on_find(event: events.Event, connections: Connections, settings: Mapping[str, Any]) -> Iterator[Any]:
    """C-FIND on the Modality Worklist or a Query/Retrieve information model. At most
    QR_MAX_ANSWERS answers, then a warning: a broad query is never answered with everything."""
    model = FIND_MODELS.get(str(event.request.AffectedSOPClassUID))
    if model is None:
        yield FIND_UNABLE_TO_PROCESS, None
        return
    conn = connections.of(event.assoc)
    calling = source_of(event).calling_ae
    limit = int(settings["QR_MAX_ANSWERS"])
    try:
        answers = _answers(conn, settings, event.identifier, model, aes.charset_of(conn, calling), calling)
        for count, answer in enumerate(answers):
            if event.is_cancelled:
                yield FIND_CANCELLED, None
                return
            if count == limit:
                yield failure(FIND_TRUNCATED, f"more than {limit} matches: only the first {limit} were sent"), None
                return
            yield FIND_PENDING, answer
    except query.QueryError as exc:
        log.warning("%s query from %s refused: %s", model, calling, exc)
        yield failure(FIND_IDENTIFIER_MISMATCH, str(exc)), None
    except (ValueError, TypeError, AttributeError, LookupError) as exc:
        log.warning("%s query from %s could not be read: %s", model, calling, exc)
        yield FIND_UNABLE_TO_PROCESS, None


# ---------------------------------------------------------------- MPPS and storage commitment

def _actor(event: events.Event) -> audit.Actor:
    source = source_of(event)
    return audit.Actor(f"ae:{source.calling_ae}", source.address)


def _may(event: events.Event, right: str) -> bool:
    return right in getattr(event.assoc, "pacslite_rights", ())


def on_n_create(event: events.Event, connections: Connections, settings: Mapping[str, Any]) -> tuple[Any, Any]:
    """N-CREATE of a Modality Performed Procedure Step (IN PROGRESS)."""
    if not _may(event, "mpps"):
        return failure(NOT_AUTHORIZED, "this AE may not report procedure steps"), None
    uid = str(event.request.AffectedSOPInstanceUID or "") or uids.new_uid(settings["UID_ROOT"])
    try:
        mpps.create(connections.of(event.assoc), settings, _actor(event), uid, event.attribute_list)
    except mpps.MppsError as exc:
        log.warning("MPPS N-CREATE %s from %s refused with 0x%04X: %s", uid, source_of(event).calling_ae,
                    exc.status, exc)
        return failure(exc.status, str(exc)), None
    except Exception as exc:  # an undecodable attribute list, …
        log.warning("MPPS N-CREATE %s from %s could not be read: %s", uid, source_of(event).calling_ae, exc)
        return failure(mpps.PROCESSING_FAILURE, "the attribute list could not be read"), None
    created = Dataset()
    if not event.request.AffectedSOPInstanceUID:  # PS3.7 10.1.5.1.4: the SCP names the instance it made
        created.AffectedSOPInstanceUID = uid
    return 0x0000, created


def on_n_set(event: events.Event, connections: Connections, settings: Mapping[str, Any]) -> tuple[Any, Any]:
    """N-SET of a Modality Performed Procedure Step (COMPLETED, DISCONTINUED, or more values)."""
    if not _may(event, "mpps"):
        return failure(NOT_AUTHORIZED, "this AE may not report procedure steps"), None
    uid = str(event.request.RequestedSOPInstanceUID or "")
    try:
        mpps.update(connections.of(event.assoc), settings, _actor(event), uid, event.modification_list,
                    source_of(event).calling_ae)
    except mpps.MppsError as exc:
        log.warning("MPPS N-SET %s from %s refused with 0x%04X: %s", uid, source_of(event).calling_ae,
                    exc.status, exc)
        answer = failure(exc.status, str(exc))
        if exc.error_id is not None:
            answer.ErrorID = exc.error_id
        return answer, None
    except Exception as exc:
        log.warning("MPPS N-SET %s from %s could not be read: %s", uid, source_of(event).calling_ae, exc)
        return failure(mpps.PROCESSING_FAILURE, "the modification list could not be read"), None
    return 0x0000, None


#: Storage Commitment Push Model's well-known SOP Instance (PS3.4 J.3.5) and its one action.
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_COMMITMENT = 1
NO_SUCH_ACTION = 0x0123


def on_n_action(event: events.Event, connections: Connections) -> tuple[Any, Any]:
    """N-ACTION "request storage commitment": decided and kept at once; the report follows
    (on this association if it stays open: :mod:`pacslite.dicom.commitment`)."""
    calling = source_of(event).calling_ae
    if not _may(event, "commitment"):
        return failure(NOT_AUTHORIZED, "this AE may not ask for storage commitment"), None
    if str(event.request.RequestedSOPInstanceUID) != COMMITMENT_INSTANCE:
        return failure(commitment.NO_SUCH_INSTANCE, "not the Storage Commitment well-known instance"), None
    if event.request.ActionTypeID != REQUEST_COMMITMENT:
        return failure(NO_SUCH_ACTION, "the only action is 1, request storage commitment"), None
    try:
        transaction_uid, pairs = commitment.references(event.action_information)
        kept = commitment.request(connections.of(event.assoc), _actor(event), calling, transaction_uid, pairs,
                                  on_association=True)
    except commitment.CommitmentError as exc:
        log.warning("storage commitment from %s refused with 0x%04X: %s", calling, exc.status, exc)
        return failure(exc.status, str(exc)), None
    except Exception as exc:
        log.warning("storage commitment from %s could not be read: %s", calling, exc)
        return failure(commitment.PROCESSING_FAILURE, "the action information could not be read"), None
    event.assoc.pacslite_commitments = [*getattr(event.assoc, "pacslite_commitments", []), kept["id"]]
    return 0x0000, None


def record_refusal(event: events.Event, database: str, reason: str) -> None:
    """Note a refused association for the admin page and the audit log."""
    requestor = event.assoc.requestor
    calling = names.printable(str(requestor.primitive.calling_ae_title))
    called = names.printable(str(requestor.primitive.called_ae_title))
    conn = db.connect(database)
    try:
        aes.record_rejection(conn, calling, called, str(requestor.address), reason)
    finally:
        conn.close()
    log.warning("refused an association from %s@%s calling %s: %s", calling, requestor.address, called, reason)


#: pynetdicom's presentation context results (PS3.8 9.3.3.2) as pacslite names them.
CONTEXT_REFUSALS = {0x01: "rejected_by_user", 0x02: "rejected", 0x03: "abstract_syntax_not_supported",
                    0x04: "transfer_syntaxes_not_supported"}


def on_accepted(event: events.Event, connections: Connections) -> None:
    """Note the AE's contact; record the services (presentation contexts) the association asked
    for and was refused."""
    source = source_of(event)
    aes.note_association(connections.of(event.assoc), source.calling_ae, clock.to_db(clock.now()))
    withheld = getattr(event.assoc, "pacslite_withheld", set())  # offered to others, not to this AE
    refused = [(names.printable(str(cx.abstract_syntax))[:64],
                "not_permitted" if str(cx.abstract_syntax) in withheld else CONTEXT_REFUSALS.get(cx.result, "rejected"))
               for cx in event.assoc.rejected_contexts]
    if refused:
        aes.record_refused_contexts(connections.of(event.assoc), source.calling_ae, source.address, refused)
        log.warning("refused %s to %s@%s", ", ".join(a for a, _ in refused), source.calling_ae, source.address)


def on_ended(connections: Connections, abandon: Callable[[Any], int], assoc: Any) -> None:
    """An association ended (released, aborted, timed out, killed): what it was still sending
    is removed, what it stored is audited (one row per study), its database connection closed."""
    abandon(assoc)
    conn = connections.existing(assoc)
    try:
        if conn is not None:
            arrivals.close(conn, getattr(assoc, "pacslite_batch", ""))
    except Exception:  # left open: audited at the next start
        log.exception("could not audit what association %s stored", getattr(assoc, "pacslite_batch", ""))
    finally:
        connections.close(assoc)
