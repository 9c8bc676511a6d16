#!/usr/bin/env python3
"""The desk's day view of a station's slots (issue 31: 200 slots in under 100 ms), on a
department's two years: N exams (default 200,000), each booked once on one CT station.

Fills a fresh SQLite database as bench/sweep.py does, gives CT01 a timetable of 200 slots a
day (00:00–16:40, 5 minutes, 2 patients) and books every exam into it over two years (direct
SQL), then times the day view (ris.booking.day_view, in-process) and the whole page as the desk
opens it (GET /exams/<accession>/booking?day=…, logged in, rendered), median of --runs.

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
        conn.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
