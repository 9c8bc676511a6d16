#!/usr/bin/env python3
"""The desk's day view of a station's slots (issue 31: 200 slots in under 100 ms), and its
pick-up list, on a department's two years: N exams (default 200,000), each booked once on one
CT station.

Fills a fresh SQLite database as bench/sweep.py does, gives CT01 a timetable of 200 slots a
day (00:00–16:40, 5 minutes, 2 patients) and books every exam into it over two years (direct
SQL), then times the day view (ris.booking.day_view, in-process) and the whole page as the desk
opens it (GET /exams/<accession>/booking?day=…, logged in, rendered), median of --runs. Then
every reported exam is made final, all but the last two days' handed out, and a film job
printed for one exam in three of the last 30 days: the desk's pick-up list (pacs.pickup.waiting
and GET /pickup) is timed the same way.

    .venv/bin/python bench/booking.py [--exams 200000] [--runs 20]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pacslite import create_app  # noqa: E402
from pacslite.core import audit, clock, db  # noqa: E402
from pacslite.pacs import pickup  # noqa: E402
from pacslite.ris import aes, booking  # noqa: E402
from bench.sweep import fill  # noqa: E402
from tests.conftest import PASSWORD, make_user  # noqa: E402

SLOTS = 200


def book_everyone(conn, settings, count: int) -> datetime:
    """Each exam a booking on CT01, day after day over two years (~275 a day); the busiest day."""
    tz = clock.zone(settings["TIMEZONE"])
    today = clock.local_today(settings["TIMEZONE"])
    first_day = today - timedelta(days=730)
    rows = []
    for n in range(count):
        day = first_day + timedelta(days=n * 730 // count)
        slot = (n * 7) % SLOTS
        starts = datetime.combine(day, datetime.min.time(), tz) + timedelta(minutes=5 * slot)
        rows.append((n + 1, "CT01", clock.to_db(starts), "booked", clock.to_db(starts), "bench"))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO bookings (exam_ref, station_ae, slot_at, status, booked_at, booked_by)"
                     " VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    return datetime.combine(first_day + timedelta(days=365), datetime.min.time(), tz)


def collected_and_printed(conn) -> str:
    """Reported exams final; those reported before the last two days handed out; a printed film
    job for one exam in three of the last 30 days (direct SQL)."""
    now = clock.now()
    two_days, month = clock.to_db(now - timedelta(days=2)), clock.to_db(now - timedelta(days=30))
    conn.execute("BEGIN")
    conn.execute("UPDATE exams SET status = 'final', reported_at = (SELECT v.signed_at FROM report_versions v"
                 " WHERE v.exam_ref = exams.id) WHERE id IN (SELECT exam_ref FROM report_versions)")
    conn.execute("INSERT INTO handouts (exam_ref, item, report_version, place, handed_at, handed_by)"
                 " SELECT id, 'report', 1, 'desk', reported_at, 'bench' FROM exams WHERE reported_at < ?", (two_days,))
    conn.execute("INSERT INTO print_jobs (exam_ref, printer_ae, layout, film_size, orientation, images, films, state,"
                 " next_attempt_at, created_at, created_by, printed_at) SELECT id, 'DRYLASER', '4x5', '14INX17IN',"
                 " 'PORTRAIT', '[]', 2, 'printed', reported_at, reported_at, 'bench', reported_at FROM exams"
                 " WHERE reported_at >= ? AND id % 3 = 0", (month,))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    counts = [conn.execute(sql).fetchone()[0] for sql in (
        "SELECT COUNT(*) FROM exams WHERE status = 'final'", "SELECT COUNT(*) FROM handouts",
        "SELECT COUNT(*) FROM print_jobs")]
    return f"{counts[0]} final reports, {counts[1]} handed out, {counts[2]} film jobs"


def timed(action, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exams", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pacslite-booking-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its first start prints an admin password
            app = create_app({"INSTANCE_DIR": str(work), "DEFAULT_LANGUAGE": "en", "WTF_CSRF_ENABLED": False})
        conn = db.connect(app.config["DATABASE"])
        started = time.perf_counter()
        fill(conn, args.exams, random.Random(1))
        aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "modality": "CT"})
        booking.set_week(conn, audit.SYSTEM, "CT01", [booking.Period(d, "00:00", "16:40", 5, 2) for d in range(7)])
        busy = book_everyone(conn, app.config, args.exams)
        conn.execute("ANALYZE")
        print(f"filled {args.exams} exams and bookings in {time.perf_counter() - started:.1f} s")
        day = busy.date()
        slots = booking.day_view(conn, app.config, "CT01", day)
        print(f"day view of {day}: {len(slots)} slots, {sum(s.booked for s in slots)} booked")
        in_process = timed(lambda: booking.day_view(conn, app.config, "CT01", day), args.runs)
        make_user(conn, "desk", "registrar")
        client = app.test_client()
        client.post("/login", data={"username": "desk", "password": PASSWORD})
        accession = conn.execute("SELECT accession_number FROM exams WHERE dicom_modality = 'CT' LIMIT 1").fetchone()[0]
        url = f"/exams/{accession}/booking?station=CT01&day={day.isoformat()}"
        assert client.get(url).status_code == 200, "the page did not open"
        page = timed(lambda: client.get(url), args.runs)
        partial = timed(lambda: client.get(url, headers={"HX-Request": "true"}), args.runs)
        print(f"day view, in-process: {in_process:.1f} ms; the page: {page:.1f} ms; its htmx partial: {partial:.1f} ms"
              f" (median of {args.runs}; target: under 100 ms)")
        made = collected_and_printed(conn)
        listed = pickup.waiting(conn, app.config)
        in_process = timed(lambda: pickup.waiting(conn, app.config), args.runs)
        page = timed(lambda: client.get("/pickup"), args.runs)
        print(f"pick-up list ({made}; {len(listed)} exams on its first page): in-process {in_process:.1f} ms;"
              f" the page: {page:.1f} ms (median of {args.runs})")
        conn.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
