"""pacslite's process: web pages (waitress), the DICOM and HL7 servers, the background work.

Run ``python app.py``: one process does everything. ``python app.py --role dicom,web`` runs only
some of it, for several processes or servers sharing one PostgreSQL database
(docs/beyond-one-server.md). SIGINT or SIGTERM stops everything cleanly. ``flask --app app …``
finds ``create_app`` here for the command line.
"""
from __future__ import annotations

import argparse
import gc
import logging
import resource
import signal
import socket
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
from pacslite.pacs import (arrivals, commitment, filing, integrity, key_images, merging, offsite, printing,
                           routing)
from pacslite.ris import critical, exams, outbox, transmission
from pacslite.sweep import Sweeper
from pacslite.web import limits

log = logging.getLogger("pacslite")

#: What a process may do: the pages and DICOMweb, the DICOM services, the HL7 listener, and the
#: background work (sweep, scrub, queues, backups…; each duty done by one process at a time).
ROLES = ("web", "dicom", "hl7", "worker")


def parse_roles(argv: list[str]) -> tuple[str, ...]:
    parser = argparse.ArgumentParser(prog="app.py", description="Run pacslite.")
    parser.add_argument("--role", default="all", metavar="ROLE,…",
                        help=f"what this process does: all (the default) or some of {', '.join(ROLES)}")
    wanted = parser.parse_args(argv).role
    if wanted.strip() == "all":
        return ROLES
    roles = tuple(dict.fromkeys(r.strip() for r in wanted.split(",") if r.strip()))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        parser.error(f"unknown role {', '.join(unknown) or '(none)'}: choose from all, {', '.join(ROLES)}")
    return roles


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds waitress's loop in the main thread


def _recover(config) -> None:
    """Before accepting images: clear what a killed process left half-done. Only that: files
    are checked by the scrub's thread (its quick pass starts at once), so start-up takes
    seconds whatever the number of stored files."""
    conn = db.connect(config["DATABASE"])
    try:
        shared = db.other_processes(conn) > 0  # they may be storing now: only old leftovers are theirs
        tmp, unindexed = filing.recover(conn, config["STORAGE_DIR"], shared=shared)
        audited = arrivals.close_left_open(conn, idle_for=filing.SHARED_STORE_GRACE_SECONDS if shared else 0.0)
    finally:
        conn.close()
    if audited:
        log.warning("start-up: audited %d deliveries that were cut off when pacslite stopped", audited)
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


def _http_socket(config) -> socket.socket:
    """The pages' listening socket, shared with the other processes on this port (SHARE_PORTS)."""
    family = socket.AF_INET6 if ":" in config["HTTP_HOST"] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((config["HTTP_HOST"], config["HTTP_PORT"]))
    return sock


def _check_roles(config, roles: tuple[str, ...]) -> None:
    """Several processes need PostgreSQL: on SQLite two of them would both do every duty."""
    if db.is_postgresql(config["DATABASE"]):
        return
    if roles != ROLES or config["SHARE_PORTS"]:
        raise SystemExit("pacslite: --role and SHARE_PORTS are for several processes, which need PostgreSQL"
                         " (PACSLITE_DATABASE_URL): see docs/beyond-one-server.md")


def main(argv: list[str] | None = None) -> int:
    roles = parse_roles(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # it logs every association at INFO
    app = create_app()
    _check_roles(app.config, roles)
    app.extensions["dicom_echo"] = sender.echo  # the modalities page's C-ECHO test (web/ never imports pynetdicom)
    app.extensions["hl7_process_again"] = hl7_handlers.process_again  # the HL7 page's button (web/ never imports hl7)
    _room_for_connections(app.config["HTTP_CONNECTION_LIMIT"])
    server = _web_server(app) if "web" in roles else None
    services: list = []  # things with .stop(): the DICOM server and the background threads
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        _recover(app.config)
        if "dicom" in roles:
            dicom = DicomServer(app.config)
            dicom.start()
            services.append(dicom)
            print(f"pacslite: DICOM {app.config['AE_TITLE']} on {app.config['DICOM_HOST']}:{dicom.port}", flush=True)
            if dicom.tls_port:
                print(f"pacslite: DICOM over TLS on {app.config['DICOM_HOST']}:{dicom.tls_port}", flush=True)
        if "hl7" in roles and app.config["HL7_PORT"] >= 0:
            hl7 = Hl7Server(app.config)
            hl7.start()
            services.append(hl7)
            print(f"pacslite: HL7 on {app.config['HL7_HOST']}:{hl7.port}", flush=True)
        if "worker" in roles:
            for service in _background_work(app.config):
                service.start()
                services.append(service)
        # what start-up made (modules, pydicom's dictionaries, translations) lives until the end:
        # moved out of the collector's reach, a full collection no longer walks it in the middle
        # of a request (the exam list's p95 at paper scale: 55 to 22 ms)
        gc.freeze()
        if server is None:
            print(f"pacslite: running ({', '.join(roles)})", flush=True)
            while True:
                signal.pause()  # until SIGTERM or SIGINT raises SystemExit
        print(f"pacslite: listening on http://{app.config['HTTP_HOST']}:{server.effective_port}/", flush=True)
        server.run()  # returns (after shutting its workers down) when a signal raises SystemExit
    finally:
        for service in reversed(services):
            service.stop()
        if server is not None:
            server.close()
        _write_anchor(app.config)
        log.info("stopped")
    return 0


def _web_server(app):
    where = ({"sockets": [_http_socket(app.config)]} if app.config["SHARE_PORTS"]
             else {"host": app.config["HTTP_HOST"], "port": app.config["HTTP_PORT"]})
    server = create_server(app, **where, threads=app.config["HTTP_THREADS"], ident="pacslite",
                           # browsers keep about six idle connections per PC open: forty ward and
                           # desk PCs passed waitress's default of 100, and then every new page hung
                           connection_limit=app.config["HTTP_CONNECTION_LIMIT"],
                           channel_timeout=app.config["HTTP_IDLE_SECONDS"],
                           asyncore_use_poll=True,  # select() cannot watch a descriptor above 1023
                           max_request_body_size=limits.largest_body(app) + 1,
                           # a response waiting for a slow client stays in memory up to 8 MiB (then the
                           # thread writing it waits), never spooled to a temporary file: DICOMweb
                           # retrieves are hundreds of MB
                           outbuf_overflow=8 * 1024 * 1024, outbuf_high_watermark=8 * 1024 * 1024,
                           # X-Forwarded-For reaches pacslite, which believes it only from
                           # TRUSTED_PROXIES (web/proxies.py): waitress's default removed it always,
                           # so behind HAProxy every login was audited with HAProxy's address
                           clear_untrusted_proxy_headers=False)
    limits.bound_waitress(server, app)
    return server


def _background_work(config) -> list:
    """The background duties. With several processes on PostgreSQL each is done by one process
    at a time (core/background.py: a duty lock); a process that dies hands its duties over."""
    periodic = (offsite.ensure_job, integrity.backup_if_due, merging.ensure_job)
    return [
        Sweeper(config, also=periodic),
        JobRunner(config),
        Periodic(config, "audit-anchor", audit.write_anchor, config["AUDIT_ANCHOR_MINUTES"] * 60),
        routing.Sender(config, sender.send_to),
        Periodic(config, "commitment-reports",
                 lambda conn, settings: commitment.run_due(conn, settings, sender.send_commitment_report),
                 config["FORWARD_POLL_SECONDS"], on_duty=commitment.recover),
        Periodic(config, "key-objects", key_images.store_due, config["FORWARD_POLL_SECONDS"]),
        Periodic(config, "printing", lambda conn, settings: printing.run_due(conn, settings, sender.print_films),
                 config["FORWARD_POLL_SECONDS"], on_duty=printing.recover),
        Periodic(config, "expected-images", exams.check_transmissions_due, transmission.poll_seconds(config)),
        Periodic(config, "critical-escalation", critical.escalate_due, critical.poll_seconds(config)),
        Periodic(config, "hl7-outbound",
                 lambda conn, settings: outbox.run_due(conn, settings, hl7_outbound.build, hl7_outbound.deliver),
                 outbox.poll_seconds(config)),
        integrity.Scrubber(config),
    ]


if __name__ == "__main__":
    sys.exit(main())
