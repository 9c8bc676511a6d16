#!/usr/bin/env python3
"""How long one sweep takes on a department's two years: N exams (default 200,000).

Fills a fresh pacslite database with N exams over two years (direct SQL: the registration
path would take an hour), as a department's would look: nearly all imaged and reported, some
never imaged, a few reports late, some studies in quarantine. Then times the first sweep
(which opens the alerts) and the next ones (which change nothing).

    .venv/bin/python bench/sweep.py [--exams 200000]
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pacslite.core import clock, db
from pacslite import create_app, sweep  # noqa: E402

MODALITIES = [("CR", "CR"), ("DR", "DX"), ("CT", "CT"), ("MR", "MR"), ("DSA", "XA")]
SOURCES = ["outpatient", "inpatient", "emergency", "physical_exam"]


def fill(conn, count: int, rng: random.Random) -> None:
    now = clock.now()
    start = now - timedelta(days=730)
    step = timedelta(days=730) / count
    patients, exams, studies, reports = [], [], [], []
    for n in range(count):
        at = start + step * n
        text = clock.to_db(at)
        patients.append((n + 1, f"P{n:08d}", "张三", "zhang san", "zs", "M", "1980-01-01", text, text))
        code, dicom = MODALITIES[n % len(MODALITIES)]
        roll = rng.random()
        imaged = roll > 0.001  # one in a thousand never imaged (the paper's rate)
        status = "images_received" if imaged else "registered"
        first = clock.to_db(at + timedelta(minutes=20)) if imaged else None
        exams.append((n + 1, f"B{n:011d}", n + 1, code, dicom, SOURCES[n % 4], "exam", "routine", text,
                      f"2.25.{n}", status, int(imaged), 10 * int(imaged), text, "bench", text, first, first))
        if imaged and (rng.random() > 0.0005 or at < now - timedelta(days=1)):
            reports.append((n + 1, clock.to_db(at + timedelta(hours=2))))
        if rng.random() < 0.001:
            studies.append((f"2.25.9{n}", "unknown_accession", f"X{n}", f"P{n:08d}", text))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO patients (id, patient_id, name, name_pinyin, name_initials, sex, birth_date,"
                     " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", patients)
    conn.executemany("INSERT INTO exams (id, accession_number, patient_ref, modality, dicom_modality, source,"
                     " procedure, priority, scheduled_at, study_instance_uid, status, series_count, instance_count,"
                     " registered_at, registered_by, updated_at, images_first_at, images_last_at)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", exams)
    conn.executemany("INSERT INTO report_versions (exam_ref, version, status, findings, impression, created_at,"
                     " created_by, updated_at, updated_by, signed_at, signed_by)"
                     " VALUES (?, 1, 'final', 'f', 'i', ?2, 'dr', ?2, 'dr', ?2, 'dr')", reports)
    conn.executemany("INSERT INTO studies (study_instance_uid, quarantine_reason, accession_number, patient_id,"
                     " first_received_at, last_received_at, series_count, instance_count)"
                     " VALUES (?, ?, ?, ?, ?5, ?5, 1, 10)", studies)
    conn.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exams", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pacslite-sweep-"))
    try:
        app = create_app({"INSTANCE_DIR": str(work), "DEFAULT_LANGUAGE": "en"})
        conn = db.connect(app.config["DATABASE"])
        started = time.perf_counter()
        fill(conn, args.exams, random.Random(1))
        print(f"filled {args.exams} exams in {time.perf_counter() - started:.1f} s")
        for run in range(1, args.runs + 1):
            outcome = sweep.run(conn, app.config)
            print(f"sweep {run}: {outcome.seconds:.3f} s ({outcome.opened} opened, {outcome.cleared} cleared,"
                  f" {outcome.open_total} open)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
