"""Pixel data → PNG for the browser: modality LUT, window/level or the header's VOI, colour,
MONOCHROME1, frames; rendered images cached on disk; a placeholder when decoding fails.

Compressed transfer syntaxes decode through pydicom's pixel backends and the pylibjpeg
plugins (libjpeg for JPEG and JPEG-LS, openjpeg for JPEG 2000, rle).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from ..core import audit, clock, storage
from ..core.db import transaction
from ..core.validation import N_, ValidationError

log = logging.getLogger(__name__)
THUMBNAIL = 128
#: Window presets (center, width) per DICOM modality, shown in the viewer.
PRESETS: dict[str, list[tuple[str, int, int]]] = {
    "CT": [("brain", 40, 80), ("lung", -600, 1500), ("mediastinum", 50, 350), ("bone", 400, 1800),
           ("abdomen", 60, 400)],
}
#: One audit row per user and series in this window, however many images they scroll through.
VIEW_AUDIT_WINDOW = timedelta(minutes=10)


#: The largest side a rendered image may be asked for (DICOMweb ``viewport``, WADO-URI ``rows``/``columns``).
MAX_RENDERED = 4096


@dataclass(frozen=True)
class View:
    """How to show a frame: window (center, width) or None for the header's own; invert; size."""

    frame: int = 0
    center: float | None = None
    width: float | None = None
    invert: bool = False
    max_size: int = 0

    def key(self) -> str:
        return f"{self.frame}:{self.center}:{self.width}:{int(self.invert)}:{self.max_size}"


def window_value(value: Any, field: str) -> float | None:
    """A window's centre or width as typed or sent (film printing, key images): None when
    blank; ValidationError (``field``) when it is not a number."""
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValidationError(field, N_("A window is a number.")) from None


def frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def header_window(ds: Dataset) -> tuple[float, float] | None:
    """The first window the header gives, as (center, width)."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    center = center[0] if isinstance(center, MultiValue) else center
    width = width[0] if isinstance(width, MultiValue) else width
    try:
        return float(center), max(float(width), 1.0)
    except (TypeError, ValueError):
        return None


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's linear window function onto 0..255."""
    width = max(width, 1.0)
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _to_8bit_colour(values: np.ndarray, bits: int) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    top = float(2 ** bits - 1) if bits else float(np.max(values) or 1)
    return np.clip(values.astype(np.float64) * (255.0 / top), 0, 255).astype(np.uint8)


def _grey(ds: Dataset, pixels: np.ndarray, view: View) -> np.ndarray:
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if view.center is not None and view.width is not None:
        out = _window(values, view.center, view.width)
    elif "VOILUTSequence" in ds:
        out = _stretch(apply_voi_lut(values, ds, index=0).astype(np.float64))
    elif (window := header_window(ds)) is not None:
        out = _window(values, *window)
    else:
        out = _stretch(values)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        out = 255 - out
    return out


def to_image(ds: Dataset, view: View) -> Image.Image:
    """The frame as a Pillow image (8-bit grey or RGB)."""
    frames = frame_count(ds)
    if not 0 <= view.frame < frames:
        raise ValueError(f"frame {view.frame} of {frames}")
    pixels = pixel_array(ds, index=view.frame) if frames > 1 else ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        out = _to_8bit_colour(rgb, 16 if rgb.dtype != np.uint8 else 8)
    elif int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        out = _to_8bit_colour(pixels, int(ds.get("BitsStored", 8) or 8))
    else:
        out = _grey(ds, pixels, view)
    if view.invert:
        out = 255 - out
    image = Image.fromarray(np.ascontiguousarray(out))
    if view.max_size:
        image.thumbnail((view.max_size, view.max_size))
    return image


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def jpeg(png_data: bytes, quality: int = 90) -> bytes:
    """A rendered PNG as JPEG (for clients that take only JPEG: DICOMweb's default, WADO-URI);
    a grey image stays grey (one component), as a MONOCHROME image is."""
    out = io.BytesIO()
    image = Image.open(io.BytesIO(png_data))
    (image if image.mode in ("L", "RGB") else image.convert("RGB")).save(out, "JPEG", quality=quality)
    return out.getvalue()


def placeholder(text: str, size: int = 256) -> bytes:
    """A grey square saying the image cannot be shown."""
    image = Image.new("L", (size, size), 40)
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, size - 5, size - 5), outline=120)
    draw.line((4, 4, size - 5, size - 5), fill=90)
    draw.line((4, size - 5, size - 5, 4), fill=90)
    draw.text((12, size // 2 - 6), text[:40], fill=230)
    return png(image)


@dataclass(frozen=True)
class Rendered:
    data: bytes
    placeholder: bool


def render_file(path: Path, view: View) -> Rendered:
    """The PNG of one frame of a stored file, or the placeholder when it cannot be decoded."""
    try:
        return Rendered(png(to_image(dcmread(path), view)), False)
    except Exception as exc:  # any decoder failure: a clear placeholder, never a server error
        log.warning("cannot render %s: %s", path.name, exc)
        return Rendered(placeholder("cannot display this image", view.max_size or 256), True)


class Cache:
    """Files on disk named by a key (rendered PNGs, DICOMweb metadata); oldest first out when
    the folder grows past ``max_bytes``. A cache may be lost, never half-written."""

    def __init__(self, directory: str | Path, max_bytes: int, suffix: str = ".png") -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.suffix = suffix
        self._writes = 0

    def _path(self, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()
        return self.directory / name[:2] / f"{name}{self.suffix}"

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def get_or_render(self, sha256: str, path: Path, view: View) -> Rendered:
        key = f"{sha256}:{view.key()}"
        cached = self.read(key)
        if cached is not None:
            return Rendered(cached, False)
        rendered = render_file(path, view)
        if not rendered.placeholder:
            self.write(key, rendered.data)
        return rendered

    def write(self, key: str, data: bytes) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # no fsync: a cache may be lost, never half-written
        except OSError as exc:
            log.warning("cache %s: %s", self.directory.name, exc)
            return
        self._writes += 1
        if self._writes % 200 == 0:
            self.prune()

    def prune(self) -> None:
        """Remove the least recently written files until the cache is under its size."""
        files = [(p.stat().st_mtime, p.stat().st_size, p) for p in self.directory.glob(f"*/*{self.suffix}")]
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size


# ---------------------------------------------------------------- what the viewer needs

def series_images(conn: sqlite3.Connection, series_id: int) -> list[sqlite3.Row]:
    """The series' instances in their order (instance number, then arrival)."""
    return conn.execute("SELECT * FROM instances WHERE series_ref = ?"
                        " ORDER BY CAST(instance_number AS INTEGER), received_at, id", (series_id,)).fetchall()


def get_series(conn: sqlite3.Connection, series_id: int) -> sqlite3.Row | None:
    return conn.execute("SELECT se.*, st.exam_ref, st.study_instance_uid, st.patient_id AS study_patient_id"
                        " FROM series se JOIN studies st ON st.id = se.study_ref WHERE se.id = ?",
                        (series_id,)).fetchone()


def get_instance(conn: sqlite3.Connection, instance_id: int) -> sqlite3.Row | None:
    return conn.execute("SELECT i.*, se.id AS series_id, st.exam_ref, st.study_instance_uid,"
                        " st.patient_id AS study_patient_id FROM instances i JOIN series se ON se.id = i.series_ref"
                        " JOIN studies st ON st.id = se.study_ref WHERE i.id = ?", (instance_id,)).fetchone()


def stack_of(store: str | Path, images: list[sqlite3.Row]) -> tuple[list[dict[str, Any]], tuple[float, float] | None]:
    """What the viewer scrolls through: every frame of every image, in order, with its size and
    pixel spacing (for measuring in millimetres); and the window it starts with (the middle
    image's header window, else its pixel range)."""
    stack: list[dict[str, Any]] = []
    window = None
    for position, instance in enumerate(images):
        try:
            ds = dcmread(storage.resolve(store, instance["storage_path"]), stop_before_pixels=True)
            frames, geometry = frame_count(ds), _geometry(ds)
        except Exception:  # unreadable: one placeholder frame
            ds, frames, geometry = None, 1, {"rows": 0, "columns": 0, "spacing": None}
        for frame in range(frames):
            stack.append({"id": instance["id"], "frame": frame, "number": str(instance["instance_number"]),
                          "frames": frames, **geometry})
        if position == len(images) // 2 and ds is not None:
            window = header_window(ds) or _pixel_range(storage.resolve(store, instance["storage_path"]))
    return stack, window


def _geometry(ds: Dataset) -> dict[str, Any]:
    """Rows, columns and the pixel spacing in mm (row spacing, column spacing): Pixel Spacing,
    else Imager Pixel Spacing (at the detector, for projection images); None when neither is
    usable, and the viewer then measures in pixels."""
    spacing = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            pair = [float(v) for v in value] if value is not None else []
        except (TypeError, ValueError):
            pair = []
        if len(pair) == 2 and all(0 < v < 100 for v in pair):
            spacing = {"row": pair[0], "column": pair[1], "source": keyword}
            break
    return {"rows": int(ds.get("Rows", 0) or 0), "columns": int(ds.get("Columns", 0) or 0), "spacing": spacing}


@dataclass(frozen=True)
class Values:
    """A frame's values through the modality LUT (CT: Hounsfield units), for the value under
    the viewer's cursor: little-endian int16 when they are whole numbers in its range, else float32."""

    rows: int
    columns: int
    dtype: str  # "int16" or "float32"
    unit: str  # "HU" for CT, else the Rescale Type or ""
    data: bytes


def modality_values(path: Path, frame: int) -> Values | None:
    """The frame's modality values; None for a colour image (it has no single value)."""
    ds = dcmread(path)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        return None
    frames = frame_count(ds)
    if not 0 <= frame < frames:
        raise ValueError(f"frame {frame} of {frames}")
    values = apply_modality_lut(pixel_array(ds, index=frame) if frames > 1 else ds.pixel_array, ds)
    unit = "HU" if ds.get("Modality") == "CT" else str(ds.get("RescaleType", "") or "")
    unit = re.sub(r"[^A-Za-z0-9 /%.-]", "", unit)[:16]  # a response header: hostile text stays out
    whole = np.array_equal(values, np.round(values)) and values.min() >= -32768 and values.max() <= 32767
    out = values.astype("<i2" if whole else "<f4")
    return Values(int(out.shape[0]), int(out.shape[1]), "int16" if whole else "float32", unit, out.tobytes())


def _pixel_range(path: Path) -> tuple[float, float] | None:
    try:
        ds = dcmread(path)
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            return None
        values = apply_modality_lut(pixel_array(ds, index=0) if frame_count(ds) > 1 else ds.pixel_array, ds)
        low, high = float(np.min(values)), float(np.max(values))
        return (low + high) / 2, max(high - low, 1.0)
    except Exception:
        return None


def record_view(conn: sqlite3.Connection, actor: audit.Actor, patient_id: str, study_uid: str, series_uid: str,
                what: str) -> None:
    """Audit an image view as a patient-record access: once per user and series in
    VIEW_AUDIT_WINDOW, however many images are scrolled through."""
    since = clock.to_db(clock.now() - VIEW_AUDIT_WINDOW)
    seen = conn.execute("SELECT 1 FROM audit_log WHERE at >= ? AND actor = ? AND action = 'image.view'"
                        " AND target = ?", (since, actor.name, f"series:{series_uid}")).fetchone()
    if seen:
        return
    with transaction(conn):
        audit.record(conn, actor, "image.view", f"series:{series_uid}", patient_id=patient_id,
                     detail={"study": study_uid, "what": what})


def header_elements(path: Path) -> list[dict[str, Any]]:
    """The file's attributes for the header view (no pixel data), values shortened."""
    ds = dcmread(path, stop_before_pixels=True)
    rows = []

    def walk(dataset: Dataset, depth: int) -> None:
        for element in dataset:
            rows.append({"tag": f"({element.tag.group:04X},{element.tag.element:04X})", "depth": depth,
                         "keyword": element.keyword or element.name, "vr": element.VR,
                         "value": "" if element.VR == "SQ" else _short(element)})
            if element.VR == "SQ":
                for item in element.value:
                    walk(item, depth + 1)

    walk(ds.file_meta, 0)
    walk(ds, 0)
    return rows


def _short(element: Any) -> str:
    if element.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return f"<{len(element.value or b'')} bytes>"
    try:
        text = str(element.value)
    except Exception:  # a value its character set cannot decode
        return "\ufffd"
    return text if len(text) <= 200 else text[:200] + "…"
