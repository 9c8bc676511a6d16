"""Configuration: embedded defaults, then ``instance/config.py``, then ``PACSLITE_*`` variables.

Every setting has a default here, so pacslite starts with no configuration at all. An
environment variable ``PACSLITE_<NAME>`` overrides the setting ``NAME`` and is converted to the
type of its default (JSON for lists and dicts, ``1/true/yes/on`` for booleans).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from . import workhours

ROOT = Path(__file__).resolve().parents[2]

#: Modalities the department registers. ``code`` is what the desk sees, ``dicom`` the DICOM
#: Modality (0008,0060) used in the worklist, ``turnaround_hours`` the report target,
#: ``location`` where the patient goes (printed on the receipt; empty: a generic text).
DEFAULT_MODALITIES: list[dict[str, Any]] = [
    {"code": "CR", "dicom": "CR", "turnaround_hours": 1, "location": ""},
    {"code": "DR", "dicom": "DX", "turnaround_hours": 1, "location": ""},
    {"code": "CT", "dicom": "CT", "turnaround_hours": 8, "location": ""},
    {"code": "MR", "dicom": "MR", "turnaround_hours": 8, "location": ""},
    {"code": "DSA", "dicom": "XA", "turnaround_hours": 24, "location": ""},
    {"code": "MG", "dicom": "MG", "turnaround_hours": 24, "location": ""},
    {"code": "US", "dicom": "US", "turnaround_hours": 24, "location": ""},
    {"code": "RF", "dicom": "RF", "turnaround_hours": 24, "location": ""},
]

DEFAULTS: dict[str, Any] = {
    # Where run-time data lives. STORAGE_DIR empty: <INSTANCE_DIR>/storage.
    "INSTANCE_DIR": str(ROOT / "instance"),
    "STORAGE_DIR": "",
    # The database: empty, SQLite in <INSTANCE_DIR>/pacslite.db; or PostgreSQL,
    # postgresql://user:password@host:port/name (docs/beyond-one-server.md).
    "DATABASE_URL": "",
    # Network.
    "HTTP_HOST": "0.0.0.0",
    "HTTP_PORT": 8080,
    "HTTP_THREADS": 8,
    # Open web connections at once (each browser keeps about six idle ones) and how long an idle
    # one is kept; beyond the limit waitress stops accepting until one closes.
    "HTTP_CONNECTION_LIMIT": 1000,
    "HTTP_IDLE_SECONDS": 60,
    # Several pacslite processes on one machine share the HTTP, DICOM and HL7 ports (SO_REUSEPORT:
    # the kernel spreads new connections over them). Only with PostgreSQL; off, a second process
    # on a port in use fails to start, as any server does.
    "SHARE_PORTS": False,
    "DICOM_HOST": "0.0.0.0",
    "DICOM_PORT": 11112,
    "AE_TITLE": "PACSLITE",
    # DICOM: accept associations from any calling AE title (off: only configured modalities).
    "DICOM_ACCEPT_ANY_CALLER": False,
    # Storage of private SOP classes (e.g. Siemens CSA Non-Image) from configured modalities.
    "DICOM_ACCEPT_PRIVATE_STORAGE": True,
    "DICOM_MAX_ASSOCIATIONS": 16,
    # Largest PDU pacslite receives (longer ones are aborted); 0 = none announced (16 MiB still
    # refused). 128 KiB is the largest DCMTK sends.
    "DICOM_MAX_PDU": 131072,
    # A Query/Retrieve C-FIND answers at most this many matches, then a warning (0xB001).
    "QR_MAX_ANSWERS": 1000,
    # Routing: a queued study goes once no image arrived for FORWARD_DELAY_SECONDS; a failed send
    # is tried again after FORWARD_RETRY_FIRST_SECONDS, doubling (at most an hour), for
    # FORWARD_RETRY_HOURS, then it fails with an alert. The queue is looked at every FORWARD_POLL_SECONDS.
    "FORWARD_DELAY_SECONDS": 30.0,
    "FORWARD_RETRY_FIRST_SECONDS": 60.0,
    "FORWARD_RETRY_HOURS": 24.0,
    "FORWARD_POLL_SECONDS": 2.0,
    # Film printing: a job the printer refused or could not take is tried again after
    # PRINT_RETRY_FIRST_SECONDS, doubling, for PRINT_RETRY_HOURS, then fails with an alert.
    "PRINT_RETRY_FIRST_SECONDS": 30.0,
    "PRINT_RETRY_HOURS": 2.0,
    "DICOM_ACSE_TIMEOUT": 30,
    "DICOM_DIMSE_TIMEOUT": 60,
    # A peer silent this long (mid-PDU, before associating, or idle) is dropped.
    "DICOM_NETWORK_TIMEOUT": 30,
    # Connections one address may hold at once; more are closed at once.
    "DICOM_MAX_CONNECTIONS_PER_ADDRESS": 8,
    # DICOM over TLS (PS3.15 B.1, the BCP 195 profile: TLS 1.2 or later) on its own port; -1: none.
    # pacslite's certificate and key (empty: <INSTANCE_DIR>/tls/pacslite.crt and .key, made at
    # the first start); a client presenting a certificate must present one pinned for its AE
    # on the modalities page or issued by DICOM_TLS_CA_FILE (PEM, optional), which also checks
    # the AEs pacslite sends to over TLS when none is pinned for them.
    "DICOM_TLS_PORT": 2762,
    "DICOM_TLS_CERTIFICATE": "",
    "DICOM_TLS_KEY": "",
    "DICOM_TLS_CA_FILE": "",
    # The largest data set of a DIMSE message other than C-STORE (whose data set is written to
    # the store as it arrives), checked as its fragments arrive: more is aborted unread.
    "DICOM_MAX_FIND_BYTES": 128 * 1024,
    "DICOM_MAX_MPPS_BYTES": 4 * 1024 * 1024,
    "DICOM_MAX_ACTION_BYTES": 4 * 1024 * 1024,
    # HL7 v2 over MLLP (docs/hl7.md): the listener's address and port (-1: none).
    "HL7_HOST": "0.0.0.0",
    "HL7_PORT": 2575,
    # Who may send: sending application (MSH-3) → {"hosts": [addresses it connects from],
    # "charset": its default character set when MSH-18 is empty}. A message from another
    # application or host is rejected (AR). Empty: the listener accepts no message.
    "HL7_SENDERS": {},
    # The character set of a message without MSH-18 from a sender that names none.
    "HL7_CHARSET": "UTF-8",
    # pacslite's own application and facility (MSH-3, MSH-4 of what it sends, ACKs included).
    "HL7_APPLICATION": "PACSLITE",
    "HL7_FACILITY": "RADIOLOGY",
    # The largest message (more is answered AR and the connection closed), connections at once
    # (in all, and from one address), and how long a connection may be silent or take to send
    # one message before it is closed.
    "HL7_MAX_MESSAGE_BYTES": 1024 * 1024,
    "HL7_MAX_CONNECTIONS": 16,
    "HL7_MAX_CONNECTIONS_PER_ADDRESS": 4,
    "HL7_NETWORK_TIMEOUT": 60,
    # Orders (ORM^O01, OMI^O23): what each order control code (ORC-1), or a pair of it and the
    # order status (ORC-1:ORC-5), does to the exam: new, change, cancel, discontinue, ignore.
    "HL7_ORDER_CONTROL": {"NW": "new", "XO": "change", "CA": "cancel", "OC": "cancel", "DC": "discontinue",
                          "OD": "discontinue", "SC": "ignore", "SC:CA": "cancel", "SC:DC": "discontinue"},
    # The patient class (PV1-2) → the exam's source; a class not listed is outpatient.
    "HL7_PATIENT_CLASS": {"O": "outpatient", "I": "inpatient", "E": "emergency", "PE": "physical_exam"},
    # Where the accession number of an ordered exam comes from: "" (pacslite generates it, as at
    # the desk) or the field of the HIS's that carries it ("OBR-18", "OBR-19", "OBR-20", "ORC-3").
    "HL7_ACCESSION_FIELD": "",
    # An ordered exam waits for the patient's check-in at the desk (签到) before the worklist
    # offers it; False: it is scheduled at once.
    "HL7_ORDERS_NEED_CHECK_IN": True,
    # Where results and status go (docs/hl7.md): {"host": …, "port": …, "application": …,
    # "facility": …, "charset": "UTF-8" or "GB18030", "version": "2.4"}; {}: nothing is sent
    # (what is queued waits until it is set).
    "HL7_DESTINATION": {},
    # Status back to the HIS (状态回写) for its orders: as ORM^O01 (ORC-1 SC), OMG^O19 or ORU^R01;
    # "": none. The order status (ORC-5) each exam state is sent as.
    "HL7_STATUS_AS": "ORM",
    "HL7_STATUS_CODES": {"scheduled": "SC", "in_progress": "IP", "performed": "CM", "preliminary": "A",
                         "final": "CM", "discontinued": "DC", "cancelled": "CA"},
    # Results (ORU^R01): also the preliminary report; also for exams registered at the desk
    # (without an HIS order).
    "HL7_SEND_PRELIMINARY": False,
    "HL7_RESULTS_FOR_ALL": False,
    # A message the HIS does not accept is sent again after HL7_RETRY_FIRST_SECONDS, doubling (at
    # most an hour), until it does; the alert his_unreachable opens once the oldest waits
    # HL7_ALERT_MINUTES. An answer is awaited HL7_ACK_SECONDS.
    "HL7_RETRY_FIRST_SECONDS": 30.0,
    "HL7_ALERT_MINUTES": 10.0,
    "HL7_ACK_SECONDS": 30.0,
    "HL7_POLL_SECONDS": 2.0,
    # The department.
    "HOSPITAL_NAME": "pacslite",
    # The hours radiologists report, a weekly timetable in TIMEZONE ("mon" … "sun": a list of
    # "HH:MM-HH:MM"), and the local dates nobody reports: report targets count these hours
    # (the receipt's pick-up time, the reading list, the overdue alert, the statistics);
    # emergency and STAT exams count every hour. {} counts every hour.
    "REPORTING_HOURS": {day: ["08:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
    "REPORTING_HOLIDAYS": [],
    # The printed report's department line and its closing note; empty: the words in the
    # reader's language ("Department of Radiology" 放射科, "For clinical reference only." 仅供临床参考);
    # "-": not printed.
    "REPORT_DEPARTMENT": "",
    "REPORT_NOTE": "",
    "TIMEZONE": "Asia/Shanghai",
    "DEFAULT_LANGUAGE": "zh_CN",
    "MODALITIES": DEFAULT_MODALITIES,
    # Report targets that differ by patient source, "MODALITY/source": hours, e.g.
    # {"CT/emergency": 1, "CT/outpatient": 2}; others use the modality's turnaround_hours.
    "TURNAROUND_BY_SOURCE": {},
    # Report targets by priority, hours: a STAT or urgent exam gets the shorter of this and its
    # modality's (or source's) target.
    "TURNAROUND_BY_PRIORITY": {"stat": 1, "urgent": 2},
    # Reports: with review on, a final report is signed only after a preliminary one.
    "REPORT_REVIEW": False,
    # A radiologist's signature image, as an admin uploads it (PNG or JPEG).
    "SIGNATURE_MAX_BYTES": 2 * 1024 * 1024,
    # Critical findings (危急值): unacknowledged by the requesting department after this many
    # minutes, a finding escalates to the radiologists and admins (0.05 = 3 s).
    "CRITICAL_ACK_MINUTES": 15.0,
    # MPPS and "exam done": this many minutes after an exam was performed, images the modality
    # said it acquired and pacslite has not received raise incomplete_transmission (0.05 = 3 s).
    "MPPS_GRACE_MINUTES": 10.0,
    # Storage commitment: a report the requesting AE did not take on its association is sent on
    # a new one, tried again after COMMITMENT_RETRY_FIRST_SECONDS, doubling, for
    # COMMITMENT_RETRY_HOURS, then given up with an alert.
    "COMMITMENT_RETRY_FIRST_SECONDS": 30.0,
    "COMMITMENT_RETRY_HOURS": 24.0,
    # Booking: after this time of day (the department's, HH:MM) the sweep ends today's bookings
    # whose exam was not started as no-shows (earlier days' at any time).
    "BOOKING_NO_SHOW_AFTER": "20:00",
    # Queue calling: patients this old go before the others (as the disabled, ticked at
    # check-in); a skipped patient goes back behind this many others.
    "QUEUE_ELDERLY_AGE": 70,
    "QUEUE_SKIP_BACK": 3,
    # Report templates: an import file (JSON or CSV) is at most this large.
    "TEMPLATE_IMPORT_MAX_BYTES": 5 * 1024 * 1024,
    # Pick-up: the desk lists reports and films ready and not collected for this many days;
    # a kiosk prints the final report on this paper (a4 or a5).
    "PICKUP_DAYS": 30,
    "KIOSK_REPORT_PAPER": "a4",
    # The sweep: how often, and after how long each finding becomes an alert.
    "SWEEP_INTERVAL_MINUTES": 15,
    "SWEEP_MISSING_IMAGES_HOURS": 24,
    "SWEEP_UNFILED_HOURS": 1,
    "SWEEP_STALE_DAYS": 7,
    # The online store: above the high-water mark new images are refused (0xA700) while the
    # database can still be written; from the warning mark, or when the forecast says full
    # within the warning days, the sweep raises an alert. Nothing is deleted to make room.
    "STORAGE_HIGH_WATER_PERCENT": 95.0,
    "STORAGE_WARN_PERCENT": 85.0,
    "STORAGE_WARN_DAYS": 30,
    # Offline volumes: studies older than ARCHIVE_AGE_DAYS go onto volumes of VOLUME_BYTES (a
    # DVD), written under ARCHIVE_DIR (empty: <INSTANCE_DIR>/archive).
    "ARCHIVE_DIR": "",
    "ARCHIVE_AGE_DAYS": 300,
    "VOLUME_BYTES": 4_700_000_000,
    # The off-site copy: every image again, lossy JPEG 2000 at about OFFSITE_RATIO:1, to
    # OFFSITE_DIR (another disk or a mounted share; empty: no off-site copy).
    "OFFSITE_DIR": "",
    "OFFSITE_RATIO": 10.0,
    # Integrity: the scrub looks at every stored file (there, with its size) every
    # SCRUB_INTERVAL_HOURS, and re-reads every file against its SHA-256 once in SCRUB_FULL_DAYS,
    # no faster than SCRUB_MB_PER_SECOND; the database is backed up every BACKUP_INTERVAL_HOURS
    # into BACKUP_DIR (empty: <INSTANCE_DIR>/backups), the newest BACKUP_KEEP kept.
    "SCRUB_MB_PER_SECOND": 20.0,
    "SCRUB_INTERVAL_HOURS": 24,
    "SCRUB_FULL_DAYS": 30,
    "SCRUB_AT_START": True,
    "BACKUP_DIR": "",
    "BACKUP_INTERVAL_HOURS": 24,
    "BACKUP_KEEP": 14,
    # Imports: a ZIP that would expand beyond this is refused before anything is extracted.
    "IMPORT_MAX_BYTES": 2 * 1024 * 1024 * 1024,
    # The address clients reach pacslite by (``https://pacs.hospital.local``), for the URLs DICOMweb
    # answers carry (RetrieveURL, BulkDataURI); empty: the Host header of each request.
    "PUBLIC_URL": "",
    # Where the OHIF Viewer is installed (empty: vendor/ohif in the code folder, where the
    # README's commands put it).
    "OHIF_DIR": "",
    # The largest STOW-RS request body (every part together).
    "STOW_MAX_BYTES": 1024 * 1024 * 1024,
    # The most parts (instances) one STOW-RS request may hold; a part beyond is not read.
    "STOW_MAX_PARTS": 10000,
    # Rendered images (PNG) for the browser: a cache under the instance folder, at most this big.
    "RENDER_CACHE_MB": 512,
    # DICOMweb metadata read from the files (JSON, about 10 KB an image), kept under the instance folder.
    "METADATA_CACHE_MB": 1024,
    # Corrections: how long the files a re-filing replaced, and rejected studies, are kept
    # (restorable) before an admin's purge removes them.
    "REFILE_RETENTION_DAYS": 90,
    "REJECT_RETENTION_DAYS": 30,
    # Numbers pacslite generates. UID_ROOT empty: UUID-derived 2.25 UIDs.
    "ACCESSION_PREFIX": "A",
    "UID_ROOT": "",
    # Registration desk.
    "RECEIPT_FORMAT": "80mm",
    "REQUEST_FORM_MAX_BYTES": 10 * 1024 * 1024,
    # The audit chain's head is written outside the database (instance/audit_anchors) this often.
    "AUDIT_ANCHOR_MINUTES": 2.0,
    # Login throttling.
    "LOGIN_MAX_FAILURES": 5,
    "LOGIN_MAX_FAILURES_PER_ADDRESS": 20,
    "LOGIN_LOCK_MINUTES": 15,
    # Reverse proxies (addresses or networks) whose X-Forwarded-For is believed; from any other
    # address the header is ignored. Empty: pacslite is reached directly.
    "TRUSTED_PROXIES": [],
    # Sessions. Set SESSION_COOKIE_SECURE when pacslite is served behind HTTPS.
    "SESSION_COOKIE_SECURE": False,
    "SESSION_HOURS": 12,
}

_TRUE = {"1", "true", "yes", "on"}


def _coerce(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in _TRUE
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, (list, dict)):
        return json.loads(raw)
    return raw


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the effective settings: defaults < instance/config.py < environment < overrides."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    settings = {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULTS.items()}

    instance_dir = overrides.get("INSTANCE_DIR") or environ.get("PACSLITE_INSTANCE_DIR") or settings["INSTANCE_DIR"]
    settings["INSTANCE_DIR"] = str(Path(instance_dir).resolve())

    settings.update(_read_instance_config(Path(settings["INSTANCE_DIR"]) / "config.py"))
    for key, default in DEFAULTS.items():
        raw = environ.get(f"PACSLITE_{key}")
        if raw is not None and key != "INSTANCE_DIR":
            try:
                settings[key] = _coerce(raw, default)
            except ValueError as exc:
                raise SystemExit(f"PACSLITE_{key}={raw!r} is not a valid value: {exc}") from exc
    settings.update(overrides)
    settings["INSTANCE_DIR"] = str(Path(settings["INSTANCE_DIR"]).resolve())
    try:
        workhours.check(settings)
    except ValueError as exc:
        raise SystemExit(f"pacslite: {exc}") from exc
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", str(settings["BOOKING_NO_SHOW_AFTER"])):
        raise SystemExit(f"pacslite: BOOKING_NO_SHOW_AFTER is a time of day, HH:MM, not {settings['BOOKING_NO_SHOW_AFTER']!r}")
    if settings["KIOSK_REPORT_PAPER"] not in ("a4", "a5"):
        raise SystemExit(f"pacslite: KIOSK_REPORT_PAPER is a4 or a5, not {settings['KIOSK_REPORT_PAPER']!r}")
    if not settings["STORAGE_DIR"]:
        settings["STORAGE_DIR"] = str(Path(settings["INSTANCE_DIR"]) / "storage")
    for key, name in (("DICOM_TLS_CERTIFICATE", "pacslite.crt"), ("DICOM_TLS_KEY", "pacslite.key")):
        if not settings[key]:
            settings[key] = str(Path(settings["INSTANCE_DIR"]) / "tls" / name)
    return settings


def _read_instance_config(path: Path) -> dict[str, Any]:
    """Upper-case names assigned in instance/config.py, like Flask's ``from_pyfile``."""
    if not path.is_file():
        return {}
    namespace: dict[str, Any] = {"__file__": str(path)}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    return {k: v for k, v in namespace.items() if k.isupper()}


def turnaround_hours(settings: Mapping[str, Any], modality_code: str, source: str, priority: str = "routine", *,
                     base: float | None = None, modality_hours: float | None = None,
                     cap: float | None = None) -> float:
    """The report target for an exam: ``base`` (a catalogue procedure's) if given, else
    ``TURNAROUND_BY_SOURCE["CT/emergency"]`` if set, else ``modality_hours`` (the modalities
    page's) or the modality's ``turnaround_hours``, else 24; for a STAT or urgent exam the
    shorter of that and ``cap`` (the procedure's) or ``TURNAROUND_BY_PRIORITY[priority]`` (a STAT
    head CT does not get 8 hours)."""
    hours = base
    if hours is None:
        hours = settings["TURNAROUND_BY_SOURCE"].get(f"{modality_code}/{source}")
    if hours is None:
        hours = modality_hours
    if hours is None:
        hours = (modality(settings, modality_code) or {}).get("turnaround_hours", 24)
    by_priority = cap if cap is not None else settings["TURNAROUND_BY_PRIORITY"].get(priority)
    return min(float(hours), float(by_priority)) if by_priority is not None else float(hours)


def turnaround_hours_sql(settings: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """:func:`turnaround_hours` without a catalogue procedure or the modalities page, as an SQL
    expression over the columns ``modality``, ``source`` and ``priority`` (and its parameters):
    what exams registered before the catalogue are given once (exams.fill_missing_targets)."""
    cases: list[str] = []
    params: list[Any] = []
    for key, hours in settings["TURNAROUND_BY_SOURCE"].items():
        modality_code, _, source = key.partition("/")
        cases.append("WHEN modality = ? AND source = ? THEN ?")
        params += [modality_code, source, float(hours)]
    for entry in settings["MODALITIES"]:
        cases.append("WHEN modality = ? THEN ?")
        params += [entry["code"], float(entry.get("turnaround_hours", 24))]
    base = f"(CASE {' '.join(cases)} ELSE 24.0 END)" if cases else "24.0"
    if not settings["TURNAROUND_BY_PRIORITY"]:
        return base, params
    urgent: list[str] = []
    for priority, hours in settings["TURNAROUND_BY_PRIORITY"].items():
        urgent.append("WHEN priority = ? THEN ?")
        params += [priority, float(hours)]
    return f"min({base}, (CASE {' '.join(urgent)} ELSE 1e9 END))", params


def review_required(settings: Mapping[str, Any], modality_code: str) -> bool:
    """Whether a final report of this modality is issued by a second radiologist (审核): the
    modality's ``"review": "review"`` or ``"single"``, else ``REPORT_REVIEW``."""
    entry = modality(settings, modality_code) or {}
    if entry.get("review") in ("review", "single"):
        return entry["review"] == "review"
    return bool(settings["REPORT_REVIEW"])


def modality(settings: Mapping[str, Any], code: str) -> dict[str, Any] | None:
    """The configured modality with this department code, or None."""
    for entry in settings["MODALITIES"]:
        if entry["code"] == code:
            return entry
    return None
