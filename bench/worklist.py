#!/usr/bin/env python3
"""The modality worklist at the paper's scale: 200,000 exams of two years, almost all reported
(final), and one day's work still to do (scheduled or in progress). Before issue 15 no exam
ever left "images received", so a CT console's query without a date walked every CT exam
(29,677 answers in 68.7 s); now the worklist reads only exams not yet performed, through the
index on (status, scheduled_at).

    .venv/bin/python bench/worklist.py [--exams 200000] [--open 120]

Prints the median milliseconds (of 5) and the answers of each query, run in-process through
``worklist.query`` (the function the C-FIND handler calls).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import machine  # noqa: E402
from bench.retrieve import fill  # noqa: E402


def open_today(conn, exams: int, count: int, settings) -> None:
    """``count`` exams (spread over the ids) scheduled today, a fifth of them in progress; CT,
    MR and DX, on stations CT01 / MR01 or none."""
    from pacslite.core import clock
    today = clock.now().replace(hour=1, minute=0, second=0, microsecond=0)
    conn.execute("BEGIN")
    for n in range(count):
        exam_id = 1 + n * (exams // count)
        modality = ("CT", "MR", "DX")[n % 3]
        conn.execute("UPDATE exams SET status = ?, modality = ?, dicom_modality = ?, scheduled_at = ?,"
                     " station_ae = ? WHERE id = ?",
                     ("in_progress" if n % 5 == 0 else "scheduled", modality, modality,
                      clock.to_db(today + timedelta(minutes=5 * n)), ("CT01", "MR01", "")[n % 3], exam_id))
    conn.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exams", type=int, default=200_000)
    parser.add_argument("--open", type=int, default=120, help="exams still to do today (default 120)")
    args = parser.parse_args()
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from pacslite.core import audit, clock, db
    from pacslite.ris import aes, worklist
    from pacslite import create_app
    work = Path(tempfile.mkdtemp(prefix="pacslite-wl-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            app = create_app({"INSTANCE_DIR": str(work), "DEFAULT_LANGUAGE": "en"})
        conn = db.connect(app.config["DATABASE"])
        print(f"filling {args.exams} exams ({args.open} still to do today) ...", flush=True)
        fill(conn, args.exams)
        open_today(conn, args.exams, args.open, app.config)
        aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "modality": "CT"})
        today = clock.local_today(app.config["TIMEZONE"]).strftime("%Y%m%d")
        results = []
        for label, keys in (("CT, no date (the console's default)", {"Modality": "CT"}),
                            ("station CT01, today", {"ScheduledStationAETitle": "CT01",
                                                     "ScheduledProcedureStepStartDate": today}),
                            ("everything, no key", {}),
                            ("name wildcard ZHANG*, no date", {"PatientName": "ZHANG*"})):
            timings, found = [], 0
            for _ in range(5):
                identifier = Dataset()
                identifier.SpecificCharacterSet = "ISO_IR 192"
                identifier.PatientName = keys.get("PatientName", "")
                identifier.PatientID = ""
                identifier.AccessionNumber = ""
                step = Dataset()
                step.Modality = keys.get("Modality", "")
                step.ScheduledStationAETitle = keys.get("ScheduledStationAETitle", "")
                step.ScheduledProcedureStepStartDate = keys.get("ScheduledProcedureStepStartDate", "")
                identifier.ScheduledProcedureStepSequence = Sequence([step])
                started = time.perf_counter()
                found = sum(1 for _ in worklist.query(conn, app.config, identifier, "ISO_IR 192"))
                timings.append(time.perf_counter() - started)
            results.append((label, found, statistics.median(timings) * 1000))
        conn.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    for line in machine():
        print(line)
    print(f"worklist C-FIND on {args.exams} exams, median of 5 (before issue 15: 29,677 answers in 68.7 s):")
    for label, found, ms in results:
        print(f"  {label:<40} {found:>5} answers  {ms:8.1f} ms")


if __name__ == "__main__":
    main()
