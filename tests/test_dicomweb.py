"""DICOMweb (issue 16) against the real process, with dicomweb-client (PyPI) as the independent
client: QIDO-RS search with the C-FIND rules, WADO-RS retrieval (byte for byte with
transfer-syntax=*), metadata, frames, rendered, STOW-RS through the one ingest, WADO-URI,
tokens and roles, and hostile bodies that must change nothing."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from requests.exceptions import HTTPError

from tests import server as pacs_server
from tests.dicomkit import make_ct


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """张三's CT (3 images, sent with storescu, filed), a stray study under his patient ID
    (quarantined: never found), 李四's MR (released: offline); a token per role."""
    instance = tmp_path_factory.mktemp("dicomweb")
    from tests.conftest import flask_cli
    assert flask_cli(instance, "ae", "add", "STORESCU").returncode == 0
    running = pacs_server.Pacs(instance)
    work = tmp_path_factory.mktemp("dicomweb-files")
    zhang = running.register(patient_id="DW0001", name="张三", sex="M", birth_date="1980-02-03", modality="CT",
                             procedure="胸部CT平扫", station_ae="")
    running.zhang = zhang
    running.files = running.send_series(work / "zhang", 3, accession=zhang.accession_number, patient_id="DW0001",
                                        name="ZHANG^SAN", sex="M", birth_date="19800203", size=64)
    running.stray = running.send_series(work / "stray", 1, accession="NOSUCH01", patient_id="DW0001",
                                        name="ZHANG^SAN", sex="M", birth_date="19800203")
    li = running.register(patient_id="DW0002", name="李四", sex="F", birth_date="1975-06-07", modality="MR",
                          procedure="头颅MR", station_ae="")
    running.li_files = running.send_series(work / "li", 1, accession=li.accession_number, patient_id="DW0002",
                                           name="LI^SI", sex="F", birth_date="19750607")
    conn = running.conn()
    conn.execute("UPDATE instances SET released_at = '2026-11-01T00:00:00+00:00' WHERE sop_instance_uid = ?",
                 (dcmread(running.li_files[0]).SOPInstanceUID,))
    conn.commit()
    conn.close()
    running.tokens = {role: running.token(f"dw_{role}", role)
                      for role in ("radiologist", "technologist", "registrar", "clinician")}
    running.work = work
    yield running
    assert running.server.stop() == 0


def client(pacs, role: str | None) -> DICOMwebClient:
    headers = {"Authorization": f"Bearer {pacs.tokens[role]}"} if role else {}
    return DICOMwebClient(url=f"{pacs.server.url}/dicom-web", headers=headers)


def uids(path: Path) -> tuple[str, str, str]:
    ds = dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def parts_of(response: requests.Response) -> list[tuple[str, bytes]]:
    """The parts of a multipart/related response: (content type, body), split by hand."""
    boundary = re.search(r"boundary=([^;\s]+)", response.headers["Content-Type"]).group(1).strip('"')
    chunks = response.content.split(b"--" + boundary.encode())
    parts = []
    for chunk in chunks[1:-1]:
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        content_type = re.search(rb"Content-Type: ([^\r\n]+)", head, re.I).group(1).decode()
        parts.append((content_type, body[:-2]))
    return parts


def stored_path(pacs, sop_uid: str) -> Path:
    relative = pacs.query("SELECT storage_path FROM instances WHERE sop_instance_uid = ?", sop_uid)[0][0]
    return Path(pacs.settings["STORAGE_DIR"]) / relative


def test_dicomweb_client_searches_retrieves_and_stores_with_a_token(pacs) -> None:
    reader = client(pacs, "radiologist")
    studies = reader.search_for_studies(search_filters={"PatientID": "DW0001"})
    assert len(studies) == 1  # the quarantined study under the same patient ID is never found
    study = studies[0]
    study_uid, series_uid, _ = uids(pacs.files[0])
    assert study["0020000D"]["Value"] == [study_uid]
    assert study["00100010"]["Value"] == [{"Alphabetic": "ZHANG^SAN", "Ideographic": "张^三"}]
    assert study["00080050"]["Value"] == [pacs.zhang.accession_number]
    assert study["00201208"]["Value"] == [3]
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so only the path can be compared here
    assert study["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{study_uid}")
    by_name = reader.search_for_studies(search_filters={"PatientName": "张*"})
    assert [s["0020000D"]["Value"][0] for s in by_name] == [study_uid]

    series = reader.search_for_series(study_uid)
    assert [s["0020000E"]["Value"][0] for s in series] == [series_uid]
    instances = reader.search_for_instances(study_uid, series_uid)
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(uids(f)[2] for f in pacs.files)

    retrieved = reader.retrieve_study(study_uid)
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(uids(f)[2] for f in pacs.files)
    assert all(str(ds.PatientID) == "DW0001" for ds in retrieved)

    metadata = reader.retrieve_series_metadata(study_uid, series_uid)
    assert len(metadata) == 3
    first = metadata[0]
    assert first["00100010"]["Value"] == [{"Alphabetic": "ZHANG^SAN", "Ideographic": "张^三"}]
    assert first["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
    assert first["00280010"]["Value"] == [64]

    sop_uid = first["00080018"]["Value"][0]
    original = dcmread(stored_path(pacs, sop_uid))
    frames = reader.retrieve_instance_frames(study_uid, series_uid, sop_uid, frame_numbers=[1])
    assert frames == [original.PixelData]
    rendered = reader.retrieve_instance_rendered(study_uid, series_uid, sop_uid, media_types=("image/jpeg",))
    assert Image.open(io.BytesIO(rendered)).size == (64, 64)

    writer = client(pacs, "technologist")
    new = pacs.work / "stowed.dcm"
    ds = make_ct(new, study_uid=study_uid, series_uid=generate_uid(), accession=pacs.zhang.accession_number,
                 patient_id="DW0001", name="ZHANG^SAN", sex="M", birth_date="19800203")
    answer = writer.store_instances([ds])
    assert answer.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert "FailedSOPSequence" not in answer
    assert len(reader.search_for_series(study_uid)) == 2
    assert reader.retrieve_instance(study_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID).SOPInstanceUID == \
        ds.SOPInstanceUID


def test_transfer_syntax_any_gives_the_stored_bytes_unchanged(pacs) -> None:
    study_uid, series_uid, sop_uid = uids(pacs.files[1])
    url = f"{pacs.server.url}/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    headers = {"Authorization": f"Bearer {pacs.tokens['clinician']}",
               "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    response = requests.get(url, headers=headers, timeout=30)
    assert response.status_code == 200
    [(content_type, body)] = parts_of(response)
    assert content_type == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    assert body == stored_path(pacs, sop_uid).read_bytes()
    study = requests.get(f"{pacs.server.url}/dicom-web/studies/{study_uid}", headers=headers, timeout=30)
    retrieved = {body for _, body in parts_of(study)}
    assert {stored_path(pacs, uids(f)[2]).read_bytes() for f in pacs.files} <= retrieved


def test_a_compressed_image_goes_as_stored_or_decompressed_as_asked(pacs) -> None:
    path = pacs.work / "rle.dcm"
    study_uid, series_uid, _ = uids(pacs.files[0])
    ds = make_ct(path, study_uid=study_uid, series_uid=generate_uid(), accession=pacs.zhang.accession_number,
                 patient_id="DW0001", name="ZHANG^SAN", sex="M", birth_date="19800203", size=32)
    pixels = ds.PixelData
    ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    client(pacs, "technologist").store_instances([dcmread(path)])
    sop_uid, series_uid = ds.SOPInstanceUID, ds.SeriesInstanceUID
    base = f"{pacs.server.url}/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    auth = {"Authorization": f"Bearer {pacs.tokens['radiologist']}"}
    as_stored = requests.get(base, headers={**auth, "Accept": 'multipart/related; type="application/dicom";'
                                                              ' transfer-syntax=*'}, timeout=30)
    [(content_type, body)] = parts_of(as_stored)
    assert content_type.endswith(RLELossless) and body == stored_path(pacs, sop_uid).read_bytes()
    default = requests.get(base, headers={**auth, "Accept": 'multipart/related; type="application/dicom"'},
                           timeout=30)
    [(content_type, body)] = parts_of(default)
    decoded = dcmread(io.BytesIO(body))
    assert content_type.endswith(ExplicitVRLittleEndian)
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and decoded.PixelData == pixels
    reader = client(pacs, "radiologist")
    assert reader.retrieve_instance_frames(study_uid, series_uid, sop_uid, [1]) == [pixels]
    raw = reader.retrieve_instance_frames(study_uid, series_uid, sop_uid, [1],
                                          media_types=(("application/octet-stream", "*"),))
    assert raw != [pixels] and len(raw[0]) > 0
    refused = requests.get(base, headers={**auth, "Accept": 'multipart/related; type="application/dicom";'
                                                            ' transfer-syntax=1.2.840.10008.1.2.4.50'}, timeout=30)
    assert refused.status_code == 406


def test_search_follows_the_c_find_rules(pacs) -> None:
    reader = client(pacs, "clinician")
    li = reader.search_for_studies(search_filters={"PatientID": "DW0002"})
    assert li[0]["00080056"]["Value"] == ["OFFLINE"]
    assert "00080052" not in li[0]  # QueryRetrieveLevel is C-FIND's, not in PS3.18's answer lists
    assert all("00080052" not in answer for answer in reader.search_for_series(li[0]["0020000D"]["Value"][0]))
    study_uid = li[0]["0020000D"]["Value"][0]
    with pytest.raises(HTTPError) as refused:
        reader.retrieve_study(study_uid)
    assert refused.value.response.status_code == 404 and "offline" in refused.value.response.text
    stray_study = uids(pacs.stray[0])[0]
    assert reader.search_for_studies(search_filters={"StudyInstanceUID": stray_study}) == []
    with pytest.raises(HTTPError) as hidden:
        reader.retrieve_study(stray_study)
    assert hidden.value.response.status_code == 404
    fuzzy = reader.search_for_studies(search_filters={"PatientName": "zhang"}, fuzzymatching=True)
    assert len(fuzzy) == 1
    assert reader.search_for_studies(search_filters={"PatientName": "zhang"}) == []
    both = reader.search_for_studies(search_filters={"PatientID": "DW000*"})
    assert len(both) == 2
    paged = reader.search_for_studies(search_filters={"PatientID": "DW000*"}, limit=1, offset=1)
    assert len(paged) == 1 and paged[0] != both[0] and paged[0] in both
    with_fields = reader.search_for_series(search_filters={"PatientID": "DW0001"}, fields=["all"])
    assert all(s["00100020"]["Value"] == ["DW0001"] for s in with_fields)
    url = f"{pacs.server.url}/dicom-web/studies"
    auth = {"Authorization": f"Bearer {pacs.tokens['clinician']}"}
    for bad in ({"NoSuchAttribute": "x"}, {"limit": "-1"}, {"StudyDate": "2026-99"},
                {"PatientName": "*" * 2000}):
        response = requests.get(url, params=bad, headers=auth, timeout=30)
        assert response.status_code == 400, (bad, response.status_code)
        assert "error" in response.json()


def test_credentials_and_roles(pacs) -> None:
    study_uid = uids(pacs.files[0])[0]
    with pytest.raises(HTTPError) as anonymous:
        client(pacs, None).search_for_studies()
    assert anonymous.value.response.status_code == 401
    with pytest.raises(HTTPError) as registrar:
        client(pacs, "registrar").search_for_studies()
    assert registrar.value.response.status_code == 403
    with pytest.raises(HTTPError) as registrar_retrieve:
        client(pacs, "registrar").retrieve_study(study_uid)
    assert registrar_retrieve.value.response.status_code == 403
    ds = make_ct(pacs.work / "refused.dcm", accession=pacs.zhang.accession_number, patient_id="DW0001")
    before = pacs.query("SELECT COUNT(*) FROM instances")[0][0]
    for role in ("registrar", "radiologist", None):
        with pytest.raises(HTTPError) as refused:
            client(pacs, role).store_instances([ds])
        assert refused.value.response.status_code == (401 if role is None else 403)
    assert pacs.query("SELECT COUNT(*) FROM instances")[0][0] == before
    bogus = requests.get(f"{pacs.server.url}/dicom-web/studies", timeout=30,
                         headers={"Authorization": "Bearer not-a-token"})
    assert bogus.status_code == 401


def test_views_are_audited_once_per_series(pacs) -> None:
    study_uid, series_uid, _ = uids(pacs.files[0])
    reader = client(pacs, "clinician")
    reader.retrieve_series_metadata(study_uid, series_uid)
    reader.retrieve_series(study_uid, series_uid)
    rows = pacs.query("SELECT patient_id, detail FROM audit_log WHERE action = 'image.view' AND actor = 'dw_clinician'"
                      " AND target = ?", f"series:{series_uid}")
    assert len(rows) == 1 and rows[0][0] == "DW0001" and json.loads(rows[0][1])["study"] == study_uid


def stow(pacs, body: bytes, content_type: str, role: str = "technologist", study: str = "") -> requests.Response:
    url = f"{pacs.server.url}/dicom-web/studies" + (f"/{study}" if study else "")
    return requests.post(url, data=body, timeout=60, headers={"Authorization": f"Bearer {pacs.tokens[role]}",
                                                              "Content-Type": content_type})


def multipart_body(parts: list[tuple[str, bytes]], boundary: str = "XbOuNdArY") -> bytes:
    body = b"".join(f"--{boundary}\r\nContent-Type: {t}\r\n\r\n".encode() + data + b"\r\n" for t, data in parts)
    return body + f"--{boundary}--\r\n".encode()


RELATED = 'multipart/related; type="application/dicom"; boundary=XbOuNdArY'


def test_stow_reports_each_part_and_files_or_quarantines_like_c_store(pacs) -> None:
    good = pacs.work / "good.dcm"
    make_ct(good, accession=pacs.zhang.accession_number, patient_id="DW0001", name="ZHANG^SAN", sex="M",
            birth_date="19800203")
    stray = pacs.work / "stray-stow.dcm"
    make_ct(stray, accession="NOSUCH02", patient_id="DW9999")
    truncated = good.read_bytes()[:-100]
    response = stow(pacs, multipart_body([("application/dicom", good.read_bytes()),
                                          ("application/dicom", stray.read_bytes()),
                                          ("application/dicom", truncated),
                                          ("text/plain", b"hello")]), RELATED)
    assert response.status_code == 202, response.text
    body = response.json()
    referenced = body["00081199"]["Value"]
    assert [r["00081155"]["Value"][0] for r in referenced] == [uids(good)[2], uids(stray)[2]]
    assert "00081190" not in referenced[1]  # quarantined: nothing to retrieve yet
    failed = body["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0xC000, 0xC000]
    assert "quarantine" in response.headers["Warning"]
    quarantined = pacs.query("SELECT s.quarantine_reason FROM instances i JOIN series se ON se.id = i.series_ref"
                             " JOIN studies s ON s.id = se.study_ref WHERE i.sop_instance_uid = ?", uids(stray)[2])
    assert quarantined and quarantined[0][0]
    other_study = stow(pacs, multipart_body([("application/dicom", good.read_bytes())]), RELATED,
                       study="1.2.3.4")
    assert other_study.status_code == 409
    assert other_study.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


def test_hostile_stow_bodies_change_nothing(pacs, tmp_path) -> None:
    before = pacs.query("SELECT COUNT(*) FROM instances")[0][0]
    good = pacs.work / "hostile-good.dcm"
    make_ct(good, accession=pacs.zhang.accession_number, patient_id="DW0001")
    cases = {
        "no boundary": (b"--x\r\n\r\nabc\r\n--x--", 'multipart/related; type="application/dicom"'),
        "not multipart": (good.read_bytes(), "application/dicom"),
        "no closing boundary": (b"--XbOuNdArY\r\nContent-Type: application/dicom\r\n\r\n" + good.read_bytes(),
                                RELATED),
        "endless headers": (b"--XbOuNdArY\r\n" + b"X-Pad: " + b"a" * 100_000, RELATED),
        "empty": (b"", RELATED),
    }
    for name, (body, content_type) in cases.items():
        response = stow(pacs, body, content_type)
        assert response.status_code in (400, 409, 415), (name, response.status_code, response.text)
        assert "error" in response.json() or "00081198" in response.json(), name
    assert pacs.query("SELECT COUNT(*) FROM instances")[0][0] == before
    tmp = Path(pacs.settings["STORAGE_DIR"]) / "tmp"
    assert [p for p in tmp.iterdir() if p.suffix == ".part"] == []


def test_a_stow_request_holds_a_bounded_number_of_parts_with_bounded_headers(pacs) -> None:
    """Issue 27, rows 4 and 8: 200,000 empty parts held a web worker 44 s; a part header of
    20,000 bytes was stored although the limit is 16 KiB. Now the parts beyond STOW_MAX_PARTS
    are not read (one failure says why), and a long part header is refused, nothing stored."""
    from pacslite.core import config
    most = config.DEFAULTS["STOW_MAX_PARTS"]
    body = multipart_body([("application/dicom", b"")] * (most + 500))
    answer = stow(pacs, body, RELATED)
    failed = answer.json()["00081198"]["Value"]
    assert answer.status_code == 409 and len(failed) == most + 1, (answer.status_code, len(failed))
    assert f"more than {most} parts" in answer.headers["Warning"]

    before = pacs.query("SELECT COUNT(*) FROM instances")[0][0]
    good = pacs.work / "long-header.dcm"
    make_ct(good, accession=pacs.zhang.accession_number, patient_id="DW0001", name="ZHANG^SAN", sex="M",
            birth_date="19800203")
    long_header = (b"--XbOuNdArY\r\nContent-Type: application/dicom\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
                   + good.read_bytes() + b"\r\n--XbOuNdArY--\r\n")
    refused = stow(pacs, long_header, RELATED)
    assert refused.status_code == 400 and "16384 bytes" in refused.json()["error"], refused.text[:300]
    assert pacs.query("SELECT COUNT(*) FROM instances")[0][0] == before


def test_a_frame_asked_many_times_is_sent_once(pacs) -> None:
    """Issue 27, row 6: ``frames/1,1,1,…`` (9,999 times) answered 329 MB."""
    study_uid, series_uid, sop_uid = uids(pacs.files[0])
    url = (f"{pacs.server.url}/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/"
           + ",".join(["1"] * 9_999))
    response = requests.get(url, timeout=60, headers={"Authorization": f"Bearer {pacs.tokens['radiologist']}",
                                                      "Accept": "multipart/related; type=application/octet-stream"})
    assert response.status_code == 200
    assert len(parts_of(response)) == 1 and len(response.content) < 64 * 64 * 2 + 1024


def test_wado_uri_sizes_are_whole_numbers_within_the_limit(pacs) -> None:
    """Issue 27, row 7: ``rows=-5&columns=-5`` answered 500, ``rows=100000`` a picture clamped
    to 4,096 where the documentation promises 400."""
    study_uid, series_uid, sop_uid = uids(pacs.files[0])
    params = {"requestType": "WADO", "studyUID": study_uid, "seriesUID": series_uid, "objectUID": sop_uid}
    auth = {"Authorization": f"Bearer {pacs.tokens['radiologist']}"}
    for sizes in ({"rows": "-5", "columns": "-5"}, {"rows": "100000"}, {"columns": "0"}, {"rows": "1.5"},
                  {"rows": "4097"}):
        response = requests.get(f"{pacs.server.url}/wado", params={**params, **sizes}, headers=auth, timeout=30)
        assert response.status_code == 400 and "whole number from 1 to 4096" in response.json()["error"], sizes
    fits = requests.get(f"{pacs.server.url}/wado", params={**params, "rows": "32", "columns": "16"}, headers=auth,
                        timeout=30)
    assert fits.status_code == 200 and max(Image.open(io.BytesIO(fits.content)).size) == 32


def test_wado_uri_gives_the_file_or_a_picture(pacs) -> None:
    study_uid, series_uid, sop_uid = uids(pacs.files[2])
    params = {"requestType": "WADO", "studyUID": study_uid, "seriesUID": series_uid, "objectUID": sop_uid}
    auth = {"Authorization": f"Bearer {pacs.tokens['radiologist']}"}
    dicom = requests.get(f"{pacs.server.url}/wado", params={**params, "contentType": "application/dicom"},
                         headers=auth, timeout=30)
    assert dicom.status_code == 200 and dicom.content == stored_path(pacs, sop_uid).read_bytes()
    jpeg = requests.get(f"{pacs.server.url}/wado", params=params, headers=auth, timeout=30)
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    assert Image.open(io.BytesIO(jpeg.content)).mode == "L"  # a MONOCHROME2 CT: one component, as Orthanc's
    assert requests.get(f"{pacs.server.url}/wado", params=params, timeout=30).status_code == 401
    missing = requests.get(f"{pacs.server.url}/wado", params={**params, "objectUID": "1.2.3"}, headers=auth,
                           timeout=30)
    assert missing.status_code == 404


def test_stow_on_the_browser_session_needs_the_csrf_header(app, client_as, tmp_path) -> None:
    from tests.conftest import csrf_token
    tech = client_as("technologist")
    path = tmp_path / "session.dcm"
    make_ct(path, accession="NOSUCH03", patient_id="SS0001")
    body = multipart_body([("application/dicom", path.read_bytes())])
    forged = tech.post("/dicom-web/studies", data=body, content_type=RELATED)
    assert forged.status_code == 400
    from pacslite.core import db
    conn = db.connect(app.config["DATABASE"])
    try:
        assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0
        sent = tech.post("/dicom-web/studies", data=body, content_type=RELATED,
                         headers={"X-CSRFToken": csrf_token(tech, "/exams")})
        assert sent.status_code == 200, sent.get_data(as_text=True)
        assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 1
    finally:
        conn.close()


def test_without_ohif_pacslite_runs_and_says_the_viewer_is_unavailable(tmp_path) -> None:
    from pacslite import create_app
    from tests.conftest import INDEPENDENT_OF_HOST_AND_HOUR, login, make_user
    app = create_app({"INSTANCE_DIR": str(tmp_path / "instance"), "DEFAULT_LANGUAGE": "en",
                      "OHIF_DIR": str(tmp_path / "no-ohif"), **INDEPENDENT_OF_HOST_AND_HOUR})
    from pacslite.core import db
    conn = db.connect(app.config["DATABASE"])
    make_user(conn, "dr_no_ohif", "radiologist")
    conn.close()
    browser = app.test_client()
    login(browser, "dr_no_ohif")
    page = browser.get("/ohif/viewer?StudyInstanceUIDs=1.2.3")
    assert page.status_code == 503 and "OHIF viewer is not installed" in page.get_data(as_text=True)
    assert browser.get("/exams/A1/ohif").status_code == 503


def test_the_ohif_package_is_unpacked_and_rebased_onto_its_path(tmp_path) -> None:
    """unpack() on a package shaped like @ohif/app's: dist served from /ohif/, not from /."""
    import tarfile

    from pacslite import ohif
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text('<script>window.PUBLIC_URL="/"</script><link href="/app.css">'
                                     '<script src="/app-config.js"></script><script rel="preload" as="script"'
                                     ' type="module" src="/init-service-worker.js"></script>'
                                     '<a href="//elsewhere.example/x">x</a>')
    (dist / "app.bundle.js").write_text('__webpack_require__.p = "/";')
    (dist / "app.css").write_text("@font-face{src:url(/f.woff2)}")
    (dist / "app-config.js").write_text("window.config = {}")
    tarball = tmp_path / "ohif-app.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(dist, arcname="package/dist")
    target = tmp_path / "vendor" / "ohif"
    target.parent.mkdir()
    assert not ohif.installed(target)
    ohif.unpack(tarball, target)
    assert ohif.installed(target)
    html = (target / "index.html").read_text()
    assert 'window.PUBLIC_URL="/ohif/"' in html and 'href="/ohif/app.css"' in html
    assert 'src="/ohif/app-config.js"' in html and "init-service-worker" not in html
    assert 'href="//elsewhere.example/x"' in html
    assert (target / "app.bundle.js").read_text() == '__webpack_require__.p = "/ohif/";'
    assert (target / "app.css").read_text() == "@font-face{src:url(/ohif/f.woff2)}"
    assert not (target / "app-config.js").exists()  # pacslite serves its own
    expected = base64.b64encode(hashlib.sha256(b'window.PUBLIC_URL="/ohif/"').digest()).decode()
    assert ohif.inline_script_hashes(html) == [f"'sha256-{expected}'"]


def test_a_concatenation_reads_like_the_joined_pieces(tmp_path) -> None:
    """The body the HTTP server sends for stored files: any read at any position is the bytes
    of the pieces joined, whatever the piece boundaries."""
    import random

    from pacslite.web.multipart import Concatenation
    files = []
    for n, size in enumerate((0, 1, 4096, 70_000)):
        path = tmp_path / f"piece{n}"
        path.write_bytes(random.Random(n).randbytes(size))
        files.append(path)
    pieces = [b"--b\r\n", files[0], b"", files[1], b"x" * 10, files[2], files[3], b"--b--\r\n"]
    joined = b"".join(p if isinstance(p, bytes) else p.read_bytes() for p in pieces)
    body = Concatenation(pieces)
    assert body.size == len(joined) and body.read() == joined
    rng = random.Random(1)
    for _ in range(300):
        start, size = rng.randrange(len(joined) + 5), rng.randrange(-1, 9000)
        body.seek(start)
        expected = joined[start:] if size < 0 else joined[start:start + size]
        assert body.read(size) == expected, (start, size)
        assert body.tell() == min(start, len(joined)) + len(expected)
    body.close()


def test_bad_dicomweb_and_wado_requests_get_clear_errors_and_record_no_view(pacs) -> None:
    study_uid, series_uid, sop_uid = uids(pacs.files[0])
    instance = f"{pacs.server.url}/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    auth = {"Authorization": f"Bearer {pacs.tokens['technologist']}"}
    views = "SELECT COUNT(*) FROM audit_log WHERE action = 'image.view' AND actor = 'dw_technologist'"
    before = pacs.query(views)[0][0]
    wado = {"requestType": "WADO", "studyUID": study_uid, "seriesUID": series_uid, "objectUID": sop_uid}
    cases = [
        (f"{instance}/frames/0", {}, 400), (f"{instance}/frames/1,x", {}, 400), (f"{instance}/frames/9", {}, 404),
        (f"{instance}/bulkdata/zz", {}, 404), (f"{instance}/bulkdata/00100010", {}, 404),
        (f"{instance}/rendered?viewport=99999,10", {}, 400), (f"{instance}/rendered?window=a,b", {}, 400),
        (f"{instance}/rendered", {"Accept": "image/gif"}, 406), (f"{instance}/metadata", {"Accept": "text/html"}, 406),
        (f"{instance}", {"Accept": "text/html"}, 406),
        (f"{pacs.server.url}/dicom-web/studies/1.2.3/metadata", {}, 404),
        (f"{pacs.server.url}/dicom-web/studies/not-a-uid", {}, 404),
        (f"{pacs.server.url}/wado?" + "&".join(f"{k}={v}" for k, v in {**wado, "requestType": "X"}.items()), {}, 400),
        (f"{pacs.server.url}/wado?requestType=WADO&studyUID={study_uid}", {}, 400),
        (f"{pacs.server.url}/wado?" + "&".join(f"{k}={v}" for k, v in wado.items()) + "&contentType=text/html", {},
         406),
        (f"{pacs.server.url}/wado?" + "&".join(f"{k}={v}" for k, v in wado.items()) + "&frameNumber=0", {}, 400),
    ]
    for url, headers, status in cases:
        response = requests.get(url, headers={**auth, **headers}, timeout=30)
        assert response.status_code == status, (url, headers, response.status_code, response.text[:200])
        assert response.json()["error"], url
    assert pacs.query(views)[0][0] == before  # nothing was shown, so no view is recorded


def test_a_stored_file_gone_missing_is_said_plainly(pacs) -> None:
    path = pacs.work / "to-lose.dcm"
    ds = make_ct(path, accession=pacs.zhang.accession_number, patient_id="DW0001", name="ZHANG^SAN", sex="M",
                 birth_date="19800203")
    client(pacs, "technologist").store_instances([ds])
    stored_path(pacs, ds.SOPInstanceUID).unlink()
    url = (f"{pacs.server.url}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    auth = {"Authorization": f"Bearer {pacs.tokens['radiologist']}"}
    for suffix, accept in (("", 'multipart/related; type="application/dicom"; transfer-syntax=*'),
                           ("/metadata", "application/dicom+json"), ("/frames/1", "*/*")):
        response = requests.get(url + suffix, headers={**auth, "Accept": accept}, timeout=30)
        assert response.status_code == 500 and "cannot be read" in response.json()["error"], (suffix, response.text)
