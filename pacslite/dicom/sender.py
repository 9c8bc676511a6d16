"""The one DICOM sender: stored images to another AE, over an association pacslite opens
(C-MOVE, forward rules, "send to…") or over the requesting one (C-GET); and storage
commitment reports that could not go on the requesting association. What goes and in which
form is :mod:`pacslite.pacs.outbound`'s (and :mod:`pacslite.pacs.commitment`'s) decision; this only
knows pynetdicom. Film printing too: the films :mod:`pacslite.pacs.printing` rendered, to a
printer (the print SCU)."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (BasicFilmBox, BasicFilmSession,  # type: ignore[attr-defined]
                                  BasicGrayscalePrintManagementMeta, Printer, PrinterInstance,
                                  StorageCommitmentPushModel, Verification)

from ..pacs import outbound, printing
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


# ---------------------------------------------------------------- film printing

META = BasicGrayscalePrintManagementMeta


def _check(status: Any, what: str) -> None:
    code = None if status is None or "Status" not in status else int(status.Status)
    if code is None or code not in (0x0000, 0xB600, 0xB602, 0xB603, 0xB604, 0xB605, 0xB609, 0xB60A):
        raise PrintRefused(f"{what}: " + ("no answer" if code is None else f"status 0x{code:04X}"))


class PrintRefused(Exception):
    """The printer did not take a step of the job."""


def print_films(settings: Mapping[str, Any], printer: Mapping[str, Any], job: Mapping[str, Any],
                films: list[printing.Film]) -> str | None:
    """Print ``films`` on ``printer`` through Basic Grayscale Print Management: a film session,
    then per film a film box in the job's layout, size and orientation, an image box per
    picture (8-bit MONOCHROME2) and the film box printed; the session deleted. None when every
    film was printed, else why not (warnings, 0xB6xx, count as printed: the printer took it)."""
    ae = _requestor(settings)
    ae.add_requested_context(BasicGrayscalePrintManagementMeta, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
    assoc = ae.associate(printer["host"], printer["port"], ae_title=printer["ae_title"],
                         max_pdu=settings["DICOM_MAX_PDU"], tls_args=tls.tls_args(settings, printer))
    if not assoc.is_established:
        return f"cannot associate with {printer['ae_title']} ({printer['host']}:{printer['port']})"
    try:
        _printer_ready(assoc, printer["ae_title"])
        session_uid = generate_uid()
        session = Dataset()
        session.NumberOfCopies = int(job["copies"])
        session.MediumType, session.FilmDestination = "BLUE FILM", "PROCESSOR"
        _check(assoc.send_n_create(session, BasicFilmSession, session_uid, meta_uid=META)[0], "film session")
        for number, film in enumerate(films, start=1):
            _print_film(assoc, job, film, session_uid, f"film {number} of {len(films)}")
        assoc.send_n_delete(BasicFilmSession, session_uid, meta_uid=META)
        return None
    except PrintRefused as exc:
        return str(exc)
    except (RuntimeError, ValueError, AttributeError) as exc:  # the printer aborted, or answered nonsense
        return f"{printer['ae_title']}: {exc}"[:500]
    finally:
        if assoc.is_established:
            assoc.release()


def _printer_ready(assoc: Any, title: str) -> None:
    """Ask the printer for its status (N-GET of the Printer): one that says FAILURE is not sent
    films (the job waits and the alert says why); one that does not answer the question is
    tried (not every print SCP implements it)."""
    status, printer = assoc.send_n_get([0x21100010, 0x21100020], Printer, PrinterInstance, meta_uid=META)
    if status is None or "Status" not in status:
        raise PrintRefused(f"{title} did not answer")
    if status.Status in (0x0000, 0x0001, 0x0107, 0x0116) and printer is not None:
        if str(printer.get("PrinterStatus", "")).upper() == "FAILURE":
            raise PrintRefused(f"{title} reports FAILURE: {printer.get('PrinterStatusInfo', '')}")


def _print_film(assoc: Any, job: Mapping[str, Any], film: printing.Film, session_uid: str, what: str) -> None:
    box = Dataset()
    box.ImageDisplayFormat = film.display_format
    box.FilmOrientation, box.FilmSizeID = job["orientation"], job["film_size"]
    session = Dataset()
    session.ReferencedSOPClassUID, session.ReferencedSOPInstanceUID = BasicFilmSession, session_uid
    box.ReferencedFilmSessionSequence = [session]
    box_uid = generate_uid()
    status, made = assoc.send_n_create(box, BasicFilmBox, box_uid, meta_uid=META)
    _check(status, f"{what}: film box")
    boxes = list(made.get("ReferencedImageBoxSequence", [])) if made is not None else []
    if len(boxes) < len(film.pictures):
        raise PrintRefused(f"{what}: the printer made {len(boxes)} image boxes for {len(film.pictures)} images")
    for position, (item, picture) in enumerate(zip(boxes, film.pictures), start=1):
        image = Dataset()
        image.SamplesPerPixel, image.PhotometricInterpretation = 1, "MONOCHROME2"
        image.Rows, image.Columns, image.PixelAspectRatio = picture.rows, picture.columns, [1, 1]
        image.BitsAllocated = image.BitsStored = 8
        image.HighBit, image.PixelRepresentation = 7, 0
        image.PixelData = picture.pixels
        image_box = Dataset()
        image_box.ImageBoxPosition = position
        image_box.BasicGrayscaleImageSequence = [image]
        _check(assoc.send_n_set(image_box, item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID,
                                meta_uid=META)[0], f"{what}: image {position}")
    _check(assoc.send_n_action(None, 1, BasicFilmBox, box_uid, meta_uid=META)[0], f"{what}: print")
