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


def _exam_rows(conn: sqlite3.Connection, since: str, until: str) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT e.id, e.modality, e.source, e.station_ae, e.status, e.instance_count, e.images_first_at,"
        " EXISTS (SELECT 1 FROM refilings r WHERE r.to_exam_ref = e.id AND r.undone_at IS NULL) AS refiled,"
        " (SELECT MIN(v.signed_at) FROM report_versions v WHERE v.exam_ref = e.id AND v.status = 'final')"
        " AS reported_at FROM exams e WHERE e.registered_at >= ? AND e.registered_at < ?", (since, until)).fetchall()


def _study_rows(conn: sqlite3.Connection, since: str, until: str) -> list[sqlite3.Row]:
    """The studies received in the period, with their exam's groups and how they were filed."""
    return conn.execute(
        "SELECT st.id, st.exam_ref, st.quarantine_reason, st.rejected_at, st.instance_count, st.first_received_at,"
        " e.modality, e.source, e.station_ae,"
        " (SELECT MIN(r.at) FROM refilings r WHERE r.study_ref = st.id AND r.undone_at IS NULL) AS refiled_at,"
        " EXISTS (SELECT 1 FROM refilings r WHERE r.study_ref = st.id AND r.from_quarantine_reason IS NOT NULL)"
        " AS was_quarantined FROM studies st LEFT JOIN exams e ON e.id = st.exam_ref"
        " WHERE st.first_received_at >= ? AND st.first_received_at < ?", (since, until)).fetchall()


def _add_exam(group: Group, exam: sqlite3.Row, settings: Mapping[str, Any]) -> None:
    group.registered += 1
    if exam["status"] == exams.CANCELLED:
        group.cancelled += 1
        return
    if exam["instance_count"] > 0:
        group.with_images += 1
        group.images += exam["instance_count"]
        group.exams_refiled += int(bool(exam["refiled"]))
    else:
        group.missing_images += 1
    if exam["reported_at"] and exam["images_first_at"]:
        hours = (clock.from_db(exam["reported_at"]) - clock.from_db(exam["images_first_at"])).total_seconds() / 3600
        group.reported += 1
        group.turnaround_hours.append(hours)
        if hours <= config.turnaround_hours(settings, exam["modality"], exam["source"]):
            group.within_target += 1


def _add_study(group: Group, study: sqlite3.Row) -> None:
    if study["refiled_at"]:
        group.studies_refiled += 1
    else:
        group.studies_auto += 1


def _key(row: sqlite3.Row, dimension: str) -> str:
    return {"modality": row["modality"], "source": row["source"], "station": row["station_ae"] or "—"}[dimension]


def report(conn: sqlite3.Connection, settings: Mapping[str, Any], start: date, end: date) -> Report:
    """The statistics of the local days ``start`` to ``end``, both included."""
    since, _ = clock.local_day_bounds(start, settings["TIMEZONE"])
    _, until = clock.local_day_bounds(end, settings["TIMEZONE"])
    total = Group("all")
    groups: dict[str, dict[str, Group]] = {d: {} for d in DIMENSIONS}

    def groups_of(row: sqlite3.Row) -> list[Group]:
        return [total] + [groups[d].setdefault(_key(row, d), Group(_key(row, d))) for d in DIMENSIONS]

    for exam in _exam_rows(conn, since, until):
        for group in groups_of(exam):
            _add_exam(group, exam, settings)
    received = quarantined = on_arrival = images = 0
    minutes = []
    for study in _study_rows(conn, since, until):
        if study["rejected_at"]:
            continue
        received += 1
        images += study["instance_count"]
        on_arrival += int(study["quarantine_reason"] is not None or bool(study["was_quarantined"]))
        if study["exam_ref"] is None:
            quarantined += 1
            continue
        for group in groups_of(study):
            _add_study(group, study)
        if study["refiled_at"] and study["was_quarantined"]:
            arrived, filed = clock.from_db(study["first_received_at"]), clock.from_db(study["refiled_at"])
            minutes.append((filed - arrived).total_seconds() / 60)
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
