#!/usr/bin/env python3
"""Paper scale: a department's two years in one instance folder, and how fast pacslite is on it.

Builds (direct SQL, rows shaped as the application writes them) 120,000 patients, 200,000
exams over two years, one filed study each with 3 series and 4.9 M instances in all, 200
quarantined studies, reports, alerts, re-filings, one delivery (arrival) per study, and an audit
log of 2.4 M chained rows (keyed HMAC, so ``audit verify`` has real work): one per delivery and
2.2 M views, registrations and reports; ``--scale 0.1`` builds a tenth. The tables are filled at
schema 18 and then migrated, timed, to the current schema (every table's row count checked).
Files exist for a sample of 200 instances only (the scrub rate is measured on them). Then
prints one table:

- start-up until HTTP and DICOM answer (``python app.py`` on that folder);
- each page's and API answer's median and p95 over 20 requests, logged in as an admin (the API
  with a bearer token);
- worklist and Q/R C-FIND, the sweep, 2-year statistics, a backup, ``audit verify``, the scrub.

    .venv/bin/python bench/scale.py [--scale 1.0] [--keep DIR] [--reuse DIR]

``--keep DIR`` builds into DIR and leaves it; ``--reuse DIR`` measures a folder built before.
``--postgresql`` measures pacslite on PostgreSQL instead: the SQLite database built (or
reused) is moved into a new database of a private cluster with ``flask db copy``'s code (timed),
then everything is measured on that.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import machine  # noqa: E402
from bench.retrieve import GIVEN, SURNAMES  # noqa: E402

PATIENTS, EXAMS, INSTANCES, QUARANTINED = 120_000, 200_000, 4_900_000, 200
#: Audit rows besides the images' (views, registrations, reports...): the issue's 7.1 M less its
#: 4.9 M one-per-image rows. Images now add one row per delivery (association) and study.
OTHER_AUDIT_ROWS = 2_200_000
#: The schema the tables are filled at; the migrations after it are timed on the full database.
BUILD_AT_SCHEMA = 18
SERIES_PER_STUDY = 3
SAMPLE_FILES = 200
PASSWORD = "Bench-pass-1"
MODALITIES = [("CT", "CT"), ("DR", "DX"), ("MR", "MR"), ("CR", "CR"), ("DSA", "XA")]
SOURCES = ["outpatient", "inpatient", "emergency", "physical_exam"]
#: Targets from issue 17 (ms): pages, lists, the 2-year statistics.
PAGE_P95, LIST_P95, STATS_MS, CFIND_MS, STARTUP_S = 200, 100, 1000, 50, 10


# ---------------------------------------------------------------- building

#: The database measured: empty, the instance's SQLite file; else a PostgreSQL URL (--postgresql).
DATABASE_URL = ""


def _quiet_app(instance: Path) -> Any:
    from pacslite import create_app
    with contextlib.redirect_stdout(io.StringIO()):
        return create_app({"INSTANCE_DIR": str(instance), "DEFAULT_LANGUAGE": "en", "DATABASE_URL": DATABASE_URL})


def _database(instance: Path) -> Any:
    return DATABASE_URL or instance / "pacslite.db"


def to_postgresql(instance: Path) -> tuple[float, int]:
    """The instance's SQLite database copied into a new PostgreSQL database (a private cluster
    with PostgreSQL's defaults); seconds and rows."""
    global DATABASE_URL
    from pacslite.core import dbcopy
    from tests import databases
    databases.server(durable=True)
    url = databases.empty_database(instance / "postgresql")
    shutil.rmtree(instance / "storage" / "database", ignore_errors=True)  # a previous run's database's key and anchors
    started = time.perf_counter()
    report = dbcopy.copy_to_postgresql(instance / "pacslite.db", instance, url, instance / "storage" / "database")
    seconds = time.perf_counter() - started
    if report.audit_problem is not None:
        raise SystemExit(f"the audit chain does not verify in the copy: {report.audit_problem.describe()}")
    DATABASE_URL = url
    return seconds, report.total


def build(instance: Path, scale: float) -> dict[str, float]:
    from pacslite.core import audit, clock, db, names
    from pacslite.ris import users
    instance.mkdir(parents=True, exist_ok=True)
    conn = db.connect(instance / "pacslite.db")
    db.migrate(conn, BUILD_AT_SCHEMA)  # filled as an installation of that version, then upgraded
    rng = random.Random(17)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    n_patients, n_exams = int(PATIENTS * scale), int(EXAMS * scale)
    readings = {s + g: names.pinyin_of(s + g) for s in SURNAMES for g in GIVEN}
    pool = list(readings)
    now = clock.now()
    first_day = now - timedelta(days=730)
    patients, exams, studies, reports = [], [], [], []
    for n in range(1, n_patients + 1):
        name = rng.choice(pool)
        pinyin, initials = readings[name]
        at = clock.to_db(first_day + timedelta(days=730) * (n / n_patients))
        patients.append((n, f"P{n:08d}", name, pinyin, initials, "MF"[n % 2], f"19{40 + n % 60}-0{1 + n % 9}-1{n % 9}",
                         at, at))
    step = timedelta(days=730) / n_exams
    for n in range(1, n_exams + 1):
        scheduled = first_day + step * n
        code, dicom = MODALITIES[n % len(MODALITIES)]
        age = now - scheduled
        status = "final" if age > timedelta(days=1) else "performed" if age > timedelta(hours=2) else "scheduled"
        imaged = status != "scheduled" and n % 1000 != 0
        at = clock.to_db(scheduled)
        first = clock.to_db(scheduled + timedelta(minutes=20)) if imaged else None
        exams.append((n, f"B{n:011d}", 1 + (n * 7919) % n_patients, code, dicom, SOURCES[n % 4], f"{code} exam",
                      "routine", at, f"2.25.1{n}", status if imaged or status == "scheduled" else "scheduled",
                      SERIES_PER_STUDY if imaged else 0, at, "bench", at, first, first,
                      ("CT01", "MR01", "")[n % 3]))
        if imaged:
            studies.append((n, f"2.25.1{n}", n, f"B{n:011d}", scheduled.strftime("%Y%m%d"), first))
            if status == "final":
                signed = clock.to_db(scheduled + timedelta(hours=2))
                reports.append((n, signed, f"bench_rad{n % 5}"))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO patients (id, patient_id, name, name_pinyin, name_initials, sex, birth_date,"
                     " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", patients)
    conn.executemany("INSERT INTO exams (id, accession_number, patient_ref, modality, dicom_modality, source,"
                     " procedure, priority, scheduled_at, study_instance_uid, status, series_count, registered_at,"
                     " registered_by, updated_at, images_first_at, images_last_at, station_ae)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", exams)
    conn.executemany("INSERT INTO studies (id, study_instance_uid, exam_ref, accession_number, study_date,"
                     " first_received_at, last_received_at, series_count, calling_ae)"
                     " VALUES (?, ?, ?, ?, ?, ?6, ?6, 3, 'CT01')", studies)
    conn.executemany("INSERT INTO report_versions (exam_ref, version, status, findings, impression, created_at,"
                     " created_by, updated_at, updated_by, signed_at, signed_by)"
                     " VALUES (?, 1, 'final', 'No abnormality.', 'Normal.', ?2, ?3, ?2, ?3, ?2, ?3)", reports)
    quarantined = [(n_exams + q, f"2.25.9{q}", "unknown_accession", f"X{q:07d}", f"P{1 + q * 37:08d}", "ZHANG^SAN",
                    clock.to_db(now - timedelta(hours=q)), "CT01") for q in range(1, int(QUARANTINED * max(scale, 0.1)) + 1)]
    conn.executemany("INSERT INTO studies (id, study_instance_uid, quarantine_reason, accession_number, patient_id,"
                     " patient_name, first_received_at, last_received_at, series_count, calling_ae)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?7, ?7, 3, ?)", quarantined)
    conn.execute("INSERT INTO series (id, study_ref, series_instance_uid, modality, series_number, instance_count,"
                 " first_received_at, last_received_at) SELECT s.id * 3 + k.n, s.id, s.study_instance_uid || '.' || k.n,"
                 " 'CT', k.n, 0, s.first_received_at, s.last_received_at FROM studies s"
                 " CROSS JOIN (SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2) k")
    per_series = max(int(INSTANCES * scale) // (len(studies) * SERIES_PER_STUDY), 1)
    conn.execute("WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?)"
                 " INSERT INTO instances (series_ref, sop_instance_uid, sop_class_uid, transfer_syntax_uid,"
                 " instance_number, storage_path, size, sha256, calling_ae, received_at)"
                 " SELECT se.id, se.series_instance_uid || '.' || k.n, '1.2.840.10008.5.1.4.1.1.2',"
                 " '1.2.840.10008.1.2.1', k.n, 'dicom/' || substr(se.first_received_at, 1, 4) || '/'"
                 " || substr(se.first_received_at, 6, 2) || '/' || substr(se.first_received_at, 9, 2) || '/'"
                 " || se.id || '-' || k.n || '.dcm', 524288,"
                 " printf('%064d', se.id * 1000 + k.n), 'CT01', se.first_received_at FROM series se CROSS JOIN k",
                 (per_series,))
    conn.execute("UPDATE series SET instance_count = ?", (per_series,))
    conn.execute("UPDATE studies SET instance_count = ?", (per_series * SERIES_PER_STUDY,))
    conn.execute("UPDATE exams SET instance_count = ? WHERE series_count > 0", (per_series * SERIES_PER_STUDY,))
    # six technologists performed the imaged exams ("Exam done" or their modality's MPPS)
    conn.execute("UPDATE exams SET performed_at = images_last_at, performed_by = 'bench_tech' || (id % 6)"
                 " WHERE series_count > 0")
    conn.execute("INSERT INTO alerts (rule, subject, exam_ref, state, detail, opened_at, closed_at, closed_by)"
                 " SELECT 'missing_images', 'exam:' || id, id, 'cleared', '{}', scheduled_at, updated_at, 'sweep'"
                 " FROM exams WHERE id % 20 = 0")
    conn.execute("COMMIT")
    timings["rows"] = time.perf_counter() - started
    started = time.perf_counter()
    _audit_rows(conn, int(OTHER_AUDIT_ROWS * scale), n_exams, len(studies) + len(quarantined))
    timings["audit"] = time.perf_counter() - started
    timings["migration"], timings["migrated"] = _timed_migration(conn)
    app = _quiet_app(instance)
    _arrivals(conn)
    _critical_findings(conn, clock.to_db(now - timedelta(days=1)))
    users.create(conn, audit.SYSTEM, {"username": "bench_admin", "password": PASSWORD, "roles": ["admin"]})
    _sample_files(app.config, conn)
    conn.execute("INSERT OR REPLACE INTO scrub_state (id, last_instance, rounds, updated_at, quick_done_at,"
                 " full_done_at) VALUES (1, 0, 1, ?1, ?1, ?1)", (clock.to_db(now),))
    conn.execute("ANALYZE")
    conn.close()
    os.sync()  # the build's 3 GB written back now, not while pages are measured
    return timings


def _timed_migration(conn: Any) -> tuple[float, str]:
    """Upgrade the filled database to the current schema: (seconds, what was applied), after
    checking that no table lost a row."""
    from pacslite.core import db
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                         " AND name NOT LIKE 'sqlite_%'")]
    before = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    started = time.perf_counter()
    applied = db.migrate(conn)
    seconds = time.perf_counter() - started
    after = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    if after != before:
        raise SystemExit(f"the migration changed row counts: {before} -> {after}")
    return seconds, f"{applied[0]:04d}-{applied[-1]:04d}" if applied else "none"


def _critical_findings(conn: Any, acknowledged_before: str) -> None:
    """One reported exam in a hundred had a critical finding (危急值), acknowledged nine
    minutes later, except those of the last day, which still wait."""
    later = "strftime('%Y-%m-%dT%H:%M:%S+00:00', reported_at, '+{} minutes')"
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO critical_findings (exam_ref, version, finding, department, reported_by, reported_at, due_at,"
        " acknowledged_by, acknowledged_at, acknowledgement)"
        f" SELECT id, 1, 'Acute haemorrhage.', requesting_department, 'bench_rad', reported_at, {later.format(15)},"
        f" CASE WHEN reported_at < ?1 THEN 'bench_ward' END, CASE WHEN reported_at < ?1 THEN {later.format(9)} END,"
        " CASE WHEN reported_at < ?1 THEN 'seen' END FROM exams WHERE id % 100 = 7 AND reported_at IS NOT NULL",
        (acknowledged_before,))
    conn.execute("COMMIT")


def _arrivals(conn: Any) -> None:
    """One delivery per study, as a modality sends it (the rows an installation of today has)."""
    conn.execute("BEGIN")
    conn.execute("INSERT INTO arrivals (id, batch, source, address, study_ref, patient_id, exam_ref, quarantine_reason,"
                 " filed, quarantined, first_at, last_at, closed_at) SELECT id, 'bench-' || id, 'CT01', '10.0.0.5', id,"
                 " COALESCE(patient_id, ''), exam_ref, COALESCE(quarantine_reason, ''),"
                 " CASE WHEN exam_ref IS NULL THEN 0 ELSE instance_count END,"
                 " CASE WHEN exam_ref IS NULL THEN instance_count ELSE 0 END,"
                 " first_received_at, last_received_at, last_received_at FROM studies")
    conn.execute("UPDATE instances SET arrival_ref = series_ref / 3")  # series ids are study id × 3 + 0..2
    conn.execute("COMMIT")


def _audit_rows(conn: Any, others: int, exams: int, deliveries: int) -> None:
    """The chain as the application writes it: one ``image.file`` row per delivery and study,
    and ``others`` rows of views, registrations and reports between them, with a few re-filings
    (one in 20,000) and refused logins (one in 50,000) for the filters that look for rare rows."""
    from pacslite.core import audit, clock
    key = audit.chain_key(conn)
    start = clock.now() - timedelta(days=730)
    last = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    prev, first = (last["hash"], last["id"] + 1) if last else (audit.GENESIS, 1)
    batch: list[tuple] = []
    count = others + deliveries
    actions = ["image.view", "exam.register", "report.sign"]
    for n in range(first, first + count):
        delivery = (n * deliveries) // count != ((n - 1) * deliveries) // count
        action = "image.file" if delivery else actions[n % len(actions)]
        outcome = "success"
        if not delivery and n % 50_000 == 7:
            action, outcome = "login", "denied"
        elif not delivery and n % 20_000 == 11:
            action = "image.refile"
        exam = 1 + (n * 31) % max(exams, 1)
        detail = '{"images": 24, "series": {}}' if delivery else "{}"
        row = (clock.to_db(start + timedelta(days=730) * (n / count)), "ae:CT01" if delivery else "dr",
               "10.0.0.5", action, f"exam:B{exam:011d}", f"P{exam % 120_000 + 1:08d}", outcome, detail)
        digest = audit._digest(key, n, prev, row)  # the chain as audit.record makes it
        batch.append((n, *row, prev, digest))
        prev = digest
        if len(batch) == 100_000 or n == first + count - 1:
            conn.execute("BEGIN")  # one transaction a batch: the connection commits every statement otherwise
            conn.executemany("INSERT INTO audit_log (id, at, actor, address, action, target, patient_id, outcome,"
                             " detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
            conn.execute("COMMIT")
            batch.clear()


def _sample_files(settings: Any, conn: Any) -> None:
    """Real files (512 KiB) behind the first SAMPLE_FILES instances, with their true SHA-256."""
    from pacslite.core import storage
    rng = random.Random(3)
    rows = conn.execute("SELECT id, storage_path FROM instances ORDER BY id LIMIT ?", (SAMPLE_FILES,)).fetchall()
    for row in rows:
        data = rng.randbytes(524288)
        path = storage.resolve(settings["STORAGE_DIR"], row["storage_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        conn.execute("UPDATE instances SET sha256 = ? WHERE id = ?", (storage.sha256_hex(data), row["id"]))


# ---------------------------------------------------------------- measuring

def timed(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """(median, p95) in milliseconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(int(len(times) * 0.95), len(times) - 1)]


def log_in(url: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{url}/login", timeout=60).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = session.post(f"{url}/login", data={"username": "bench_admin", "password": PASSWORD, "csrf_token": token},
                          allow_redirects=False, timeout=60)
    if answer.status_code != 302:
        raise SystemExit(f"login failed: {answer.status_code}")
    return session


def api(url: str, runs: int, token: str, accession: str) -> list[tuple[str, float, float, int]]:
    """The HIS's API answers, with a bearer token."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    results = []
    for label, path in (("API exam", f"/api/v1/exams/{accession}"), ("API report", f"/api/v1/exams/{accession}/report"),
                        ("API quarantine (first 5 studies, candidates)", "/api/v1/quarantine"),
                        ("API alerts", "/api/v1/alerts"), ("API critical findings", "/api/v1/critical-findings")):
        status = session.get(url + path, timeout=600).status_code
        if status != 200:
            raise SystemExit(f"{path} answered {status}")
        median, p95 = timed(lambda: session.get(url + path, timeout=600), runs)
        results.append((label, median, p95, PAGE_P95))
    return results


def api_token(instance: Path) -> str:
    from pacslite.core import audit, db
    from pacslite.ris import users
    conn = db.connect(_database(instance))
    db.keep_files_in(_database(instance), instance / "storage" / "database")
    try:
        return users.create_token(conn, audit.SYSTEM, "bench_admin")
    finally:
        conn.close()


def pages(url: str, runs: int, accession: str, quarantined: int) -> list[tuple[str, float, float, int]]:
    from pacslite.core import clock
    session = log_in(url)
    today = clock.now().date()
    two_years = f"start={today - timedelta(days=730)}&end={today}"
    month = f"start={today - timedelta(days=30)}&end={today}"
    wanted = [("exam list", "/exams", LIST_P95), ("exam list, CT today", "/exams?modality=CT", LIST_P95),
              ("patient search 王小", "/patients?q=王小", LIST_P95), ("patient search P0001", "/patients?q=P0001", LIST_P95),
              ("reading list", "/reading", LIST_P95), ("quarantine", "/quarantine/", LIST_P95),
              ("quarantine: one study's candidates (htmx)", f"/quarantine/studies/{quarantined}/candidates", LIST_P95),
              ("alerts (open)", "/alerts", LIST_P95), ("alerts (cleared)", "/alerts?state=cleared", LIST_P95),
              ("audit log", "/admin/audit", LIST_P95), ("audit log, action", "/admin/audit?action=report.sign", LIST_P95),
              ("audit log, patient", "/admin/audit?patient_id=P00000042", LIST_P95),
              ("audit log, a rare action", "/admin/audit?action=image.refile", LIST_P95),
              ("audit log, outcome denied", "/admin/audit?outcome=denied", LIST_P95),
              ("audit log, user", "/admin/audit?actor=bench_admin", LIST_P95),
              ("audit log, a day a year ago", f"/admin/audit?day={today - timedelta(days=365)}", LIST_P95),
              ("missing images", "/missing-images", LIST_P95), ("exam page", f"/exams/{accession}", PAGE_P95),
              ("statistics, 30 days", f"/statistics?{month}", PAGE_P95),
              ("statistics, 2 years", f"/statistics?{two_years}", STATS_MS),
              ("statistics CSV, 2 years", f"/statistics.csv?{two_years}", STATS_MS),
              ("statistics workload, 30 days (htmx)", f"/statistics/workload?{month}", PAGE_P95),
              ("statistics workload, 2 years (htmx)", f"/statistics/workload?{two_years}", STATS_MS),
              ("registration form", "/exams/new", PAGE_P95),
              ("procedure catalogue", "/admin/procedures", LIST_P95),
              ("archive page", "/archive/", PAGE_P95),
              ("critical findings", "/critical", LIST_P95),
              ("report page (reading room, priors)", f"/exams/{accession}/report", PAGE_P95)]
    results = []
    for label, path, target in wanted:
        headers = {"HX-Request": "true"} if "htmx" in label else {}
        status = session.get(url + path, headers=headers, timeout=600).status_code
        if status != 200:
            raise SystemExit(f"{path} answered {status}")
        median, p95 = timed(lambda: session.get(url + path, headers=headers, timeout=600), runs)
        results.append((label, median, p95, target))
    return results


def in_process(instance: Path) -> list[tuple[str, float, float, int]]:
    """C-FIND, the sweep, a backup, audit verify and the scrub, in this process."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from pacslite.core import audit, clock, db
    from pacslite.ris import worklist
    from pacslite.pacs import integrity, qr
    from pacslite import sweep
    app = _quiet_app(instance)
    conn = db.connect(app.config["DATABASE"])
    today = clock.local_today(app.config["TIMEZONE"]).strftime("%Y%m%d")
    results = []

    def worklist_today() -> int:
        identifier = Dataset()
        identifier.PatientName = ""
        step = Dataset()
        step.Modality = "CT"
        step.ScheduledProcedureStepStartDate = today
        identifier.ScheduledProcedureStepSequence = Sequence([step])
        return sum(1 for _ in worklist.query(conn, app.config, identifier, "ISO_IR 192"))

    def qr_today() -> int:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyDate = today
        identifier.StudyInstanceUID = ""
        identifier.PatientName = ""
        return sum(1 for _ in qr.find(conn, app.config, identifier, qr.STUDY_ROOT, "ISO_IR 192"))

    for label, action, runs, target in (("worklist C-FIND, CT today", worklist_today, 20, CFIND_MS),
                                        ("Q/R C-FIND, studies today", qr_today, 20, CFIND_MS),
                                        ("sweep", lambda: sweep.run(conn, app.config), 3, 0),
                                        ("audit verify", lambda: audit.verify(conn), 1, 0)):
        median, p95 = timed(action, runs)
        results.append((label, median, p95, target))
    backups = Path(tempfile.mkdtemp(prefix="pacslite-backup-"))
    try:
        median, p95 = timed(lambda: integrity.backup_database(app.config, backups), 1)
        size = sum(p.stat().st_size for p in integrity.backups(backups))
        results.append((f"backup ({size / 1e9:.1f} GB)", median, p95, 0))
    finally:
        shutil.rmtree(backups, ignore_errors=True)
    rows = conn.execute("SELECT id, series_ref, storage_path, size, sha256 FROM instances ORDER BY id LIMIT ?",
                        (SAMPLE_FILES,)).fetchall()
    started = time.perf_counter()
    for row in rows:
        integrity._look(app.config["STORAGE_DIR"], row)
    quick = len(rows) / (time.perf_counter() - started)
    started = time.perf_counter()
    for row in rows:
        integrity._read(app.config["STORAGE_DIR"], row)
    full = sum(r["size"] for r in rows) / (time.perf_counter() - started) / 1e6
    total = conn.execute("SELECT COUNT(*), SUM(size) FROM instances").fetchone()
    results.append((f"scrub quick pass: {quick:,.0f} files/s, the store in {total[0] / quick / 3600:.1f} h", 0, 0, 0))
    results.append((f"scrub full pass: {full:.0f} MB/s here; the store ({total[1] / 1e12:.2f} TB) over"
                    f" {app.config['SCRUB_FULL_DAYS']} days needs"
                    f" {integrity.full_rate(conn, app.config) / 1e6:.1f} MB/s", 0, 0, 0))
    conn.close()
    return results


def samples(instance: Path) -> tuple[str, int]:
    """An exam in the middle of the two years (imaged and reported), and a quarantined study."""
    from pacslite.core import db
    conn = db.connect(_database(instance))
    try:
        accession = conn.execute("SELECT accession_number FROM exams WHERE id = (SELECT MAX(id) / 2 + 1 FROM exams)")
        study = conn.execute("SELECT id FROM studies WHERE exam_ref IS NULL LIMIT 1")
        return accession.fetchone()[0], study.fetchone()[0]
    finally:
        conn.close()


def start_up(instance: Path) -> tuple[float, Any]:
    """Start ``app.py``: seconds until HTTP and DICOM answer. Pages are measured once the
    start-up sweep has run; the scrub's start-up pass and the scheduled backup (a first start
    makes one: 2.8 GB read and written) are off, their figures are measured on their own."""
    from tests import server
    started = time.perf_counter()
    running = server.start(instance, timeout=3600, PACSLITE_SCRUB_AT_START="0",
                           PACSLITE_BACKUP_INTERVAL_HOURS="876000", PACSLITE_DATABASE_URL=DATABASE_URL)
    seconds = time.perf_counter() - started
    while not any("sweep:" in line for line in running.output):
        running._drain()  # the lines printed so far
        if running.process.poll() is not None:
            raise SystemExit("pacslite stopped:\n" + "\n".join(running.output[-20:]))
        time.sleep(0.05)
    return seconds, running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the paper's numbers (default 1)")
    parser.add_argument("--keep", type=Path, help="build into this folder and leave it")
    parser.add_argument("--reuse", type=Path, help="measure a folder built before with --keep")
    parser.add_argument("--runs", type=int, default=20, help="requests per page (default 20)")
    parser.add_argument("--postgresql", action="store_true", help="measure on PostgreSQL (the build copied into it)")
    args = parser.parse_args()
    instance = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="pacslite-scale-")) / "instance"
    built: dict[str, float] = {}
    try:
        if not args.reuse:
            print(f"building {args.scale:g} × the paper's scale in {instance} ...", flush=True)
            built = build(instance, args.scale)
        if args.postgresql:
            _quiet_app(instance)  # the SQLite database migrated to the current schema first
            built["copy"], built["copied"] = to_postgresql(instance)
        token = api_token(instance)
        seconds, running = start_up(instance)
        try:
            accession, quarantined = samples(instance)
            page_results = pages(running.url, args.runs, accession, quarantined)
            page_results += api(running.url, args.runs, token, accession)
        finally:
            running.stop()
        other = in_process(instance)
    finally:
        if not args.keep and not args.reuse:
            shutil.rmtree(instance.parent, ignore_errors=True)
    print()
    for line in machine():
        print(line)
    if "rows" in built:
        print(f"built     rows in {built['rows']:.0f} s, audit chain in {built['audit']:.0f} s")
        print(f"migrated  from schema {BUILD_AT_SCHEMA} ({built['migrated']}) in {built['migration']:.1f} s,"
              f" every table's row count unchanged")
    if "copy" in built:
        print(f"database  PostgreSQL: {built['copied']:,} rows copied from SQLite and checked in {built['copy']:.0f} s")
    print(f"scale     {args.scale:g} × (120,000 patients, 200,000 exams, 4.9 M instances,"
          f" {OTHER_AUDIT_ROWS / 1e6:.1f} M audit rows besides one per delivery)")
    print()
    print(f"{'what':<46} {'median ms':>10} {'p95 ms':>10} {'target':>8}  ok")
    print(f"{'start-up until HTTP and DICOM answer':<46} {seconds * 1000:>10.0f} {'':>10} {STARTUP_S * 1000:>8}"
          f"  {'yes' if seconds < STARTUP_S else 'NO'}")
    for label, median, p95, target in page_results + other:
        if not median and not p95:
            print(f"{label}")
            continue
        ok = "" if not target else "yes" if p95 < target else "NO"
        print(f"{label:<46} {median:>10.1f} {p95:>10.1f} {target or '':>8}  {ok}")


if __name__ == "__main__":
    main()
