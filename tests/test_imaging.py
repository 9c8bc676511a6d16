"""Rendering pixel data for the browser, the cache, and the image routes' access and audit."""
from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import data_manager, get_testdata_file
from pydicom.uid import generate_uid

from pacslite.core import audit
from pacslite.ris import patients
from pacslite.pacs import filing, imaging
from pacslite.pacs.index import Source
from tests.conftest import EXAM_FORM
from tests.dicomkit import make_ct


def _files_with_pixels() -> list[Path]:
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(p for p in Path(data_manager.DATA_ROOT).rglob("*")
                           if p.is_file() and p.suffix not in (".py", ".pyc")):
            try:
                if "PixelData" in dcmread(path):
                    found.append(path)
            except Exception:
                continue
    return found


def _decodable(path: Path) -> bool:
    try:
        dcmread(path).pixel_array
    except Exception:
        return False
    return True


def test_every_bundled_file_with_pixel_data_renders_or_shows_the_placeholder(caplog) -> None:
    caplog.set_level(logging.ERROR)
    files = _files_with_pixels()
    assert len(files) > 90
    placeholders = []
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rendered = imaging.render_file(path, imaging.View())
        image = Image.open(io.BytesIO(rendered.data))
        assert image.format == "PNG" and image.width > 0, path.name
        if rendered.placeholder:
            placeholders.append(path)
    # only files that pydicom itself cannot decode (deliberately broken ones) get the placeholder
    assert [p.name for p in placeholders if _decodable(p)] == []
    assert len(placeholders) <= 8, [p.name for p in placeholders]


def _png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_rescale_and_window_give_the_expected_grey(tmp_path) -> None:
    path = tmp_path / "ct.dcm"
    ds = make_ct(path)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    pixels = np.full((128, 128), 1024 + 40, dtype=np.int16)  # 40 HU everywhere
    pixels[0, 0] = 1024 + 1000  # bone, above the window
    ds.PixelRepresentation = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    grey = _png_pixels(imaging.render_file(path, imaging.View()).data)
    assert grey[64, 64] in (127, 128) and grey[0, 0] == 255
    lung = _png_pixels(imaging.render_file(path, imaging.View(center=-600, width=1500)).data)
    assert lung[64, 64] > 200  # soft tissue is bright in a lung window
    inverted = _png_pixels(imaging.render_file(path, imaging.View(invert=True)).data)
    assert inverted[0, 0] == 0
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path)
    assert _png_pixels(imaging.render_file(path, imaging.View()).data)[0, 0] == 0


@pytest.mark.parametrize("name, mode", [("examples_palette.dcm", "RGB"), ("examples_ybr_color.dcm", "RGB"),
                                        ("SC_rgb_rle.dcm", "RGB"), ("MR_small_jp2klossless.dcm", "L"),
                                        ("JPGExtended.dcm", "L"), ("SC_rgb_jpeg_gdcm.dcm", "RGB"),
                                        ("MR_small_jpeg_ls_lossless.dcm", "L"), ("MR_small_RLE.dcm", "L")])
def test_colour_and_compressed_images(name, mode) -> None:
    rendered = imaging.render_file(Path(get_testdata_file(name)), imaging.View())
    assert not rendered.placeholder and Image.open(io.BytesIO(rendered.data)).mode == mode


def test_frames_of_a_multi_frame_image() -> None:
    path = Path(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    assert imaging.frame_count(dcmread(path, stop_before_pixels=True)) == 2
    first, last = (imaging.render_file(path, imaging.View(frame=n)) for n in (0, 1))
    assert not first.placeholder and not last.placeholder and first.data != last.data
    assert imaging.render_file(path, imaging.View(frame=2)).placeholder


def test_the_cache_answers_the_second_time_and_never_keeps_a_placeholder(tmp_path) -> None:
    cache = imaging.Cache(tmp_path / "cache", 10 * 1024 * 1024)
    path = tmp_path / "ct.dcm"
    make_ct(path)
    first = cache.get_or_render("abc", path, imaging.View(max_size=64))
    path.unlink()  # served from the cache from now on
    assert cache.get_or_render("abc", path, imaging.View(max_size=64)).data == first.data
    assert cache.get_or_render("abc", path, imaging.View(max_size=32)).placeholder  # another view: no file
    assert len(list((tmp_path / "cache").glob("*/*.png"))) == 1
    small = imaging.Cache(tmp_path / "cache", 0)
    small.prune()
    assert list((tmp_path / "cache").glob("*/*.png")) == []


def _filed_series(app, conn, tmp_path, **fields) -> tuple[str, int]:
    data = {**EXAM_FORM}
    accession = patients.register_exam(conn, audit.SYSTEM, app.config, data, data,
                                       confirm_demographics=True).accession_number
    path = tmp_path / f"{generate_uid()}.dcm"
    make_ct(path, accession=fields.get("accession", accession), patient_id="P0001",
            name=fields.get("name", ""))
    filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source("CT01"))
    series_id = conn.execute("SELECT id FROM series ORDER BY id DESC").fetchone()[0]
    return accession, series_id


def test_image_routes_follow_the_roles_and_audit_once_per_series(app, conn, tmp_path, client_as) -> None:
    accession, series_id = _filed_series(app, conn, tmp_path)
    ward = client_as("clinician")
    page = ward.get(f"/exams/{accession}").get_data(as_text=True)
    assert f"/series/{series_id}/thumbnail.png" in page
    thumb = ward.get(f"/series/{series_id}/thumbnail.png")
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.data)).width <= imaging.THUMBNAIL
    instance_id = conn.execute("SELECT id FROM instances").fetchone()[0]
    assert ward.get(f"/instances/{instance_id}/render.png?wc=40&ww=400").status_code == 200
    assert ward.get(f"/series/{series_id}/viewer").status_code == 200
    views = conn.execute("SELECT actor, patient_id FROM audit_log WHERE action = 'image.view'").fetchall()
    assert [tuple(v) for v in views] == [("u_clinician", "P0001")]  # one row, however many images
    assert client_as("registrar").get(f"/series/{series_id}/thumbnail.png").status_code == 403


def test_quarantined_images_only_for_image_control_and_headers_escaped(app, conn, tmp_path, client_as) -> None:
    _, series_id = _filed_series(app, conn, tmp_path, accession="NOSUCH", name="<script>alert(1)</script>")
    instance_id = conn.execute("SELECT id FROM instances").fetchone()[0]
    assert client_as("clinician").get(f"/series/{series_id}/viewer").status_code == 404
    tech = client_as("technologist")
    assert tech.get(f"/series/{series_id}/viewer").status_code == 200
    header = tech.get(f"/instances/{instance_id}/header", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in header and "<script>alert" not in header
    assert "PatientName" in header and "StudyInstanceUID" in header


def test_the_viewer_gets_modality_values_and_geometry_for_the_cursor_and_the_ruler(app, conn, tmp_path,
                                                                                   client_as) -> None:
    """The values behind the CT number under the cursor are the stored pixels through the
    rescale, and the stack carries the pixel spacing the length measurement uses."""
    accession, series_id = _filed_series(app, conn, tmp_path)
    instance = conn.execute("SELECT id, storage_path FROM instances").fetchone()
    ward = client_as("clinician")
    answer = ward.get(f"/instances/{instance['id']}/values")
    assert answer.status_code == 200 and answer.headers["X-Type"] == "int16" and answer.headers["X-Unit"] == "HU"
    rows, columns = int(answer.headers["X-Rows"]), int(answer.headers["X-Columns"])
    values = np.frombuffer(answer.data, dtype="<i2").reshape(rows, columns)
    ds = dcmread(Path(app.config["STORAGE_DIR"]) / instance["storage_path"])
    assert np.array_equal(values, ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept))
    assert ward.get(f"/instances/{instance['id']}/values?frame=7").status_code == 404  # no such frame
    assert client_as("registrar").get(f"/instances/{instance['id']}/values").status_code == 403

    stack, _ = imaging.stack_of(app.config["STORAGE_DIR"], imaging.series_images(conn, series_id))
    assert stack[0]["spacing"] == {"row": 0.661468, "column": 0.661468, "source": "PixelSpacing"}
    assert (stack[0]["rows"], stack[0]["columns"]) == (128, 128)
    colour = imaging.modality_values(Path(get_testdata_file("SC_rgb_rle.dcm")), 0)
    assert colour is None  # a colour image has no single value under the cursor
