"""Film printing with a real DICOM print SCP, DCMTK's dcmprscp (a dry laser printer's part),
run inside a private network namespace (dcmprscp cannot be told to listen on loopback only).
Run by tests/test_printing.py as

    unshare --net --map-root-user sh -c 'ip link set lo up && exec python -m tests.print_scenario WORKDIR'

An exam's five CT images are printed 2×2 on 14×17 inch film (two films), the first with its own
window; then, the printer gone, a job is kept queued with the reason and an alert. Prints one
JSON line of what happened and what dcmprscp stored, for the test to check."""
from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from pacslite import create_app, statistics
from pacslite.core import audit, clock, db
from pacslite.dicom import sender
from pacslite.pacs import filing, pickup, printing
from pacslite.pacs.index import Source
from pacslite.ris import aes, patients
from tests.conftest import EXAM_FORM, INDEPENDENT_OF_HOST_AND_HOUR
from tests.databases import free_port
from tests.dicomkit import make_ct

CONFIG = """[[GENERAL]]
[PRINT]
Directory = {work}/spool
DetailedLog = false
BinaryLog = false
DeletePrintJobs = false
[DATABASE]
Directory = {work}/database
[[COMMUNICATION]]
[DRYLASER]
Aetitle = DRYLASER
Description = a dry laser printer
Hostname = localhost
Port = {port}
Type = LOCALPRINTER
DisplayFormat=1,1\\2,2\\3,4\\4,5\\4,6
FilmSizeID = 8INX10IN\\10INX12IN\\11INX14IN\\14INX14IN\\14INX17IN
MagnificationType = REPLICATE\\BILINEAR\\CUBIC\\NONE
MediumType = PAPER\\CLEAR FILM\\BLUE FILM
FilmDestination = MAGAZINE\\PROCESSOR
MaxDensity = 320
MinDensity = 20
MaxPDU = 32768
Supports12Bit = true
SupportsImageSize = true
SupportsPresentationLUT = false
"""


def start_printer(work: Path, port: int) -> subprocess.Popen:
    for folder in ("spool", "database"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    config = work / "printer.cfg"
    config.write_text(CONFIG.format(work=work, port=port))
    process = subprocess.Popen(["dcmprscp", "-c", str(config), "-p", "DRYLASER"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return process
        time.sleep(0.1)  # polling for the port to open: there is nothing to wait on
    raise RuntimeError("dcmprscp did not start")


def main(work: Path) -> None:
    port = free_port()
    printer = start_printer(work / "printer", port)
    with contextlib.redirect_stdout(io.StringIO()):
        app = create_app({"INSTANCE_DIR": str(work / "instance"), **INDEPENDENT_OF_HOST_AND_HOUR})
    conn = db.connect(app.config["DATABASE"])
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "DRYLASER", "modality": "HC", "host": "127.0.0.1", "port": port})
    data = dict(EXAM_FORM)
    accession = patients.register_exam(conn, audit.SYSTEM, app.config, data, data).accession_number
    exam = patients.get_exam(conn, accession)
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in range(1, 6):
        path = work / f"{number}.dcm"
        make_ct(path, accession=accession, patient_id=exam["patient_id"], study_uid=study_uid, series_uid=series_uid,
                instance_number=number, size=64, seed=number)
        filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source("CT01", "127.0.0.1"))
    instances = [r[0] for r in conn.execute("SELECT id FROM instances ORDER BY instance_number")]
    picks = [{"instance": instances[0], "center": "1000", "width": "2000"}] + [{"instance": i} for i in instances[1:]]
    form = {"printer": "DRYLASER", "layout": "2x2", "film_size": "14INX17IN", "orientation": "PORTRAIT"}
    job_id = printing.request(conn, audit.Actor("tech"), exam, form, picks)
    expected = printing.films_of(app.config["STORAGE_DIR"], conn, conn.execute(
        "SELECT * FROM print_jobs WHERE id = ?", (job_id,)).fetchone())
    first = printing.films_of(app.config["STORAGE_DIR"], conn, {"layout": "1x1", "images": json.dumps(
        [{"instance": instances[0], "center": None, "width": None}])})[0].pictures[0]
    tried = printing.run_due(conn, app.config, sender.print_films)
    job = dict(conn.execute("SELECT state, attempts, last_error, films FROM print_jobs WHERE id = ?", (job_id,)).fetchone())
    database = work / "printer" / "database"
    hardcopy = {}  # the printer's hard-copy grayscale images, by SOP Instance UID
    stored_print = []  # per film: its film box, and its image boxes' hard-copy images by position
    for path in sorted(database.glob("*.dcm")):
        ds = dcmread(path)
        if path.name.startswith("HG_"):
            hardcopy[str(ds.SOPInstanceUID)] = {"rows": int(ds.Rows), "columns": int(ds.Columns),
                                                "pixels": bytes(ds.PixelData).hex()}
        elif path.name.startswith("SP_"):
            box = ds.FilmBoxContentSequence[0]
            stored_print.append({
                "format": str(box.ImageDisplayFormat), "size": str(box.FilmSizeID),
                "orientation": str(box.FilmOrientation),
                "images": {int(item.ImageBoxPosition): str(item.ReferencedImageSequence[0].ReferencedSOPInstanceUID)
                           for item in ds.get("ImageBoxContentSequence", [])}})
    received = [{**film, "images": [hardcopy[film["images"][position]] for position in sorted(film["images"])]}
                for film in stored_print]
    today = clock.local_today(app.config["TIMEZONE"])
    report = statistics.report(conn, app.config, today, today)
    films = {"by_modality": {g.name: g.films for g in report.groups["modality"]}, "total": report.total.films,
             "by_day": {f"{day} {modality}": figures[3] for (day, modality), figures in
                        statistics.workload(conn, app.config, today, today).days.items()}}
    ready = {"waiting": pickup.of_exam(conn, exam["id"]).films_waiting,
             "listed": [row["accession_number"] for row in pickup.waiting(conn, app.config)]}
    pickup.hand_out(conn, audit.Actor("desk"), exam, pickup.FILMS, pickup.DESK)
    handed = pickup.of_exam(conn, exam["id"])
    ready.update(after=handed.films_waiting, films=handed.films_handed["films"],
                 listed_after=[row["accession_number"] for row in pickup.waiting(conn, app.config)])
    printer.terminate()
    printer.wait(timeout=30)
    gone_id = printing.request(conn, audit.Actor("tech"), exam, form, picks[:1])
    printing.run_due(conn, app.config, sender.print_films)
    gone = dict(conn.execute("SELECT state, attempts, last_error FROM print_jobs WHERE id = ?", (gone_id,)).fetchone())
    alert = conn.execute("SELECT state FROM alerts WHERE rule = 'print_failed' AND subject = ?",
                         (f"print:{gone_id}",)).fetchone()
    print(json.dumps({
        "tried": tried, "job": job, "received": received, "films": films, "pickup": ready,
        "accession": accession,
        "first_in_its_header_window": first.pixels.hex(),
        "expected": [[{"rows": p.rows, "columns": p.columns, "pixels": p.pixels.hex()} for p in film.pictures]
                     for film in expected],
        "audited": conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'film.print'"
                                " AND outcome = 'success'").fetchone()[0],
        "gone": gone, "alert": alert[0] if alert else None}))
    conn.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
