"""An audit record's details as readable lines in the user's language: (field, value) pairs such
as ("Phone", "139… → 138…") or ("", "Scheduled → In progress (first image filed)"); the field
names and coded values are translated, the rest is data. The raw JSON stays one click away on
the page, and in the CSV."""
from __future__ import annotations

import json
import re
from typing import Any

from flask_babel import gettext
from flask_babel import lazy_gettext as _l

from .labels import label

#: What a detail's key is called on the page (keys not listed are shown as they are).
FIELDS = {
    "accession_number": _l("Accession number"), "address": _l("Address"), "body_part": _l("Body part"),
    "birth_date": _l("Birth date"), "birth_date_estimated": _l("Birth date estimated from the age"), "bytes": _l("Bytes"), "cause": _l("Cause"), "charset": _l("Character set"),
    "clinical_note": _l("Clinical note"), "conflict": _l("Conflict"), "default_station_ae": _l("Default station"),
    "department": _l("Department"), "destination": _l("Destination"), "display_name": _l("Display name"),
    "error": _l("Error"), "exam": _l("Exam"), "files": _l("Files"), "finding": _l("Finding"),
    "format": _l("Format"), "host": _l("Host"), "images": _l("Images"), "images_acquired": _l("Images acquired"),
    "inpatient_number": _l("Inpatient number"), "instances": _l("Images"), "language": _l("Language"),
    "level": _l("Level"), "location": _l("Location"), "message": _l("Message"), "modality": _l("Modality"),
    "ms": _l("Milliseconds"), "name": _l("Name"), "name_en": _l("Name (English)"), "name_zh": _l("Name (Chinese)"),
    "national_id": _l("ID card number"), "outpatient_number": _l("Outpatient number"), "phone": _l("Phone"),
    "port": _l("Port"), "preparation": _l("Preparation"), "priority": _l("Priority"), "procedure": _l("Procedure"),
    "procedure_code": _l("Procedure code"), "reason": _l("Reason"), "requesting_department":
    _l("Requesting department"), "requesting_physician": _l("Requesting physician"), "result_class":
    _l("Result"), "revision": _l("Revision"), "rights": _l("May use"), "roles": _l("Roles"),
    "scheduled_at": _l("Scheduled"), "sex": _l("Sex"), "source": _l("Patient source"), "station_ae": _l("Station"),
    "status": _l("Status"), "studies": _l("Image sets"), "study_instance_uid": _l("Study Instance UID"),
    "target_hours": _l("Report target (hours)"), "turnaround_hours": _l("Report target (hours)"),
    "version": _l("Version"), "volume": _l("Volume"), "ward": _l("Ward"), "bed": _l("Bed"),
    "arrival": _l("Delivery"), "code": _l("Code"), "findings": _l("Findings"), "impression": _l("Impression"),
    "kind": _l("Kind"), "opened": _l("Opened"), "refused": _l("Refused"), "rules": _l("Rules"),
    "series": _l("Series"), "size": _l("Size"), "study": _l("Study"), "subject": _l("Subject"),
    "title": _l("Title"), "cleared": _l("Cleared"), "calling_ae": _l("Calling AE"), "what": _l("What"),
    "how": _l("How"), "path": _l("Path"), "endpoint": _l("Page"), "width": _l("Width"), "height": _l("Height"),
    "media_type": _l("File type"), "was_required": _l("Was required"), "instances_count": _l("Images"),
    "refiling": _l("Re-filing"), "rejected_reason": _l("Reason for rejection"), "finding_id": _l("Finding"),
    "any_host": _l("Any host"), "also_from": _l("Also from"), "tls": _l("Requires TLS"),
    "certificate": _l("Certificate (SHA-256)"), "created_by": _l("Created by"),
    "into": _l("Merged into"), "prior": _l("Prior record"), "survivor": _l("Surviving record"), "merge": _l("Merge"),
    "patient_id": _l("Patient ID"), "placer_order_number": _l("Order number"),
    "job": _l("Job"), "printer": _l("Printer"), "layout": _l("Layout"), "film_size": _l("Film size"),
    "orientation": _l("Orientation"), "films": _l("Films"), "item": _l("Item"), "place": _l("Where"),
    "owner": _l("Owner"), "section": _l("Section"), "folder": _l("Folder"), "added": _l("Added"),
    "replaced": _l("Replaced"), "rows": _l("Rows"), "instance": _l("Image"), "frame": _l("Frame"),
    "exams": _l("Exams"), "rule": _l("Rule"), "acknowledgement": _l("Acknowledgement"), "department_note": _l("Note"), "note": _l("Note"),
}
#: Keys whose values are codes with a word of their own (labels.LABELS' kinds).
CODED = {"sex": "sex", "source": "source", "priority": "priority", "status": "status", "from": "status",
         "to": "status", "roles": "role", "outcome": "outcome", "result_class": "result", "level": "report",
         "place": "pickup_place", "orientation": "orientation", "film_size": "film_size"}
#: Why an exam's state moved, as exams.py records it (English data), in the user's language.
CAUSES = {"first image filed": _l("first image filed"), "images re-filed to it": _l("images re-filed to it"),
          "technologist: exam done": _l("technologist: exam done"),
          "report signed preliminary": _l("report signed preliminary"), "report signed final": _l("report signed final")}
MPPS_CAUSE = re.compile(r"MPPS (IN PROGRESS|COMPLETED|DISCONTINUED) from (.*)")
MAX_LINES, MAX_VALUE = 12, 160


def describe(action: str, detail_text: str | None) -> list[tuple[str, str]]:
    """The detail of one audit record as (field, value) lines; empty when there is none."""
    try:
        detail = json.loads(detail_text or "{}")
    except ValueError:
        return [("", str(detail_text)[:MAX_VALUE])]
    if not isinstance(detail, dict):
        return [("", _value("", detail))]
    if action == "exam.state" and "from" in detail and "to" in detail:
        line = f"{label('status', detail['from'])} → {label('status', detail['to'])}"
        return [(str(FIELDS["status"]), f"{line} ({_cause(detail['cause'])})" if detail.get("cause") else line)]
    before, after = detail.get("before"), detail.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        return [_change(key, before.get(key), after.get(key)) for key in after][:MAX_LINES]
    lines = []
    for key, value in detail.items():
        if isinstance(value, list) and len(value) == 2 and action.endswith((".update", ".settings")):
            lines.append(_change(key, value[0], value[1]))
        elif value not in (None, "", [], {}):
            lines.append((_field(key), _value(key, value)))
    return lines[:MAX_LINES]


def _cause(cause: str) -> str:
    """A state move's cause in the user's language (a cancellation's reason is the desk's own words)."""
    if cause in CAUSES:
        return str(CAUSES[cause])
    mpps = MPPS_CAUSE.fullmatch(cause)
    if mpps:
        return gettext("MPPS %(state)s from %(ae)s", state=label("mpps", mpps.group(1)), ae=mpps.group(2))
    return cause


def _field(key: str) -> str:
    return str(FIELDS.get(key, key))


def _change(key: str, old: Any, new: Any) -> tuple[str, str]:
    return _field(key), f"{_value(key, old)} → {_value(key, new)}"


def _value(key: str, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return gettext("yes") if value else gettext("no")
    if isinstance(value, list):
        return ", ".join(_value(key, v) for v in value)[:MAX_VALUE]
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)[:MAX_VALUE]
    if key in CODED and isinstance(value, str):
        return label(CODED[key], value)
    text = str(value)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "…"
