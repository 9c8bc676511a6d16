"""pacslite: the single process. Web pages (waitress) and the DICOM server; the sweep joins them.

Run ``python app.py``. SIGINT or SIGTERM stops everything cleanly. ``flask --app app …`` finds
``create_app`` here for the command line.
"""
from __future__ import annotations

import gc
import logging
import resource
import signal
import sys
from types import FrameType

from waitress import create_server

from pacslite import create_app
from pacslite.core import audit, db
from pacslite.core.background import Periodic
from pacslite.core.jobs import JobRunner
from pacslite.dicom import sender
from pacslite.dicom.server import DicomServer
from pacslite.hl7 import handlers as hl7_handlers, outbound as hl7_outbound
from pacslite.hl7.server import Hl7Server
from pacslite.pacs import arrivals, commitment, filing, integrity, merging, offsite, routing
from pacslite.ris import critical, exams, outbox, transmission
from pacslite.sweep import Sweeper
from pacslite.web import limits

log = logging.getLogger("pacslite")


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds waitress's loop in the main thread


def _recover(config) -> None:
    """Before accepting images: clear what a killed process left half-done. Only that: files
    are checked by the scrub's thread (its quick pass starts at once), so start-up takes
    seconds whatever the number of stored files."""
    conn = db.connect(config["DATABASE"])
    try:
        tmp, unindexed = filing.recover(conn, config["STORAGE_DIR"])
        audited = arrivals.close_left_open(conn)
        resent = routing.recover(conn) + commitment.recover(conn)
    finally:
        conn.close()
    if audited:
        log.warning("start-up: audited %d deliveries that were cut off when pacslite stopped", audited)
    if resent:
        log.warning("start-up: %d studies or commitment reports that were being sent are queued again", resent)
    if tmp or unindexed:
        log.warning("start-up: removed %d temporary and %d never-committed files", tmp, unindexed)


def _room_for_connections(connections: int) -> None:
    """Raise the open-files limit (often 1,024) to what the web connections, the DICOM
    associations and the files they read need, within the hard limit."""
    wanted = connections + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < wanted:
            log.warning("only %d files may be open at once (the hard limit): fewer than the %d that %d web"
                        " connections need", raised, wanted, connections)


def _write_anchor(config) -> None:
    """The audit chain's head, outside the database, as pacslite stops."""
    conn = db.connect(config["DATABASE"])
    try:
        audit.write_anchor(conn)
    finally:
        conn.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # it logs every association at INFO
    app = create_app()
    app.extensions["dicom_echo"] = sender.echo  # the modalities page's C-ECHO test (web/ never imports pynetdicom)
    app.extensions["hl7_process_again"] = hl7_handlers.process_again  # the HL7 page's button (web/ never imports hl7)
    _room_for_connections(app.config["HTTP_CONNECTION_LIMIT"])
    server = create_server(app, host=app.config["HTTP_HOST"], port=app.config["HTTP_PORT"],
                           threads=app.config["HTTP_THREADS"], ident="pacslite",
                           # browsers keep about six idle connections per PC open: forty ward and
                           # desk PCs passed waitress's default of 100, and then every new page hung
                           connection_limit=app.config["HTTP_CONNECTION_LIMIT"],
                           channel_timeout=app.config["HTTP_IDLE_SECONDS"],
                           asyncore_use_poll=True,  # select() cannot watch a descriptor above 1023
                           max_request_body_size=limits.largest_body(app) + 1,
                           # a response waiting for a slow client stays in memory up to 8 MiB (then the
                           # thread writing it waits), never spooled to a temporary file: DICOMweb
                           # retrieves are hundreds of MB
                           outbuf_overflow=8 * 1024 * 1024, outbuf_high_watermark=8 * 1024 * 1024)
    limits.bound_waitress(server, app)
    services: list = []  # things with .stop(): the DICOM server and the background threads
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        _recover(app.config)
        dicom = DicomServer(app.config)
        dicom.start()
        services.append(dicom)
        print(f"pacslite: DICOM {app.config['AE_TITLE']} on {app.config['DICOM_HOST']}:{dicom.port}", flush=True)
        if dicom.tls_port:
            print(f"pacslite: DICOM over TLS on {app.config['DICOM_HOST']}:{dicom.tls_port}", flush=True)
        if app.config["HL7_PORT"] >= 0:
            hl7 = Hl7Server(app.config)
            hl7.start()
            services.append(hl7)
            print(f"pacslite: HL7 on {app.config['HL7_HOST']}:{hl7.port}", flush=True)
        periodic = (offsite.ensure_job, integrity.backup_if_due, merging.ensure_job)
        anchor = Periodic(app.config, "audit-anchor", audit.write_anchor, app.config["AUDIT_ANCHOR_MINUTES"] * 60)
        outgoing = routing.Sender(app.config, sender.send_to)
        reports = Periodic(app.config, "commitment-reports",
                           lambda conn, config: commitment.run_due(conn, config, sender.send_commitment_report),
                           app.config["FORWARD_POLL_SECONDS"])
        expected = Periodic(app.config, "expected-images", exams.check_transmissions_due, transmission.poll_seconds(app.config))
        escalation = Periodic(app.config, "critical-escalation", critical.escalate_due,
                              critical.poll_seconds(app.config))
        to_his = Periodic(app.config, "hl7-outbound",
                          lambda conn, config: outbox.run_due(conn, config, hl7_outbound.build, hl7_outbound.deliver),
                          outbox.poll_seconds(app.config))
        for service in (Sweeper(app.config, also=periodic), JobRunner(app.config), anchor, outgoing, reports, expected,
                        escalation, to_his, integrity.Scrubber(app.config)):
            service.start()
            services.append(service)
        # what start-up made (modules, pydicom's dictionaries, translations) lives until the end:
        # moved out of the collector's reach, a full collection no longer walks it in the middle
        # of a request (the exam list's p95 at paper scale: 55 to 22 ms)
        gc.freeze()
        print(f"pacslite: listening on http://{app.config['HTTP_HOST']}:{server.effective_port}/", flush=True)
        server.run()  # returns (after shutting its workers down) when a signal raises SystemExit
    finally:
        for service in reversed(services):
            service.stop()
        server.close()
        _write_anchor(app.config)
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
