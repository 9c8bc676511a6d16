"""Reports: the radiologist's work list, drafts, sign-off, amendments, and the zero-image lock.

A report is kept in versions (``report_versions``). Version 1 goes draft → preliminary →
final; a final version never changes (a database trigger refuses it), and an amendment is a
new version with its reason that goes through the same states. The **lock**: nobody signs,
preliminary or final, while the exam has no filed images; the refusal is audited. Every save
names the revision it edited, so two radiologists cannot silently overwrite each other.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Mapping, Sequence

from ..core import audit, clock, config, workhours
from . import critical, exams, outbox, patients, report_templates, users
from ..core.db import transaction
from ..core.validation import N_, NotFound, Conflict, FormErrors, ValidationError, choice, text

DRAFT, PRELIMINARY, FINAL = "draft", "preliminary", "final"
SIGN_LEVELS = (PRELIMINARY, FINAL)
#: How the radiologist classes the result when signing (a final report must be classed).
NORMAL, ABNORMAL, CRITICAL = "normal", "abnormal", "critical"
RESULT_CLASSES = (NORMAL, ABNORMAL, CRITICAL)


@dataclass(frozen=True)
class Signing:
    """What a sign-off asks for, checked before anything is saved (the confirmation shows it)."""

    level: str
    result_class: str  # empty: not classed (allowed for a preliminary report)


def signing(data: Mapping[str, Any]) -> Signing:
    """The sign-off ``data`` asks for, or ValidationError: a level, for a final report an
    impression and a result class, and no phrase blank left unfilled (either level)."""
    level = choice(data, "level", SIGN_LEVELS)
    result_class = choice(data, "result_class", RESULT_CLASSES, required=level == FINAL)
    if level == FINAL and not text(data, "impression", max_length=TEXT_MAX, multiline=True):
        raise ValidationError("impression", N_("A final report needs an impression."))
    _refuse_unfilled_blanks(data)
    return Signing(level, result_class)


#: A phrase's blank for the radiologist to fill in ("大小约__mm×__mm"): two or more underscores,
#: or full-width low lines.
BLANK = re.compile(r"_{2,}|＿+")


def first_blank(value: str) -> tuple[int, str] | None:
    """The first line (numbered from 1) that still holds a blank, and its text; None when none does."""
    for number, line in enumerate(value.splitlines(), 1):
        if BLANK.search(line):
            return number, line.strip()
    return None


def _refuse_unfilled_blanks(data: Mapping[str, Any]) -> None:
    """A report is not signed with a template's blank or choice slot in it: each text that has
    one is named, with the line, so that the page can point at it."""
    problems = {}
    for field in ("findings", "impression"):
        value = text(data, field, max_length=TEXT_MAX, multiline=True)
        found = first_blank(value)
        slot = report_templates.first_slot(value)
        if found is not None:
            problems[field] = (N_("Fill in the blank (__) before signing, line %(line)d: %(text)s"),
                               {"line": found[0], "text": found[1][:120]})
        elif slot is not None:
            problems[field] = (N_("Choose one of the choices {…/…} before signing, line %(line)d: %(text)s"),
                               {"line": slot[0], "text": slot[1][:120]})
    if problems:
        raise FormErrors(problems)


def check_signer(conn: sqlite3.Connection, username: str) -> None:
    """A report is signed in a person's name, printed on it: no display name, no signature."""
    user = users.by_username(conn, username)
    if user is None or not user.display_name.strip():
        raise Conflict(N_("Your account has no display name, which a signed report prints: ask an administrator"
                          " to give it one."))


TEXT_MAX = 20_000
#: Another radiologist's hold on a report counts for this long after their last save.
HOLD_MINUTES = 15


class ReportLocked(Conflict):
    """The exam has no filed images: the report cannot be signed."""


class StaleReport(Conflict):
    """Somebody saved the report after the revision this save was editing."""

    def __init__(self, current: sqlite3.Row) -> None:
        super().__init__(N_("%(user)s saved this report at %(at)s, after you opened it. Your text was not saved;"
                            " it is kept below so that you can merge it."), user=current["updated_by"],
                         at=current["updated_at"])
        self.current = current


# ---------------------------------------------------------------- reading

def versions(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    """Every version of the exam's report, oldest first."""
    return conn.execute("SELECT * FROM report_versions WHERE exam_ref = ? ORDER BY version", (exam_id,)).fetchall()


def latest(conn: sqlite3.Connection, exam_id: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM report_versions WHERE exam_ref = ? ORDER BY version DESC LIMIT 1",
                        (exam_id,)).fetchone()


def superseded_by(all_versions: Sequence[Mapping[str, Any]], version: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The final version that replaced ``version`` (the first one signed after it), or None
    when ``version`` is still the report as issued."""
    later = [v for v in all_versions if v["version"] > version["version"] and v["status"] == FINAL]
    return min(later, key=lambda v: v["version"]) if later else None


def latest_final(conn: sqlite3.Connection, exam_id: int) -> sqlite3.Row | None:
    """The report as issued: the newest final version (an amendment in progress is not)."""
    return conn.execute("SELECT * FROM report_versions WHERE exam_ref = ? AND status = ? ORDER BY version DESC"
                        " LIMIT 1", (exam_id, FINAL)).fetchone()


#: Prior exams the report page lists (newest first).
PRIORS = 20


def priors(conn: sqlite3.Connection, exam: Mapping[str, Any], limit: int = PRIORS) -> list[sqlite3.Row]:
    """The patient's other exams with an issued (final) report, newest first, each with the
    impression of its newest final version: what a radiologist compares with."""
    return conn.execute(
        "SELECT e.id, e.accession_number, e.modality, e.procedure, e.body_part, e.scheduled_at, e.reported_at,"
        " r.version, r.impression, r.signed_at FROM exams e JOIN report_versions r ON r.exam_ref = e.id"
        " AND r.version = (SELECT MAX(f.version) FROM report_versions f WHERE f.exam_ref = e.id AND f.status = ?)"
        " WHERE e.patient_ref = ? AND e.id <> ? ORDER BY e.scheduled_at DESC LIMIT ?",
        (FINAL, exam["patient_ref"], exam["id"], limit)).fetchall()


def for_the_ward(conn: sqlite3.Connection, exam_id: int) -> sqlite3.Row | None:
    """The report a ward reads: the newest final version, else the newest preliminary one
    (shown as preliminary); None while nothing is signed."""
    return conn.execute("SELECT * FROM report_versions WHERE exam_ref = ? AND status IN (?, ?)"
                        " ORDER BY status = ? DESC, version DESC LIMIT 1",
                        (exam_id, FINAL, PRELIMINARY, FINAL)).fetchone()


def get_version(conn: sqlite3.Connection, exam_id: int, version: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM report_versions WHERE exam_ref = ? AND version = ?",
                        (exam_id, version)).fetchone()


def version_by_id(conn: sqlite3.Connection, version_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM report_versions WHERE id = ?", (version_id,)).fetchone()
    if row is None:
        raise NotFound(f"report version {version_id}")
    return row


def is_locked(exam: Mapping[str, Any]) -> bool:
    """The zero-image lock: an exam without filed images cannot be reported."""
    return exam["instance_count"] == 0


def holder(version: sqlite3.Row | None, user: str) -> tuple[str, str] | None:
    """(who, since) if somebody else has had this version open in the last HOLD_MINUTES."""
    if version is None or not version["held_by"] or version["held_by"] == user:
        return None
    held_at = clock.from_db(version["held_at"])
    if held_at is None or clock.now() - held_at > timedelta(minutes=HOLD_MINUTES):
        return None
    return version["held_by"], version["held_at"]


# ---------------------------------------------------------------- the work list

@dataclass(frozen=True)
class ReadingItem:
    exam: sqlite3.Row
    report_status: str  # "" (none yet), draft or preliminary
    waiting: timedelta  # since the first image arrived
    target_hours: float
    due_at: datetime
    overdue: bool


def due_at(exam: Mapping[str, Any], settings: Mapping[str, Any]) -> datetime:
    """When the report is due: the first image's arrival plus the exam's report target (fixed
    when it was registered), counted in the department's reporting hours."""
    return workhours.exam_due(clock.from_db(exam["images_first_at"] or exam["scheduled_at"]), exam, settings)


def reading_list(conn: sqlite3.Connection, settings: Mapping[str, Any], *, modality: str = "", source: str = "",
                 priority: str = "", day: date | None = None, query: str = "", review_by: str = "",
                 limit: int = 500) -> list[ReadingItem]:
    """Exams with images and no final report: urgent first, then overdue, then longest waiting.
    ``review_by``: only the reports submitted for review that this user did not write."""
    clauses, params = patients.exam_filter(modality=modality, source=source, priority=priority, query=query)
    if review_by:
        clauses += ["e.status = ?", "COALESCE((SELECT r.preliminary_by FROM report_versions r WHERE r.exam_ref = e.id"
                    " ORDER BY r.version DESC LIMIT 1), '') <> ?"]
        params += [exams.PRELIMINARY, review_by]
    # the exam's state says there is no final report yet (exams.py moves it to final when one is
    # signed): an index range over the few exams waiting, not a NOT EXISTS over every exam
    clauses += ["e.instance_count > 0", f"e.status IN ({', '.join('?' * len(exams.AWAITING_FINAL))})"]
    params += list(exams.AWAITING_FINAL)
    if day is not None:
        start, end = clock.local_day_bounds(day, settings["TIMEZONE"])
        clauses += ["e.images_first_at >= ?", "e.images_first_at < ?"]
        params += [start, end]
    rows = conn.execute(
        "SELECT x.*, (SELECT r.status FROM report_versions r WHERE r.exam_ref = x.id ORDER BY r.version DESC"
        f" LIMIT 1) AS report_status FROM ({patients.exam_select()} WHERE {' AND '.join(clauses)}"
        " ORDER BY e.images_first_at LIMIT ?) x", (*params, limit)).fetchall()
    now = clock.now()
    items = []
    for row in rows:
        due = due_at(row, settings)
        target = row["target_hours"]
        items.append(ReadingItem(row, row["report_status"] or "", now - clock.from_db(row["images_first_at"]),
                                 target, due, now > due))
    urgency = {"stat": 0, "urgent": 1}
    items.sort(key=lambda i: (urgency.get(i.exam["priority"], 2), not i.overdue, -i.waiting.total_seconds()))
    return items


def take(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], action: str = "take") -> None:
    """A radiologist takes the exam to report it (``take``; others see who has it on the
    reading list), takes it over from another (``force``; audited with whom it was taken
    from), or releases it (``release``). Only an exam waiting for its final report is taken."""
    release, force = action == "release", action == "force"
    with transaction(conn):
        current = conn.execute("SELECT taken_by, status FROM exams WHERE id = ?", (exam["id"],)).fetchone()
        holder = current["taken_by"]
        if release:
            if holder != actor.name:
                raise Conflict(N_("You do not have this exam."))
            exams.set_taken(conn, exam["id"], None, None)
            action, detail = "report.release", {}
        else:
            if current["status"] not in exams.AWAITING_FINAL:
                raise Conflict(N_("This exam does not wait for a report."))
            if holder and holder != actor.name and not force:
                raise Conflict(N_("%(user)s has taken this exam."), user=users.display_names(conn, [holder])[holder])
            exams.set_taken(conn, exam["id"], actor.name, clock.to_db(clock.now()))
            action, detail = "report.take", {"from": holder} if holder and holder != actor.name else {}
        audit.record(conn, actor, action, f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail=detail)


# ---------------------------------------------------------------- writing

def _texts(data: Mapping[str, Any]) -> tuple[str, str]:
    return (text(data, "findings", max_length=TEXT_MAX, multiline=True),
            text(data, "impression", max_length=TEXT_MAX, multiline=True))


def _revision(data: Mapping[str, Any]) -> int:
    raw = str(data.get("revision", ""))
    if not raw.isdigit():
        raise ValidationError("revision", N_("The form is incomplete: reload the page."))
    return int(raw)


def can_edit(exam: Mapping[str, Any], current: sqlite3.Row | None) -> bool:
    """Whether the report may be edited now: the exam has images and is not cancelled, and
    the report is not final (a final report is amended instead)."""
    return (not is_locked(exam) and exam["status"] != exams.CANCELLED
            and (current is None or current["status"] != FINAL))


def _write(conn: sqlite3.Connection, actor: audit.Actor, exam: sqlite3.Row, data: Mapping[str, Any],
           changes: Mapping[str, Any]) -> sqlite3.Row:
    """Save the texts over the revision the client edited (inside a transaction); refuses a
    stale save. Saving marks the version as held by the saver."""
    findings, impression = _texts(data)
    revision = _revision(data)
    current = latest(conn, exam["id"])
    if current is not None and current["status"] == FINAL:
        raise Conflict(N_("This report is final; amend it to change it."))
    if (current["revision"] if current is not None else 0) != revision:
        raise StaleReport(current)
    now = clock.to_db(clock.now())
    if current is None:  # the first save creates version 1 (revision 0 is "no report yet")
        conn.execute("INSERT INTO report_versions (exam_ref, version, status, revision, created_at, created_by,"
                     " updated_at, updated_by) VALUES (?, 1, ?, 0, ?, ?, ?, ?)",
                     (exam["id"], DRAFT, now, actor.name, now, actor.name))
        current = latest(conn, exam["id"])
    assignments = {"findings": findings, "impression": impression, "revision": revision + 1, "updated_at": now,
                   "updated_by": actor.name, "held_by": actor.name, "held_at": now, **changes}
    conn.execute(f"UPDATE report_versions SET {', '.join(f'{k} = ?' for k in assignments)} WHERE id = ?",
                 (*assignments.values(), current["id"]))
    return latest(conn, exam["id"])


def _refuse_if_locked(conn: sqlite3.Connection, actor: audit.Actor, exam: sqlite3.Row, action: str) -> None:
    """The server-side lock: record the denied attempt, then refuse."""
    if not is_locked(exam):
        return
    with transaction(conn):
        audit.record(conn, actor, action, f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     outcome="denied", detail={"reason": "no_images"})
    raise ReportLocked(N_("This exam has no images. The report cannot be signed until its images have arrived."))


def save(conn: sqlite3.Connection, actor: audit.Actor, exam: sqlite3.Row, data: Mapping[str, Any]) -> sqlite3.Row:
    """Save the draft (or preliminary) texts; the autosave calls this as the radiologist types."""
    _refuse_if_locked(conn, actor, exam, "report.save")
    with transaction(conn):
        saved = _write(conn, actor, exam, data, {})
        audit.record(conn, actor, "report.save", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"version": saved["version"], "revision": saved["revision"]})
    return saved


def sign(conn: sqlite3.Connection, actor: audit.Actor, exam: sqlite3.Row, data: Mapping[str, Any],
         settings: Mapping[str, Any], reviewer: bool = False) -> sqlite3.Row:
    """Save and sign, preliminary or final (``data["level"]``); refused while the exam has no
    images. The exam's state follows (:func:`exams.report_signed`). Where reports are reviewed
    (:func:`config.review_required`) the preliminary signature submits the report for review,
    and only a ``reviewer`` other than its writer issues it final. A result classed critical
    goes to the requesting department at once (:func:`critical.record_from_report`), even on a
    report submitted for review."""
    asked = signing(data)
    level = asked.level
    review = config.review_required(settings, exam["modality"])
    _refuse_if_locked(conn, actor, exam, "report.sign")
    check_signer(conn, actor.name)
    now = clock.to_db(clock.now())
    # a signature ends the writer's hold: nobody is warned that the writer is still editing it
    changes: dict[str, Any] = {"status": level, "result_class": asked.result_class or None, "held_by": None,
                               "held_at": None}
    if level == PRELIMINARY:
        changes.update(preliminary_at=now, preliminary_by=actor.name)
    else:
        changes.update(signed_at=now, signed_by=actor.name)
    with transaction(conn):  # signed preliminary again: the newest preliminary signature counts
        if review and level == FINAL:
            _check_review(latest(conn, exam["id"]), actor, reviewer)
        signed = _write(conn, actor, exam, data, changes)
        exams.report_signed(conn, actor, exam, level, review, result_class=asked.result_class,
                            due_at=clock.to_db(due_at(exam, settings)))
        audit.record(conn, actor, "report.sign", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"version": signed["version"], "level": level, "result_class": asked.result_class})
        if asked.result_class == CRITICAL:
            critical.record_from_report(conn, actor, exam, signed, now, settings["CRITICAL_ACK_MINUTES"])
        outbox.report_signed(conn, settings, exam["id"], signed["id"], level == FINAL, signed["version"] > 1)
    return signed


def _check_review(current: sqlite3.Row | None, actor: audit.Actor, reviewer: bool) -> None:
    """Issuing a final report where reports are reviewed: it was submitted, the signer may
    review, and nobody reviews their own report."""
    if current is None or current["status"] != PRELIMINARY:
        raise Conflict(N_("Reports are reviewed here: submit this report for review first."))
    if not reviewer:
        raise Conflict(N_("Reports are reviewed here: a radiologist who may review issues the final report."))
    if current["preliminary_by"] == actor.name:
        raise Conflict(N_("You wrote this report: another radiologist reviews it and issues it."))


def amend(conn: sqlite3.Connection, actor: audit.Actor, exam: sqlite3.Row, data: Mapping[str, Any]) -> sqlite3.Row:
    """Start an amendment of the final report: a new draft version, with the reason, from its text."""
    reason = text(data, "reason", required=True, max_length=500)
    now = clock.to_db(clock.now())
    with transaction(conn):
        current = latest(conn, exam["id"])
        if current is None or current["status"] != FINAL:
            raise Conflict(N_("Only a final report can be amended."))
        version = current["version"] + 1
        conn.execute("INSERT INTO report_versions (exam_ref, version, status, findings, impression, amendment_reason,"
                     " created_at, created_by, updated_at, updated_by, held_by, held_at)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (exam["id"], version, DRAFT, current["findings"], current["impression"], reason, now,
                      actor.name, now, actor.name, actor.name, now))
        audit.record(conn, actor, "report.amend", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"version": version, "reason": reason})
    return latest(conn, exam["id"])


def record_print(conn: sqlite3.Connection, actor: audit.Actor, exam: sqlite3.Row, version: sqlite3.Row,
                 fmt: str) -> None:
    with transaction(conn):
        audit.record(conn, actor, "report.print", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"version": version["version"], "status": version["status"], "format": fmt})


# ---------------------------------------------------------------- missing images

def flag_missing_images(conn: sqlite3.Connection, actor: audit.Actor, exam: sqlite3.Row) -> None:
    """"Notify technologist": the exam is flagged *images missing* until images are filed."""
    if not is_locked(exam):
        raise Conflict(N_("This exam has images."))
    with transaction(conn):
        exams.flag_images_missing(conn, exam, actor.name, clock.to_db(clock.now()))
        audit.record(conn, actor, "exam.images_missing", f"exam:{exam['accession_number']}",
                     patient_id=exam["patient_id"])


# ---------------------------------------------------------------- output

def api_view(exam: Mapping[str, Any], version: sqlite3.Row) -> dict[str, Any]:
    """The final report as the JSON API gives it to the hospital information system."""
    return {"accession_number": exam["accession_number"], "patient_id": exam["patient_id"],
            "version": version["version"], "status": version["status"], "findings": version["findings"],
            "impression": version["impression"], "signed_by": version["signed_by"],
            "signed_at": version["signed_at"], "amendment_reason": version["amendment_reason"]}
