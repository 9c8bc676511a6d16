"""The department's statistics for a period: how many exams got their images, how many image
sets (studies) were filed automatically or re-filed, what is still missing, how fast reports
came and whether within their targets, and the workload of each technologist and radiologist.

Exam figures count the exams registered in the period; study and image figures count what
arrived in it (a study counts for the group of the exam it is filed to now). Rates are
fractions (0..1), or None when there is nothing to divide by.
"""
from __future__ import annotations

import sqlite3
import statistics as stats
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Iterable, Mapping

from .core import clock
from .ris import critical
from .pacs import index

DIMENSIONS = ("modality", "source", "station")
#: Why a study was re-filed when it was not in the quarantine: it had been filed to another exam.
AFTER_FILING = "after_filing"
#: The reasons a study is re-filed, in the order shown: the quarantine's reasons, then a misfile.
REFILE_REASONS = (*(r for r in index.QUARANTINE_REASONS if r != "duplicate_conflict"), AFTER_FILING)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _nth(histogram: Counter[float], n: int) -> float:
    """The ``n``-th smallest value (from 0) of a histogram {value: how many}."""
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if n < seen:
            return value
    raise IndexError(n)


def _median(histogram: Counter[float]) -> float | None:
    count = sum(histogram.values())
    if not count:
        return None
    middle = count // 2
    return _nth(histogram, middle) if count % 2 else (_nth(histogram, middle - 1) + _nth(histogram, middle)) / 2


def _percentile(histogram: Counter[float], fraction: float) -> float | None:
    count = sum(histogram.values())
    return _nth(histogram, min(count - 1, int(round(fraction * (count - 1))))) if count else None


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
    #: re-filed studies by why they were moved: the quarantine reason they left, or "after_filing"
    refiled_by_reason: Counter[str] = field(default_factory=Counter)
    exams_refiled: int = 0
    reported: int = 0
    within_target: int = 0
    classed: int = 0  # final reports classed normal, abnormal or critical
    positive: int = 0  # of them abnormal or critical
    critical: int = 0
    films: int = 0  # films printed in the period (of this group's exams, whenever registered)
    #: report turnaround in hours, to the nearest 0.1 h (the precision shown): {hours: exams}
    turnaround_hours: Counter[float] = field(default_factory=Counter)

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
    def misfiles_found(self) -> int:
        """Studies re-filed away from an exam they had been filed to: misfiles found after filing."""
        return self.refiled_by_reason[AFTER_FILING]

    @property
    def turnaround_median(self) -> float | None:
        return _median(self.turnaround_hours)

    @property
    def turnaround_p90(self) -> float | None:
        return _percentile(self.turnaround_hours, 0.9)

    @property
    def within_target_rate(self) -> float | None:
        return _ratio(self.within_target, self.reported)

    @property
    def positive_rate(self) -> float | None:
        """Abnormal or critical results, of the classed final reports."""
        return _ratio(self.positive, self.classed)


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
    critical: critical.Figures = field(default_factory=critical.Figures)
    #: report target in hours → [reported, within the target]
    compliance: dict[float, list[int]] = field(default_factory=dict)

    @property
    def auto_rate(self) -> float | None:
        """Studies filed automatically on arrival, of the studies received."""
        return _ratio(self.total.studies_auto, self.studies_received)

    @property
    def study_refile_rate(self) -> float | None:
        return _ratio(self.total.studies_refiled, self.studies_received)

    @property
    def final_filing_rate(self) -> float | None:
        """Studies filed to an exam now (automatically or re-filed), of the studies received: the
        paper's final filing rate (its misfiles found after filing are corrected by re-filing)."""
        return _ratio(self.total.studies_filed, self.studies_received)

    @property
    def refile_median_minutes(self) -> float | None:
        return stats.median(self.minutes_to_refile) if self.minutes_to_refile else None


#: An exam's report turnaround in hours to 0.1 h (the precision shown): from the first image to
#: the first final report; NULL when not reported. The same expression is in the index
#: exams_statistics_groups (migration 0040): SQLite uses the index only where they are equal.
_TURNAROUND = ("(CASE WHEN status <> 'cancelled' AND images_first_at IS NOT NULL AND reported_at IS NOT NULL"
               " THEN ROUND((julianday(reported_at) - julianday(images_first_at)) * 24, 1) END)")
#: The period's exams per (modality, source, station), turnaround and the exam's report target
#: (fixed at registration), with how many met it: reported by ``report_due_at`` (the target in
#: the department's reporting hours, kept at the first final signature), or, for exams reported
#: before it was kept, within the target in clock hours. Read from the covering index
#: exams_statistics_groups in its own order, so two years of exams are counted without a sort.
#: Counts are SUM(CASE … THEN 1 ELSE 0 END), not SUM(condition): the same on SQLite, and on
#: PostgreSQL a plain sum instead of a SQL-language aggregate called per row (2.6 → 0.85 s).
_EXAM_GROUPS = (
    f"SELECT modality, source, station_ae, {_TURNAROUND}, target_hours, COUNT(*),"
    " SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN status <> 'cancelled' AND instance_count > 0 THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN status <> 'cancelled' AND instance_count > 0 THEN instance_count ELSE 0 END),"
    " SUM(CASE WHEN status <> 'cancelled' AND instance_count = 0 THEN 1 ELSE 0 END),"
    f" SUM(CASE WHEN {_TURNAROUND} IS NOT NULL THEN CASE WHEN COALESCE(reported_at <= report_due_at,"
    " (julianday(reported_at) - julianday(images_first_at)) * 24 <= target_hours) THEN 1 ELSE 0 END END),"
    " COUNT(result_class), COUNT(CASE WHEN result_class IN ('abnormal', 'critical') THEN 1 END),"
    " COUNT(CASE WHEN result_class = 'critical' THEN 1 END)"
    " FROM exams INDEXED BY exams_statistics_groups WHERE registered_at >= ? AND registered_at < ?"
    f" GROUP BY modality, source, station_ae, {_TURNAROUND}, target_hours")
_FILED_STUDY_GROUPS = (
    "SELECT e.modality, e.source, e.station_ae, COUNT(*) FROM studies st JOIN exams e ON e.id = st.exam_ref"
    " WHERE st.first_received_at >= ? AND st.first_received_at < ? AND st.rejected_at IS NULL"
    " GROUP BY e.modality, e.source, e.station_ae")
#: Films printed in the period, per (modality, source, station) of their exams.
_FILM_GROUPS = (
    "SELECT e.modality, e.source, e.station_ae, SUM(pj.films) FROM print_jobs pj JOIN exams e ON e.id = pj.exam_ref"
    " WHERE pj.state = 'printed' AND pj.printed_at >= ? AND pj.printed_at < ? GROUP BY e.modality, e.source, e.station_ae")
_STUDY_TOTALS = (
    "SELECT COUNT(*), COALESCE(SUM(instance_count), 0), COALESCE(SUM(CASE WHEN exam_ref IS NULL THEN 1 ELSE 0 END), 0) FROM studies"
    " WHERE first_received_at >= ? AND first_received_at < ? AND rejected_at IS NULL")


@dataclass
class _Refilings:
    """What re-filing did, read once (re-filings are few) instead of once per exam and study."""

    exams: set[int]  # exams something was re-filed to (not undone)
    first_at: dict[int, str]  # study → its first re-filing not undone
    reason: dict[int, str]  # study → why it was first re-filed (REFILE_REASONS)
    from_quarantine: set[int]  # studies re-filed out of the quarantine


def _refilings(conn: sqlite3.Connection) -> _Refilings:
    found = _Refilings(set(), {}, {}, set())
    for study, exam, at, undone, from_reason in conn.execute(
            "SELECT study_ref, to_exam_ref, at, undone_at, from_quarantine_reason FROM refilings"):
        if from_reason is not None:
            found.from_quarantine.add(study)
        if undone is None:
            found.exams.add(exam)
            if study not in found.first_at or at < found.first_at[study]:
                found.first_at[study] = at
                found.reason[study] = from_reason or AFTER_FILING
    return found


def _rows_of(conn: sqlite3.Connection, sql: str, ids: set[int], *params: Any) -> Iterable[sqlite3.Row]:
    """``sql`` (with ``{ids}`` for a list of ids) for a few ids, in chunks SQLite accepts."""
    ordered = sorted(ids)
    for at in range(0, len(ordered), 500):
        chunk = ordered[at:at + 500]
        yield from conn.execute(sql.format(ids=", ".join("?" * len(chunk))), (*chunk, *params))


def report(conn: sqlite3.Connection, settings: Mapping[str, Any], start: date, end: date) -> Report:
    """The statistics of the local days ``start`` to ``end``, both included. SQLite counts per
    (modality, source, station); Python adds up the groups, the turnaround hours and the few
    re-filings (two years of a department's exams in about a second)."""
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

    compliance: dict[float, list[int]] = {}
    for (modality, source, station, hours, target_hours, registered, cancelled, with_images, images, missing, within,
         classed, positive, criticals) in conn.execute(_EXAM_GROUPS, (since, until)):
        if hours is not None:
            met = compliance.setdefault(float(target_hours), [0, 0])
            met[0] += registered
            met[1] += within
        for group in groups_of(modality, source, station):
            group.registered += registered
            group.cancelled += cancelled
            group.with_images += with_images
            group.images += images
            group.missing_images += missing
            group.classed += classed
            group.positive += positive
            group.critical += criticals
            if hours is not None:
                group.reported += registered
                group.turnaround_hours[hours] += registered
                group.within_target += within
    for modality, source, station, films in conn.execute(_FILM_GROUPS, (since, until)):
        for group in groups_of(modality, source, station):
            group.films += films
    refilings = _refilings(conn)
    for modality, source, station in _rows_of(
            conn, "SELECT modality, source, station_ae FROM exams WHERE id IN ({ids}) AND registered_at >= ?"
                  " AND registered_at < ? AND status <> 'cancelled' AND instance_count > 0", refilings.exams,
            since, until):
        for group in groups_of(modality, source, station):
            group.exams_refiled += 1
    for modality, source, station, filed in conn.execute(_FILED_STUDY_GROUPS, (since, until)):
        for group in groups_of(modality, source, station):
            group.studies_auto += filed  # the re-filed ones are moved over below
    received, images, quarantined = conn.execute(_STUDY_TOTALS, (since, until)).fetchone()
    on_arrival, minutes = quarantined, []
    for study_id, arrived, modality, source, station in _rows_of(
            conn, "SELECT st.id, st.first_received_at, e.modality, e.source, e.station_ae FROM studies st"
                  " JOIN exams e ON e.id = st.exam_ref WHERE st.id IN ({ids}) AND st.first_received_at >= ?"
                  " AND st.first_received_at < ? AND st.rejected_at IS NULL",
            set(refilings.first_at) | refilings.from_quarantine, since, until):
        refiled_at = refilings.first_at.get(study_id)
        was_quarantined = study_id in refilings.from_quarantine
        on_arrival += was_quarantined
        if refiled_at is not None:
            for group in groups_of(modality, source, station):
                group.studies_auto -= 1
                group.studies_refiled += 1
                group.refiled_by_reason[refilings.reason[study_id]] += 1
            if was_quarantined:
                minutes.append((clock.from_db(refiled_at) - clock.from_db(arrived)).total_seconds() / 60)
    return Report(start, end, total, {d: sorted(g.values(), key=lambda x: x.name) for d, g in groups.items()},
                  images_received=images, studies_received=received, studies_quarantined=quarantined,
                  studies_quarantined_on_arrival=on_arrival, minutes_to_refile=minutes,
                  critical=critical.figures(conn, since, until), compliance=dict(sorted(compliance.items())))


@dataclass
class Person:
    """One person's work in the period. A technologist: exams performed ("Exam done", or the
    modality's MPPS, then named by its AE title) and their images. A radiologist: exams whose
    first final report they signed, amendments signed, reports written as preliminary, the
    median hours from the first image to the final report and how many were within the exam's
    target."""

    name: str
    exams: int = 0
    images: int = 0
    reports: int = 0
    amendments: int = 0
    preliminary: int = 0
    within_target: int = 0
    hours: Counter[float] = field(default_factory=Counter)
    modalities: Counter[str] = field(default_factory=Counter)

    @property
    def turnaround_median(self) -> float | None:
        return _median(self.hours)

    @property
    def within_target_rate(self) -> float | None:
        return _ratio(self.within_target, self.reports)


@dataclass
class Workload:
    technologists: list[Person]
    radiologists: list[Person]
    #: (local day, modality) → [exams performed, their images, final reports signed, films
    #: printed], for the
    #: period's last DAYS days
    days: dict[tuple[str, str], list[int]]


#: The per-day table covers the period's last days only (a 2-year period would be 730 × modalities).
DAYS = 31


def day_modifier(settings: Mapping[str, Any], start: date) -> str:
    """The SQLite date() modifier turning a stored UTC time into the department's local day
    (the zone's offset at the period's start)."""
    tz = clock.zone(settings["TIMEZONE"])
    offset = datetime(start.year, start.month, start.day, 12, tzinfo=tz).utcoffset() or timedelta(0)
    return f"{int(offset.total_seconds() // 60):+d} minutes"


def workload(conn: sqlite3.Connection, settings: Mapping[str, Any], start: date, end: date) -> Workload:
    """Who did what in the local days ``start`` to ``end`` (both included), by modality, and per
    day and modality for the last DAYS days. SQLite groups; each query reads one index range."""
    since, _ = clock.local_day_bounds(start, settings["TIMEZONE"])
    _, until = clock.local_day_bounds(end, settings["TIMEZONE"])
    technologists: dict[str, Person] = {}
    radiologists: dict[str, Person] = {}
    for who, modality, exams_done, images in conn.execute(
            "SELECT performed_by, modality, COUNT(*), SUM(instance_count) FROM exams"
            " WHERE performed_at >= ? AND performed_at < ? GROUP BY 1, 2", (since, until)):
        person = technologists.setdefault(who or "—", Person(who or "—"))
        person.exams += exams_done
        person.images += images
        person.modalities[modality] += exams_done
    for who, modality, hours, within, signed in conn.execute(
            "SELECT reported_by, modality, ROUND(exact, 1),"
            " COALESCE(reported_at <= report_due_at, exact <= target_hours), COUNT(*) FROM"
            " (SELECT reported_by, modality, target_hours, reported_at, report_due_at,"
            " (julianday(reported_at) - julianday(images_first_at)) * 24 AS exact"
            " FROM exams WHERE reported_at >= ? AND reported_at < ?) AS reported GROUP BY 1, 2, 3, 4", (since, until)):
        person = radiologists.setdefault(who or "—", Person(who or "—"))
        person.reports += signed
        person.modalities[modality] += signed
        if hours is not None:
            person.hours[hours] += signed
            person.within_target += signed if within else 0
    for who, amended in conn.execute(
            "SELECT signed_by, COUNT(*) FROM report_versions WHERE signed_at >= ? AND signed_at < ? AND version > 1"
            " GROUP BY 1", (since, until)):
        radiologists.setdefault(who, Person(who)).amendments += amended
    for who, written in conn.execute(
            "SELECT preliminary_by, COUNT(*) FROM report_versions WHERE preliminary_at >= ? AND preliminary_at < ?"
            " GROUP BY preliminary_by", (since, until)):
        radiologists.setdefault(who, Person(who)).preliminary += written
    by_name = lambda people: sorted(people.values(), key=lambda p: p.name)  # noqa: E731
    return Workload(by_name(technologists), by_name(radiologists), _days(conn, settings, max(start, end - timedelta(
        days=DAYS - 1)), end))


def _days(conn: sqlite3.Connection, settings: Mapping[str, Any], start: date,
          end: date) -> dict[tuple[str, str], list[int]]:
    since, _ = clock.local_day_bounds(start, settings["TIMEZONE"])
    _, until = clock.local_day_bounds(end, settings["TIMEZONE"])
    local = day_modifier(settings, start)
    days: dict[tuple[str, str], list[int]] = {}
    for day, modality, exams_done, images in conn.execute(
            "SELECT date(performed_at, ?), modality, COUNT(*), SUM(instance_count) FROM exams"
            " WHERE performed_at >= ? AND performed_at < ? GROUP BY 1, 2", (local, since, until)):
        days[(day, modality)] = [exams_done, images, 0, 0]
    for day, modality, signed in conn.execute(
            "SELECT date(reported_at, ?), modality, COUNT(*) FROM exams WHERE reported_at >= ? AND reported_at < ?"
            " GROUP BY 1, 2", (local, since, until)):
        days.setdefault((day, modality), [0, 0, 0, 0])[2] = signed
    for day, modality, films in conn.execute(
            "SELECT date(pj.printed_at, ?), e.modality, SUM(pj.films) FROM print_jobs pj JOIN exams e ON e.id = pj.exam_ref"
            " WHERE pj.state = 'printed' AND pj.printed_at >= ? AND pj.printed_at < ? GROUP BY 1, 2", (local, since, until)):
        days.setdefault((day, modality), [0, 0, 0, 0])[3] = films
    return dict(sorted(days.items()))


def default_period(settings: Mapping[str, Any]) -> tuple[date, date]:
    """The last 30 days, today included."""
    today = clock.local_today(settings["TIMEZONE"])
    return today - timedelta(days=29), today


CSV_COLUMNS = ("dimension", "group", "registered", "cancelled", "with_images", "images", "missing_images",
               "studies_filed_automatically", "studies_refiled", "auto_rate", "exams_refiled", "exam_refile_rate",
               "reported", "turnaround_median_h", "turnaround_p90_h", "within_target_rate", "classed", "positive_rate",
               "critical", "films_printed", *(f"refiled_{reason}" for reason in REFILE_REASONS), "misfiles_found_after_filing",
               "studies_received", "quarantined_on_arrival", "still_in_quarantine", "final_filing_rate")


def csv_rows(result: Report) -> Iterable[list[Any]]:
    """One row per group (and one for everything), for the CSV export. The paper's figures of
    what arrived (received, quarantined on arrival, still there, the final filing rate) are the
    period's: on the "all" row only (a study in the quarantine has no group)."""
    def row(dimension: str, g: Group, *period: Any) -> list[Any]:
        values = [dimension, g.name, g.registered, g.cancelled, g.with_images, g.images, g.missing_images,
                  g.studies_auto, g.studies_refiled, g.auto_rate, g.exams_refiled, g.refile_rate, g.reported,
                  g.turnaround_median, g.turnaround_p90, g.within_target_rate, g.classed, g.positive_rate, g.critical,
                  g.films, *(g.refiled_by_reason[reason] for reason in REFILE_REASONS), g.misfiles_found,
                  *(period or [None] * 4)]
        return ["" if v is None else round(v, 4) if isinstance(v, float) else v for v in values]
    yield list(CSV_COLUMNS)
    yield row("all", result.total, result.studies_received, result.studies_quarantined_on_arrival,
              result.studies_quarantined, result.final_filing_rate)
    for dimension in DIMENSIONS:
        for group in result.groups[dimension]:
            yield row(dimension, group)
