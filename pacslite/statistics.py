"""The department's filing statistics for a period: how many exams got their images, how many
image sets (studies) were filed automatically or re-filed, what is still missing, and how
fast reports came.

Exam figures count the exams registered in the period; study and image figures count what
arrived in it (a study counts for the group of the exam it is filed to now). Rates are
fractions (0..1), or None when there is nothing to divide by.
"""
from __future__ import annotations

import sqlite3
import statistics as stats
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Iterable, Mapping

from . import clock, config, exams

DIMENSIONS = ("modality", "source", "station")


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


@dataclass
class Group:
    """The figures of one group (a modality, a source, a station, or everything)."""

    name: str
    registered: int = 0
    cancelled: int = 0
    with_images: int = 0
    images: int = 0
    missing_images: int = 0
    studies_auto: int = 0  # filed on arrival, never re-filed
    studies_refiled: int = 0
    exams_refiled: int = 0
    reported: int = 0
    within_target: int = 0
    turnaround_hours: list[float] = field(default_factory=list)

    @property
    def studies_filed(self) -> int:
        return self.studies_auto + self.studies_refiled

    @property
    def auto_rate(self) -> float | None:
        return _ratio(self.studies_auto, self.studies_filed)

    @property
    def refile_rate(self) -> float | None:
        """Re-filed exams, of the exams with images."""
        return _ratio(self.exams_refiled, self.with_images)

    @property
    def turnaround_median(self) -> float | None:
        return stats.median(self.turnaround_hours) if self.turnaround_hours else None

    @property
    def turnaround_p90(self) -> float | None:
        return _percentile(self.turnaround_hours, 0.9)

    @property
    def within_target_rate(self) -> float | None:
        return _ratio(self.within_target, self.reported)


@dataclass
class Report:
    start: date
    end: date  # inclusive
    total: Group
    groups: dict[str, list[Group]]
    images_received: int
    studies_received: int  # not counting rejected ones (test images, no patient)
    studies_quarantined: int  # in quarantine now
    studies_quarantined_on_arrival: int  # some of them re-filed since
    minutes_to_refile: list[float]

    @property
    def auto_rate(self) -> float | None:
        """Studies filed automatically on arrival, of the studies received."""
        return _ratio(self.total.studies_auto, self.studies_received)

    @property
    def study_refile_rate(self) -> float | None:
        return _ratio(self.total.studies_refiled, self.studies_received)

    @property
    def final_filing_rate(self) -> float | None:
        """Studies filed to an exam now (automatically or re-filed), of the studies received."""
        return _ratio(self.total.studies_filed, self.studies_received)

    @property
    def refile_median_minutes(self) -> float | None:
        return stats.median(self.minutes_to_refile) if self.minutes_to_refile else None


def _exam_rows(conn: sqlite3.Connection, since: str, until: str) -> list[tuple]:
    """(id, modality, source, station, status, images, turnaround hours or None) of the exams
    registered in the period; the hours computed by SQLite, not per row in Python."""
    return conn.execute(
        "SELECT e.id, e.modality, e.source, e.station_ae, e.status, e.instance_count,"
        " (julianday((SELECT MIN(v.signed_at) FROM report_versions v WHERE v.exam_ref = e.id AND v.status = 'final'))"
        " - julianday(e.images_first_at)) * 24"
        " FROM exams e WHERE e.registered_at >= ? AND e.registered_at < ?", (since, until)).fetchall()


def _study_rows(conn: sqlite3.Connection, since: str, until: str) -> list[tuple]:
    """(id, exam, quarantine reason, rejected at, images, received at, modality, source, station)
    of the studies received in the period."""
    return conn.execute(
        "SELECT st.id, st.exam_ref, st.quarantine_reason, st.rejected_at, st.instance_count, st.first_received_at,"
        " e.modality, e.source, e.station_ae FROM studies st LEFT JOIN exams e ON e.id = st.exam_ref"
        " WHERE st.first_received_at >= ? AND st.first_received_at < ?", (since, until)).fetchall()


@dataclass
class _Refilings:
    """What re-filing did, read once (re-filings are few) instead of once per exam and study."""

    exams: set[int]  # exams something was re-filed to (not undone)
    first_at: dict[int, str]  # study → its first re-filing not undone
    from_quarantine: set[int]  # studies re-filed out of the quarantine


def _refilings(conn: sqlite3.Connection) -> _Refilings:
    found = _Refilings(set(), {}, set())
    for study, exam, at, undone, from_reason in conn.execute(
            "SELECT study_ref, to_exam_ref, at, undone_at, from_quarantine_reason FROM refilings"):
        if from_reason is not None:
            found.from_quarantine.add(study)
        if undone is None:
            found.exams.add(exam)
            if study not in found.first_at or at < found.first_at[study]:
                found.first_at[study] = at
    return found


def _add_exam(group: Group, status: str, images: int, refiled: int, hours: float | None, target: float) -> None:
    group.registered += 1
    if status == exams.CANCELLED:
        group.cancelled += 1
        return
    if images > 0:
        group.with_images += 1
        group.images += images
        group.exams_refiled += refiled
    else:
        group.missing_images += 1
    if hours is not None:
        group.reported += 1
        group.turnaround_hours.append(hours)
        if hours <= target:
            group.within_target += 1


def _add_study(group: Group, refiled: bool) -> None:
    if refiled:
        group.studies_refiled += 1
    else:
        group.studies_auto += 1


def report(conn: sqlite3.Connection, settings: Mapping[str, Any], start: date, end: date) -> Report:
    """The statistics of the local days ``start`` to ``end``, both included."""
    since, _ = clock.local_day_bounds(start, settings["TIMEZONE"])
    _, until = clock.local_day_bounds(end, settings["TIMEZONE"])
    total = Group("all")
    groups: dict[str, dict[str, Group]] = {d: {} for d in DIMENSIONS}
    by_key: dict[tuple[str, str, str], list[Group]] = {}  # (modality, source, station) → the groups it counts in

    def groups_of(modality: str, source: str, station: str) -> list[Group]:
        key = (modality, source, station or "—")
        found = by_key.get(key)
        if found is None:
            found = by_key[key] = [total] + [groups[d].setdefault(name, Group(name))
                                             for d, name in zip(DIMENSIONS, key)]
        return found

    refilings = _refilings(conn)
    targets: dict[tuple[str, str], float] = {}
    for exam_id, modality, source, station, status, images, hours in _exam_rows(conn, since, until):
        target = targets.get((modality, source))
        if target is None:
            target = targets[(modality, source)] = config.turnaround_hours(settings, modality, source)
        refiled = int(exam_id in refilings.exams)
        for group in groups_of(modality, source, station):
            _add_exam(group, status, images, refiled, hours, target)
    received = quarantined = on_arrival = images = 0
    minutes = []
    for study_id, exam_ref, reason, rejected, count, arrived, modality, source, station in _study_rows(conn, since,
                                                                                                       until):
        if rejected:
            continue
        received += 1
        images += count
        was_quarantined = study_id in refilings.from_quarantine
        on_arrival += int(reason is not None or was_quarantined)
        if exam_ref is None:
            quarantined += 1
            continue
        refiled_at = refilings.first_at.get(study_id)
        for group in groups_of(modality, source, station):
            _add_study(group, refiled_at is not None)
        if refiled_at and was_quarantined:
            minutes.append((clock.from_db(refiled_at) - clock.from_db(arrived)).total_seconds() / 60)
    return Report(start, end, total, {d: sorted(g.values(), key=lambda x: x.name) for d, g in groups.items()},
                  images_received=images, studies_received=received, studies_quarantined=quarantined,
                  studies_quarantined_on_arrival=on_arrival, minutes_to_refile=minutes)


def default_period(settings: Mapping[str, Any]) -> tuple[date, date]:
    """The last 30 days, today included."""
    today = clock.local_today(settings["TIMEZONE"])
    return today - timedelta(days=29), today


CSV_COLUMNS = ("dimension", "group", "registered", "cancelled", "with_images", "images", "missing_images",
               "studies_filed_automatically", "studies_refiled", "auto_rate", "exams_refiled", "exam_refile_rate",
               "reported", "turnaround_median_h", "turnaround_p90_h", "within_target_rate")


def csv_rows(result: Report) -> Iterable[list[Any]]:
    """One row per group (and one for everything), for the CSV export."""
    def row(dimension: str, g: Group) -> list[Any]:
        values = [dimension, g.name, g.registered, g.cancelled, g.with_images, g.images, g.missing_images,
                  g.studies_auto, g.studies_refiled, g.auto_rate, g.exams_refiled, g.refile_rate, g.reported,
                  g.turnaround_median, g.turnaround_p90, g.within_target_rate]
        return ["" if v is None else round(v, 4) if isinstance(v, float) else v for v in values]
    yield list(CSV_COLUMNS)
    yield row("all", result.total)
    for dimension in DIMENSIONS:
        for group in result.groups[dimension]:
            yield row(dimension, group)
