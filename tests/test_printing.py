"""Film printing (胶片打印, issue 31) to a real DICOM print SCP, DCMTK's dcmprscp, which keeps
what it received (its hard-copy grayscale images and the stored print objects with the film
boxes): checked against what pacslite rendered. The printer's part runs in a private network
namespace (tests/print_scenario.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydicom.uid import generate_uid

from pacslite.core import audit
from pacslite.pacs import filing, printing
from pacslite.pacs.index import Source
from pacslite.ris import aes, patients
from tests.conftest import EXAM_FORM, ROOT, csrf_token
from tests.dicomkit import make_ct


def _scenario(tmp_path) -> dict:
    script = (f'ip link set lo up && PACSLITE_TEST_POSTGRESQL_VIA_SOCKET=1 exec "{sys.executable}"'
              f' -m tests.print_scenario "{tmp_path}"')
    done = subprocess.run(["unshare", "--net", "--map-root-user", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_films_reach_dcmprscp_in_their_layout_with_each_images_window_and_a_gone_printer_keeps_the_job(tmp_path):
    result = _scenario(tmp_path)
    assert result["tried"] == 1
    assert result["job"] == {"state": "printed", "attempts": 1, "last_error": "", "films": 2}
    # two films of 2×2 on 14×17 inch portrait, four image boxes and one, each holding exactly the
    # picture pacslite rendered for that position, pixel for pixel
    expected = result["expected"]
    assert [len(film) for film in expected] == [4, 1]
    assert all(p["rows"] == 64 and p["columns"] == 64 for film in expected for p in film)
    received = sorted(result["received"], key=lambda film: -len(film["images"]))
    assert [{key: film[key] for key in ("format", "size", "orientation")} for film in received] == \
        [{"format": "STANDARD\\2,2", "size": "14INX17IN", "orientation": "PORTRAIT"}] * 2
    assert [film["images"] for film in received] == expected
    # the first image went in the window the technologist chose, not its own
    assert expected[0][0]["pixels"] != result["first_in_its_header_window"]
    assert result["audited"] == 1
    # counted: films per modality, and per day and modality
    assert result["films"]["by_modality"] == {"CT": 2} and result["films"]["total"] == 2
    assert list(result["films"]["by_day"].values()) == [2] and list(result["films"]["by_day"])[0].endswith(" CT")
    # the films wait at the desk until handed out
    assert result["pickup"] == {"waiting": True, "listed": [result["accession"]], "after": False, "films": 2,
                                "listed_after": []}
    # the printer gone: the job waits for the next try, with why, and an open alert
    assert result["gone"]["state"] == "queued" and result["gone"]["attempts"] == 1
    assert "cannot associate with DRYLASER" in result["gone"]["last_error"]
    assert result["alert"] == "open"


@pytest.fixture()
def exam(app, conn):
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "DRYLASER", "modality": "HC", "host": "127.0.0.1", "port": 104})
    data = dict(EXAM_FORM)
    accession = patients.register_exam(conn, audit.SYSTEM, app.config, data, data).accession_number
    return patients.get_exam(conn, accession)


FORM = {"printer": "DRYLASER", "layout": "2x2", "film_size": "14INX17IN", "orientation": "PORTRAIT"}


@pytest.mark.parametrize("change, field", [({"printer": "OTHER"}, "printer"), ({"layout": "5x5"}, "layout"),
                                           ({"film_size": "A4"}, "film_size"), ({"orientation": "UP"}, "orientation")])
def test_a_bad_print_request_is_refused_and_queues_nothing(conn, exam, change, field):
    with pytest.raises(printing.ValidationError) as refused:
        printing.request(conn, audit.Actor("tech"), exam, {**FORM, **change}, [{"instance": 1}])
    assert refused.value.field == field
    assert conn.execute("SELECT COUNT(*) FROM print_jobs").fetchone()[0] == 0


def test_images_of_another_exam_or_none_cannot_be_printed(conn, exam):
    with pytest.raises(printing.ValidationError, match="Choose"):
        printing.request(conn, audit.Actor("tech"), exam, FORM, [])
    with pytest.raises(printing.ValidationError):
        printing.picks_from(conn, exam, ["999"], {})
    assert conn.execute("SELECT COUNT(*) FROM print_jobs").fetchone()[0] == 0


def _with_images(app, conn, exam, tmp_path, count: int) -> int:
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in range(1, count + 1):
        path = tmp_path / f"{number}.dcm"
        make_ct(path, accession=exam["accession_number"], patient_id=exam["patient_id"], study_uid=study_uid,
                series_uid=series_uid, instance_number=number, size=32, seed=number)
        filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source("CT01", "127.0.0.1"))
    return conn.execute("SELECT id FROM series").fetchone()[0]


def test_the_technologist_chooses_images_sees_the_films_and_sends_them(app, conn, exam, client_as, tmp_path):
    series_id = _with_images(app, conn, exam, tmp_path, 6)
    ids = [r[0] for r in conn.execute("SELECT id FROM instances ORDER BY CAST(instance_number AS INTEGER)")]
    accession = exam["accession_number"]
    tech = client_as("technologist")
    page = tech.get(f"/exams/{accession}/films")
    assert page.status_code == 200 and b"DRYLASER" in page.data and f'value="{series_id}"'.encode() in page.data
    # images 2, 4 and 6 in the lung window, 2×2: one film of three, previewed as it will print
    chosen = {"series": str(series_id), "layout": "2x2", f"from-{series_id}": "2", f"every-{series_id}": "2",
              f"preset-{series_id}": "lung"}
    preview = tech.get(f"/exams/{accession}/films", query_string=chosen, headers={"HX-Request": "true"})
    html = preview.get_data(as_text=True)
    assert html.count('class="film-image"') == 3 and html.count('class="film columns-2"') == 1
    assert [f"/instances/{i}/render.png" in html for i in ids] == [False, True, False, True, False, True]
    assert "wc=-600.0" in html and "ww=1500.0" in html
    # sent, the fourth image in the bone window of its own
    form = {**chosen, "printer": "DRYLASER", "film_size": "14INX17IN", "orientation": "PORTRAIT",
            f"preset-i{ids[3]}": "bone", "csrf_token": csrf_token(tech, f"/exams/{accession}/films")}
    sent = tech.post(f"/exams/{accession}/films", data=form)
    assert sent.status_code == 302
    job = conn.execute("SELECT * FROM print_jobs").fetchone()
    assert (job["films"], job["state"], job["layout"]) == (1, "queued", "2x2")
    assert [(p["instance"], p["center"], p["width"]) for p in json.loads(job["images"])] == \
        [(ids[1], -600, 1500), (ids[3], 400, 1800), (ids[5], -600, 1500)]
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'film.request' AND actor = ?",
                        ("u_technologist",)).fetchone()[0] == 1
    shown = tech.get(f"/exams/{accession}").get_data(as_text=True)
    assert 'id="films"' in shown and "Waiting for the printer" in shown
    # a wrong form: the page again with why, nothing queued
    for wrong in ({"layout": "9x9"}, {f"from-{series_id}": "two"}, {"series": "999999"}):
        refused = tech.post(f"/exams/{accession}/films", data={**form, **wrong})
        assert refused.status_code == 400 and b'role="alert"' in refused.data
    assert conn.execute("SELECT COUNT(*) FROM print_jobs").fetchone()[0] == 1


@pytest.mark.parametrize("behaviour", ["no_print_service", "aborts", "fewer_boxes"])
def test_a_printer_that_fails_or_aborts_leaves_the_job_queued_with_why(app, conn, exam, tmp_path, behaviour):
    """A print SCP (pynetdicom) that implements nothing, aborts the association at the film
    session, or makes fewer image boxes than the film needs: nothing hangs, the job waits for its
    next try with the reason, an alert is open."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import BasicGrayscalePrintManagementMeta
    from pacslite.dicom import sender
    from tests.conftest import free_port

    def on_create(event):
        if behaviour == "aborts":
            event.assoc.abort()
            return 0x0000, None
        made = Dataset()
        if event.request.AffectedSOPClassUID == "1.2.840.10008.5.1.1.2":  # the film box: one image box
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.1.4", generate_uid()
            made.ReferencedImageBoxSequence = [item]
        return 0x0000, made

    scp = AE("DRYLASER")
    scp.add_supported_context(BasicGrayscalePrintManagementMeta)
    port = free_port()
    handlers = [] if behaviour == "no_print_service" else [(evt.EVT_N_CREATE, on_create)]
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        aes.update_ae(conn, audit.SYSTEM, "DRYLASER",
                      {"ae_title": "DRYLASER", "modality": "HC", "host": "127.0.0.1", "port": port})
        _with_images(app, conn, exam, tmp_path, 2)
        picks = [{"instance": r[0]} for r in conn.execute("SELECT id FROM instances")]
        job_id = printing.request(conn, audit.Actor("tech"), exam, {**FORM, "layout": "2x2"}, picks)
        assert printing.run_due(conn, app.config, sender.print_films) == 1
    finally:
        server.shutdown()
    job = printing.get_job(conn, job_id)
    assert (job["state"], job["attempts"]) == ("queued", 1) and job["last_error"], dict(job)
    if behaviour == "fewer_boxes":
        assert "made 1 image boxes for 2 images" in job["last_error"]
    assert conn.execute("SELECT state FROM alerts WHERE rule = 'print_failed'").fetchone()[0] == "open"
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'film.print'").fetchone()[0] == 0
