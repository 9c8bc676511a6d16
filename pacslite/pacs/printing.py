"""Film printing (胶片打印): an exam's chosen images on films, sent to a dry laser printer.

A technologist picks images of the exam, a film layout (columns × rows: 1×1 … 4×6), the film
size and orientation, and a window per image; the job is queued for a printer, a configured AE
of DICOM modality ``HC`` (hard copy). The printing thread (:func:`run_due`) renders each image
to 8-bit grey with its window and sends the films through DICOM Basic Grayscale Print
Management (the network part is the ``send`` it is given: ``dicom.sender.print_films``). A job
the printer refuses or that cannot reach it is tried again (``PRINT_RETRY_FIRST_SECONDS``,
doubling) for ``PRINT_RETRY_HOURS``, then fails with a ``print_failed`` alert. Each printed job
is audited with its films (``film.print``); the statistics count films per modality and day.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from pydicom import dcmread

from ..core import alerts, audit, background, clock, storage
from ..core.db import claim_due, transaction
from ..core.validation import N_, Conflict, ValidationError, choice
from ..ris import aes
from . import imaging, index

log = logging.getLogger(__name__)

QUEUED, PRINTING, PRINTED, FAILED = "queued", "printing", "printed", "failed"
#: Film layouts (columns × rows) as a department prints them.
LAYOUTS = {"1x1": (1, 1), "2x2": (2, 2), "3x4": (3, 4), "4x5": (4, 5), "4x6": (4, 6)}
FILM_SIZES = ("8INX10IN", "10INX12IN", "11INX14IN", "14INX14IN", "14INX17IN")
ORIENTATIONS = ("PORTRAIT", "LANDSCAPE")
#: The hard-copy modality a printer AE is configured with.
PRINTER_MODALITY = "HC"
#: At most this many images in one job (10 films of 4×6).
MAX_IMAGES = 240
PRINT_FAILED = alerts.register("print_failed")
BATCH = 2
#: Window presets (center, width) a technologist picks per series or image; "image" is the
#: image's own (its header's, else its pixel range).
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "image": None, "lung": (-600.0, 1500.0), "mediastinum": (40.0, 400.0), "abdomen": (40.0, 350.0),
    "liver": (60.0, 160.0), "bone": (400.0, 1800.0), "brain": (40.0, 80.0), "stroke": (35.0, 40.0)}


def printers(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return [row for row in aes.stations(conn, PRINTER_MODALITY) if row["host"]]


@dataclass(frozen=True)
class Picture:
    """One image box's content: 8-bit grey, ``rows`` × ``columns``."""

    rows: int
    columns: int
    pixels: bytes


@dataclass(frozen=True)
class Film:
    display_format: str  # STANDARD\c,r
    pictures: list[Picture]


def _position(data: Mapping[str, Any], field: str, default: int) -> int:
    value = str(data.get(field) or "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValidationError(field, N_("A whole number from 1."))
    return int(value)


def picks_from(conn: sqlite3.Connection, exam: Mapping[str, Any], series_ids: list[str],
               data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The images a film form chose: of each chosen series of the exam, images ``from-<id>`` to
    ``to-<id>`` (positions from 1, in the series' order) taking every ``every-<id>``-th, with the
    series' window preset ``preset-<id>`` unless the image has its own (``preset-i<instance>``;
    blank: the series'). Each pick: ``instance``, ``series``, ``preset``, ``center``, ``width``.
    ValidationError for a series not of the exam, a bad number or preset, or too many images."""
    exam_series = {str(row["id"]) for row in index.series_of_exam(conn, exam["id"])}
    picks: list[dict[str, Any]] = []
    for series_id in dict.fromkeys(series_ids):
        if series_id not in exam_series:
            raise ValidationError("images", N_("Only this exam's images can be printed."))
        images = imaging.series_images(conn, int(series_id))
        first = _position(data, f"from-{series_id}", 1)
        last = min(_position(data, f"to-{series_id}", len(images)), len(images))
        every = _position(data, f"every-{series_id}", 1)
        preset = choice(data, f"preset-{series_id}", list(WINDOW_PRESETS), required=False) or "image"
        for instance in images[first - 1:last:every]:
            own = choice(data, f"preset-i{instance['id']}", list(WINDOW_PRESETS), required=False) or preset
            window = WINDOW_PRESETS[own]
            picks.append({"instance": instance["id"], "series": int(series_id), "preset": own,
                          "center": window[0] if window else None, "width": window[1] if window else None})
            if len(picks) > MAX_IMAGES:
                raise ValidationError("images", N_("At most %(count)d images a job."), count=MAX_IMAGES)
    return picks


def request(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], data: Mapping[str, Any],
            picks: list[Mapping[str, Any]]) -> int:
    """Queue a print job of ``picks`` (``instance`` id, optional ``center`` and ``width``: the
    header's window when blank) of the exam's images; its id. ValidationError for anything wrong
    (nothing queued)."""
    titles = [row["ae_title"] for row in printers(conn)]
    if not titles:
        raise ValidationError("printer", N_("No film printer is configured (an AE of modality HC, with its address)."))
    printer = choice(data, "printer", titles)
    layout = choice(data, "layout", list(LAYOUTS))
    film_size = choice(data, "film_size", list(FILM_SIZES))
    orientation = choice(data, "orientation", list(ORIENTATIONS))
    if not picks:
        raise ValidationError("images", N_("Choose the images to print."))
    if len(picks) > MAX_IMAGES:
        raise ValidationError("images", N_("At most %(count)d images a job."), count=MAX_IMAGES)
    images = []
    for pick in picks:
        instance = imaging.get_instance(conn, int(pick["instance"]))
        if instance is None or instance["exam_ref"] != exam["id"]:
            raise ValidationError("images", N_("Only this exam's images can be printed."))
        if instance["released_at"]:
            raise ValidationError("images", N_("An image is archived and not online: bring the study back first."))
        images.append({"instance": instance["id"], "center": imaging.window_value(pick.get("center"), "center"),
                       "width": imaging.window_value(pick.get("width"), "width")})
    columns, rows = LAYOUTS[layout]
    films = math.ceil(len(images) / (columns * rows))
    now = clock.to_db(clock.now())
    with transaction(conn):
        job_id = int(conn.execute(
            "INSERT INTO print_jobs (exam_ref, printer_ae, layout, film_size, orientation, images, films, state,"
            " next_attempt_at, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (exam["id"], printer, layout, film_size, orientation, json.dumps(images), films, QUEUED, now, now,
             actor.name)).lastrowid)
        audit.record(conn, actor, "film.request", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"job": job_id, "printer": printer, "layout": layout, "film_size": film_size,
                             "orientation": orientation, "images": len(images), "films": films})
    return job_id


def films_of(store: str | Path, conn: sqlite3.Connection, job: Mapping[str, Any]) -> list[Film]:
    """The job's films, each image rendered with its window (outside any transaction)."""
    columns, rows = LAYOUTS[job["layout"]]
    per_film = columns * rows
    pictures = []
    for pick in json.loads(job["images"]):
        instance = imaging.get_instance(conn, pick["instance"])
        if instance is None or instance["released_at"]:
            raise Conflict(N_("An image of this job is not online (archived, or no longer stored)."))
        view = imaging.View(center=pick["center"], width=pick["width"])
        try:
            image = imaging.to_image(dcmread(storage.resolve(store, instance["storage_path"])), view).convert("L")
        except Exception as exc:  # an image that cannot be decoded fails the job, with why
            raise Conflict(N_("An image of this job cannot be rendered: %(error)s"), error=str(exc)[:200]) from exc
        pictures.append(Picture(image.height, image.width, np.asarray(image, dtype=np.uint8).tobytes()))
    return [Film(f"STANDARD\\{columns},{rows}", pictures[i:i + per_film]) for i in range(0, len(pictures), per_film)]


def get_job(conn: sqlite3.Connection, job_id: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM print_jobs WHERE id = ?", (job_id,)).fetchone()


def of_exam(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM print_jobs WHERE exam_ref = ? ORDER BY id DESC LIMIT 50", (exam_id,)).fetchall()


# ---------------------------------------------------------------- the queue

#: ``send(settings, printer AE row, job row, films)``: None when printed, else why not.
Send = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any], list[Film]], "str | None"]


def _claim(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """The due jobs, marked printing."""
    return claim_due(conn, "SELECT * FROM print_jobs WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at"
                     " LIMIT ?", (QUEUED, clock.to_db(clock.now()), BATCH),
                     lambda due: conn.executemany("UPDATE print_jobs SET state = ? WHERE id = ?",
                                                  [(PRINTING, job["id"]) for job in due]))


def run_due(conn: sqlite3.Connection, settings: Mapping[str, Any], send: Send) -> int:
    """Print what is due; how many jobs were tried."""
    jobs = _claim(conn)
    for job in jobs:
        printer = aes.find_ae(conn, job["printer_ae"])
        try:
            error = (f"{job['printer_ae']} is no longer a configured printer" if printer is None or not printer["host"]
                     else send(settings, printer, job, films_of(settings["STORAGE_DIR"], conn, job)))
        except Conflict as exc:
            error = str(exc)
        _finish(conn, settings, job, error)
    return len(jobs)


def _finish(conn: sqlite3.Connection, settings: Mapping[str, Any], job: Mapping[str, Any], error: str | None) -> None:
    now = clock.now()
    exam = conn.execute("SELECT e.accession_number, p.patient_id FROM exams e JOIN patients p ON p.id = e.patient_ref"
                        " WHERE e.id = ?", (job["exam_ref"],)).fetchone()
    actor = audit.Actor(job["created_by"])
    with transaction(conn):
        attempts = job["attempts"] + 1
        if error is None:
            conn.execute("UPDATE print_jobs SET state = ?, attempts = ?, last_error = '', printed_at = ? WHERE id = ?",
                         (PRINTED, attempts, clock.to_db(now), job["id"]))
            audit.record(conn, actor, "film.print", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                         detail={"job": job["id"], "printer": job["printer_ae"], "films": job["films"]})
            alerts.clear_alert(conn, (PRINT_FAILED,), f"print:{job['id']}", clock.to_db(now), "printer")
            return
        given_up = now - clock.from_db(job["created_at"]) >= timedelta(hours=float(settings["PRINT_RETRY_HOURS"]))
        pause = background.retry_pause(float(settings["PRINT_RETRY_FIRST_SECONDS"]), attempts)
        conn.execute("UPDATE print_jobs SET state = ?, attempts = ?, last_error = ?, next_attempt_at = ? WHERE id = ?",
                     (FAILED if given_up else QUEUED, attempts, error[:500],
                      clock.to_db(now + timedelta(seconds=pause)), job["id"]))
        if given_up:
            audit.record(conn, actor, "film.print", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                         outcome="failure", detail={"job": job["id"], "printer": job["printer_ae"], "error": error[:500]})
        alerts.raise_alert(conn, PRINT_FAILED, f"print:{job['id']}", clock.to_db(now),
                           {"printer": job["printer_ae"], "error": error[:500], "attempts": attempts,
                            "given_up": given_up}, exam_ref=job["exam_ref"], refresh=True)
    log.warning("film printing: job %s on %s: %s", job["id"], job["printer_ae"], error)


def recover(conn: sqlite3.Connection) -> int:
    """Jobs left printing by a stopped process are queued again (a printer prints a repeat)."""
    with transaction(conn):
        return conn.execute("UPDATE print_jobs SET state = ? WHERE state = ?", (QUEUED, PRINTING)).rowcount

