"""Words shown for stored codes (sex, source, priority, state, role), in the user's language."""
from __future__ import annotations

from flask import g
from flask_babel import lazy_gettext as _l
from flask_babel import lazy_pgettext

LABELS = {
    "sex": {"M": _l("Male"), "F": _l("Female"), "O": _l("Other")},
    "source": {"outpatient": _l("Outpatient"), "inpatient": _l("Inpatient"), "emergency": _l("Emergency"),
               "physical_exam": _l("Physical exam")},
    "hl7_state": {"queued": _l("Waiting"), "sent": _l("Accepted by the HIS"), "failed": _l("Refused by the HIS")},
    "duplicate": {"national_id": _l("the same ID card number"), "name_birth_date": _l("the same name and birth date")},
    "patient_field": {"name": _l("Name"), "sex": _l("Sex"), "birth_date": _l("Birth date"), "phone": _l("Phone"),
                      "national_id": _l("ID card number")},
    "priority": {"stat": _l("STAT"), "urgent": _l("Urgent"), "routine": _l("Routine")},
    "status": {"ordered": _l("Ordered, not checked in"), "scheduled": lazy_pgettext("exam state", "Scheduled"), "in_progress": _l("In progress"), "performed": _l("Performed"),
               "preliminary": _l("Preliminary report"), "final": _l("Final report"),
               "discontinued": _l("Discontinued"), "cancelled": _l("Cancelled")},
    "booking": {"booked": lazy_pgettext("booking state", "Booked"), "moved": _l("Rebooked"),
                "cancelled": lazy_pgettext("booking state", "Cancelled"), "kept": _l("Came"),
                "no_show": _l("Did not come")},
    "queue": {"waiting": _l("Waiting"), "called": _l("Called"), "missed": _l("Missed"), "started": _l("Started")},
    "queue_reason": {"emergency": _l("Emergency"), "elderly": _l("Elderly"), "disabled": _l("Disabled")},
    "device": {"screen": _l("Waiting-room screen"), "kiosk": _l("Kiosk: check-in and reports")},
    "weekday": {"0": _l("Monday"), "1": _l("Tuesday"), "2": _l("Wednesday"), "3": _l("Thursday"),
                "4": _l("Friday"), "5": _l("Saturday"), "6": _l("Sunday")},
    "role": {"registrar": _l("Registrar"), "technologist": _l("Technologist"), "radiologist": _l("Radiologist"),
             "clinician": _l("Clinician"), "admin": _l("Administrator")},
    "outcome": {"success": _l("Success"), "failure": _l("Failure"), "denied": _l("Denied")},
    "charset": {"ISO_IR 192": _l("Unicode UTF-8 (ISO_IR 192)"), "GB18030": _l("Chinese GB18030"),
                "ISO 2022 IR 58": _l("Chinese GB2312 with code extensions (ISO 2022 IR 58), older consoles"),
                "ISO_IR 100": _l("Latin-1 (ISO_IR 100), names in pinyin")},
    "rejection": {"unknown_calling_ae": _l("Unknown calling AE title"),
                  "wrong_called_ae": _l("Called a wrong AE title"),
                  "wrong_host": _l("A configured AE title from another address"),
                  "tls_required": _l("Not over TLS, which this AE requires"),
                  "wrong_certificate": _l("Not the certificate pinned for this AE"),
                  "tls_handshake": _l("TLS handshake failed (no trusted certificate, old TLS version or cipher)"),
                  "too_many_from_address": _l("More associations from its address than allowed, counted over every pacslite process")},
    "ae_right": {"store": _l("Send images"), "worklist": _l("Query the worklist"), "query": _l("Query images"),
                 "retrieve": _l("Retrieve images"), "mpps": _l("Report performed procedures (MPPS)"),
                 "commitment": _l("Ask for storage commitment")},
    "context_refusal": {"not_permitted": _l("Not permitted for this AE"), "abstract_syntax_not_supported": _l("Service not supported"),
                        "transfer_syntaxes_not_supported": _l("None of its transfer syntaxes supported"),
                        "rejected_by_user": _l("Refused"), "rejected": _l("Refused")},
    "quarantine": {"no_accession": _l("No accession number"), "unknown_accession": _l("Unknown accession number"),
                   "patient_id_mismatch": _l("Patient ID does not match the exam"),
                   "demographics_mismatch": _l("Demographics do not match the patient (possible wrong patient)"),
                   "exam_cancelled": _l("The exam was cancelled"),
                   "duplicate_conflict": _l("Sent again with different content"),
                   "after_filing": _l("Filed to the wrong exam (found after filing)")},
    "mpps": {"IN PROGRESS": _l("In progress"), "COMPLETED": _l("Completed"), "DISCONTINUED": _l("Discontinued")},
    "commitment": {"pending": _l("Waiting to be sent"), "sending": _l("Sending"), "delivered": _l("Delivered"),
                   "failed": _l("Not delivered")},
    "result": {"normal": _l("Normal"), "abnormal": _l("Abnormal"), "critical": _l("Critical finding (危急值)")},
    "report": {"": _l("Not started"), "draft": _l("Draft"), "preliminary": _l("Preliminary"),
               "final": _l("Final")},
    "candidate": {"accession_equal": _l("same accession number"),
                  "accession_typo": _l("accession number one character off"),
                  "accession_close": _l("accession number two characters off"),
                  "patient_id_equal": _l("same patient ID"), "patient_id_typo": _l("patient ID one character off"),
                  "name_similar": _l("same name (pinyin or ideographs)"), "birth_date_equal": _l("same birth date"),
                  "sex_equal": _l("same sex"), "same_modality": _l("same modality"),
                  "scheduled_within_day": _l("scheduled within a day of the acquisition"),
                  "station_is_caller": _l("scheduled on the sending station"),
                  "study_uid_equal": _l("the Study Instance UID the worklist gave it"),
                  "accession_equal_unchecked": _l("same accession number (not one pacslite made)"),
                  "mpps_from_caller": _l("the sending station reported performing it (MPPS)"),
                  "awaiting_images": _l("still waiting for its images"),
                  "scheduled_within_hours": _l("scheduled within two hours of the acquisition"),
                  "offered_to_caller": _l("offered to the sending station by the worklist"),
                  "not_offered_to_caller": _l("never offered to the sending station by the worklist"),
                  "body_part_equal": _l("same body part"), "body_part_differs": _l("another body part"),
                  "holds_study_from_caller": _l("already has its own images from this station that day"),
                  "other_modality": _l("another modality"), "birth_date_differs": _l("another birth date"),
                  "sex_differs": _l("another sex")},
    "alert": {"missing_images": _l("Missing images"), "unfiled_images": _l("Unfiled images"),
              "stale_registration": _l("Stale registration"), "overdue_report": _l("Overdue report"),
              "conflict": _l("Images filed to a cancelled exam"), "storage_low": _l("Storage running out"),
              "backup_space": _l("Backups will not fit on their disk"),
              "ae_any_host": _l("A DICOM AE is accepted from any address"),
              "file_missing": _l("Stored file missing"), "file_changed": _l("Stored file changed"),
              "forward_failed": _l("Sending to another AE failed"),
              "his_unreachable": _l("The HIS does not accept results or status"),
              "incomplete_transmission": _l("Incomplete transmission"),
              "commitment_failed": _l("Storage commitment report not delivered"),
              "critical_finding": _l("Critical finding not yet acknowledged by the ward"),
              "print_failed": _l("Films not printed (the printer refused the job or cannot be reached)")},
    "film_state": {"queued": _l("Waiting for the printer"), "printing": _l("Printing"), "printed": _l("Printed"),
                   "failed": _l("Failed")},
    "window_preset": {"image": _l("As in the image"), "lung": _l("Lung"), "mediastinum": _l("Mediastinum"),
                      "abdomen": _l("Abdomen"), "liver": _l("Liver"), "bone": _l("Bone"), "brain": _l("Brain"),
                      "stroke": _l("Stroke (narrow brain)")},
    "image_grade": {"A": _l("甲 (excellent)"), "B": _l("乙 (good)"), "C": _l("丙 (poor)"), "D": _l("丁 (not diagnostic)"),
                    "3": _l("3 (excellent)"), "2": _l("2 (good)"), "1": _l("1 (poor)"), "0": _l("0 (not diagnostic)")},
    "grade_reason": {"positioning": _l("Positioning"), "coverage": _l("Coverage"), "artefacts": _l("Artefacts"),
                     "exposure": _l("Exposure"), "other": _l("Other")},
    "qc_why": {"sample": _l("Sampled"), "critical": _l("Critical finding")},
    "template_level": {"department": _l("The department"), "section": _l("A section"), "personal": _l("My own")},
    "pickup_place": {"desk": _l("at the desk"), "kiosk": _l("at a kiosk")},
    "orientation": {"PORTRAIT": _l("Portrait"), "LANDSCAPE": _l("Landscape")},
    "film_size": {"8INX10IN": _l("8 × 10 in"), "10INX12IN": _l("10 × 12 in"), "11INX14IN": _l("11 × 14 in"),
                  "14INX14IN": _l("14 × 14 in"), "14INX17IN": _l("14 × 17 in")},
    "outbound": {"queued": _l("Queued"), "sending": _l("Sending"), "sent": _l("Sent"), "failed": _l("Failed")},
    "alert_state": {"open": _l("Open"), "resolved": _l("Resolved"), "cleared": _l("Cleared by itself"),
                    "": _l("All")},
    "job": {"build_volume": _l("Building a volume"), "verify_volume": _l("Verifying a volume"),
            "offsite_copy": _l("Off-site copy"), "scrub": _l("Scrub"), "import": _l("Import")},
    "job_state": {"queued": _l("Queued"), "running": _l("Running"), "paused": _l("Paused"), "done": _l("Done"),
                  "failed": _l("Failed")},
    "volume": {"planned": _l("Planned"), "built": _l("Built"), "verified": _l("Verified"),
               "failed": _l("Verification failed")},
    "import": {"filed": _l("Filed"), "quarantined": _l("Quarantined"), "duplicate": _l("Already stored"),
               "conflict": _l("Kept aside (different content)"), "restored": _l("Back online"), "failed": _l("Refused")},
    "audit_action": {
        "login": _l("Logged in"), "logout": _l("Logged out"), "access.denied": _l("Was refused a page or service"),
        "ae.add": _l("Added a DICOM AE"), "ae.echo": _l("Tested a DICOM AE (C-ECHO)"),
        "ae.update": _l("Changed a DICOM AE"), "ae.remove": _l("Removed a DICOM AE"),
        "alert.resolve": _l("Resolved an alert"),
        "commitment.request": _l("Asked for storage commitment"), "commitment.report": _l("Storage commitment report"),
        "critical.report": _l("Sent a critical finding"), "critical.acknowledge": _l("Acknowledged a critical finding"),
        "critical.escalate": _l("A critical finding escalated (not acknowledged in time)"),
        "dicom.associate": _l("DICOM association"), "dicom.service": _l("DICOM service used"),
        "exam.register": _l("Registered an exam"), "exam.targets": _l("Gave earlier exams their report target"), "exam.cancel": _l("Cancelled an exam"),
        "exam.change": _l("Changed an exam's order details"), "exam.check_in": _l("Checked a patient in for an ordered exam"),
        "exam.patient": _l("An exam moved to another patient record (merge)"),
        "patient.merge": _l("Merged a patient record into another"), "patient.unmerge": _l("A merged patient record stands on its own again"),
        "patient.merge_undo": _l("Undid a patient merge"),
        "hl7.process_again": _l("Processed an HL7 message again"),
        "booking.hours": _l("Changed a station's booking timetable"),
        "booking.close_day": _l("Closed a day for booking"), "booking.reopen_day": _l("Opened a closed day for booking again"),
        "booking.book": _l("Booked an exam into a slot"), "booking.cancel": _l("Cancelled an exam's booking"),
        "booking.no_show": _l("The patient did not come to a booked exam"),
        "queue.check_in": _l("Checked a patient in: a queue number"), "queue.call": _l("Called a patient"),
        "queue.call_again": _l("Called a patient again"), "queue.skip": _l("Skipped a patient who did not come"),
        "queue.start": _l("Started an exam from the queue"),
        "film.request": _l("Sent films to a printer"), "film.print": _l("Films printed"),
        "pickup.hand_out": _l("Handed out a report or films"),
        "pickup.kiosk_refused": _l("A kiosk refused to print a report (wrong answer)"),
        "queue.screen_add": _l("Added a waiting-room screen"), "queue.kiosk_add": _l("Added a check-in kiosk"),
        "queue.screen_revoke": _l("Revoked a waiting-room screen"), "queue.kiosk_revoke": _l("Revoked a check-in kiosk"),
        "exam.done": _l("Marked an exam done"), "exam.state": _l("Exam state changed"),
        "exam.images_missing": _l("Flagged images missing"), "exam.images_missing_clear": _l("Images-missing flag cleared"),
        "exam.receipt_print": _l("Printed a receipt"), "exam.request_form": _l("Attached a request form"),
        "forward.rule_add": _l("Added a forward rule"), "forward.rule_remove": _l("Removed a forward rule"),
        "forward.send": _l("Sent images to another AE"),
        "image.file": _l("Images filed"), "image.quarantine": _l("Images quarantined"),
        "image.duplicate_conflict": _l("An image sent again with different content kept aside"),
        "image.import": _l("Imported images"), "image.import_upload": _l("Uploaded files to import"),
        "image.refile": _l("Re-filed images"), "image.refile_undo": _l("Undid a re-filing"),
        "image.reject": _l("Rejected images"), "image.purge": _l("Purged images"), "image.restore": _l("Restored images"),
        "image.transfer": _l("Images retrieved or sent"), "image.view": _l("Viewed images"),
        "job.start": _l("Started a job"), "job.done": _l("A job finished"), "job.fail": _l("A job failed"),
        "mpps.create": _l("Procedure step started (MPPS)"), "mpps.set": _l("Procedure step updated (MPPS)"),
        "mpps.link": _l("Linked a procedure step to an exam"),
        "modality.settings": _l("Changed a modality's report target or location"),
        "procedure.add": _l("Added a procedure to the catalogue"), "procedure.update": _l("Changed a procedure"),
        "procedure.retire": _l("Retired a procedure"), "procedure.restore": _l("Offered a procedure again"),
        "patient.create": _l("Created a patient"), "patient.update": _l("Changed a patient's details"),
        "phrase.add": _l("Added a report phrase"), "phrase.update": _l("Changed a report phrase"),
        "phrase.remove": _l("Removed a report phrase"),
        "quality.grade": _l("Graded an exam's image quality"),
        "qc.sample": _l("Sampled reports for quality control"), "qc.score": _l("Scored a report's quality"),
        "report.key_image": _l("Marked a key image"), "report.key_image_remove": _l("Removed a key image"),
        "template.add": _l("Added a report template"), "template.update": _l("Changed a report template"),
        "template.remove": _l("Removed a report template"), "template.import": _l("Imported report templates"),
        "report.save": _l("Saved a report draft"), "report.sign": _l("Signed a report"),
        "report.amend": _l("Started a report amendment"), "report.print": _l("Printed a report"),
        "report.take": _l("Took an exam to report"), "report.release": _l("Released an exam"),
        "sweep.run": _l("The sweep ran"), "token.create": _l("Created an API token"),
        "user.create": _l("Created a user"), "user.update": _l("Changed a user"),
        "user.reset_password": _l("Reset a password"), "user.change_password": _l("Changed own password"),
        "user.language": _l("Chose a language"), "user.signature": _l("Uploaded a signature image"),
        "user.signature_remove": _l("Removed a signature image"),
        "volume.plan": _l("Planned an archive volume"), "volume.build": _l("Built an archive volume"),
        "volume.verify": _l("Verified an archive volume"), "volume.release": _l("Released a volume's studies"),
        "volume.restore": _l("Brought a volume's studies back"),
    },
    "age_unit": {"years": _l("%(n)d y"), "months": _l("%(n)d mo"), "days": _l("%(n)d d")},
}


def label(kind: str, code: str | None) -> str:
    """The translated word for ``code``; the code itself when there is none. Translated once a
    request (a list of 300 exams asks for 900 labels; each translation costs 25 µs)."""
    if code is None:
        return ""
    known = g.setdefault("labels", {})
    text = known.get((kind, code))
    if text is None:
        text = known[(kind, code)] = str(LABELS.get(kind, {}).get(code, code))
    return text


def uid_name(uid: str) -> str:
    """A UID's name in the DICOM standard (``Study Root Query/Retrieve Information Model - FIND``),
    or empty when it has none (a private UID)."""
    from pydicom.uid import UID
    name = UID(uid).name
    return "" if name == uid else name


def options(kind: str) -> list[tuple[str, str]]:
    return [(code, str(text)) for code, text in LABELS[kind].items()]


#: Actors that are not people, as the pages name them.
_NOT_PEOPLE = {"system": _l("system"), "cli": _l("command line")}


def person(name: str | None) -> str:
    """A name for a page: pacslite itself and the command line in the user's language."""
    return str(_NOT_PEOPLE[name]) if name in _NOT_PEOPLE else (name or "")


def dicom_sex(value: str | None) -> str:
    """A DICOM sex code (M, F, O) as a word; anything else as it is."""
    return str(LABELS["sex"][value]) if value in LABELS["sex"] else (value or "")

