"""The whole-dataset check (pacslite.pacs.wellformed) on files built byte by byte: what parses to
its end passes, every way of being cut short or mislabelled is named."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, RLELossless)

from pacslite.pacs import wellformed
from tests.dicomkit import CT_SMALL, TEST_FILES, dataset_bytes
from tests.hostile import encode, nested_sequences, with_element_before_pixels


def part10(path: Path, dataset: bytes, syntax: str) -> Path:
    """A Part 10 file: preamble, a correct file meta, then ``dataset`` exactly as given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = syntax
    with open(path, "wb") as handle:
        handle.write(bytes(128) + b"DICM")
        write_file_meta_info(handle, meta)
        handle.write(dataset)
    return path


def ct() -> Dataset:
    return dcmread(CT_SMALL)


def check(tmp_path: Path, dataset: bytes, syntax: str = ExplicitVRLittleEndian) -> None:
    wellformed.check_file(part10(tmp_path / "x.dcm", dataset, syntax))


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_a_whole_dataset_passes_in_every_uncompressed_syntax(tmp_path, syntax) -> None:
    ds = ct()
    check(tmp_path, encode(ds, implicit=syntax == ImplicitVRLittleEndian, little=syntax != ExplicitVRBigEndian),
          syntax)


def test_bundled_files_that_pydicom_decodes_pass() -> None:
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "rtplan.dcm",
                 "image_dfl.dcm", "MR_small_bigendian.dcm", "emri_small_jpeg_2k_lossless.dcm",
                 "SC_ybr_full_422_uncompressed.dcm"):
        path = TEST_FILES / name
        if path.is_file():
            wellformed.check_file(path)


def test_pixel_data_shorter_than_the_image_is_refused(tmp_path) -> None:
    ds = ct()
    ds.PixelData = ds.PixelData[:-2048]  # a consistent element, but fewer pixels than rows × columns
    with pytest.raises(wellformed.Malformed, match="pixel data has 30720 bytes of the 32768"):
        check(tmp_path, encode(ds, implicit=False))


def test_a_length_beyond_the_end_is_refused(tmp_path) -> None:
    """PixelData declaring 0x7FFFFFF0 bytes with 4 KiB sent."""
    body = encode(ct(), implicit=False)
    at = body.index(b"\xe0\x7f\x10\x00OW")
    cut = body[:at + 8] + struct.pack("<L", 0x7FFFFFF0) + bytes(4096)
    with pytest.raises(wellformed.Malformed, match=r"\(7FE0,0010\) declares 2147483632 bytes"):
        check(tmp_path, cut)


@pytest.mark.parametrize("implicit", [False, True])
def test_a_binary_value_of_the_wrong_length_is_refused(tmp_path, implicit) -> None:
    """Found by the fuzz: an SL of 2 bytes parses as a structure but cannot be read back."""
    tag = struct.pack("<HH", 0x0018, 0x6020)  # Reference Pixel X0, SL
    element = tag + (struct.pack("<L", 2) if implicit else b"SL" + struct.pack("<H", 2)) + b"05"
    body = with_element_before_pixels(encode(ct(), implicit=implicit), element, implicit)
    with pytest.raises(wellformed.Malformed, match=r"\(0018,6020\) has 2 bytes .* not a multiple of the 4 bytes"):
        check(tmp_path, body, ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
    with pytest.raises(Exception):  # what the check prevents: pydicom cannot read it back
        ds = dcmread(part10(tmp_path / "y.dcm", body, ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian))
        [element.value for element in ds.iterall()]


def _implicit(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", group, element, len(value)) + value


PRIVATE_CREATOR = _implicit(0x0043, 0x0010, b"GEMS_PARM_01")


@pytest.mark.parametrize("elements, implicit, what", [
    (_implicit(0x2056, 0x0000, b"L "), True, r"\(2056,0000\) has 2 bytes"),  # a group length is UL (the fuzz)
    (_implicit(0x6000, 0x0010, b"123"), True, r"\(6000,0010\) has 3 bytes"),  # a repeating group's US
    (PRIVATE_CREATOR + _implicit(0x0043, 0x1001, b"123"), True, r"\(0043,1001\) has 3 bytes"),  # private SS
    (struct.pack("<HH", 0x0018, 0x6020) + b"UN\0\0" + struct.pack("<L", 2) + b"05", False,
     r"\(0018,6020\) has 2 bytes"),  # UN read back as the dictionary's SL
])
def test_a_value_read_back_by_another_vr_must_fit_it(tmp_path, elements, implicit, what) -> None:
    """Elements without a VR of their own (implicit, or UN) are read back by pydicom with the VR
    its dictionaries give: their lengths must fit that VR too, or the stored file cannot be read."""
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    body = with_element_before_pixels(encode(ct(), implicit=implicit), elements, implicit)
    with pytest.raises(wellformed.Malformed, match=what):
        check(tmp_path, body, syntax)
    with pytest.raises(Exception):  # what the check prevents: pydicom cannot read it back
        [element.value for element in dcmread(part10(tmp_path / "y.dcm", body, syntax)).iterall()]


@pytest.mark.parametrize("elements", [
    PRIVATE_CREATOR + _implicit(0x0043, 0x1001, b"12"),  # the private SS with a length that fits
    _implicit(0x0043, 0x0010, b"NOBODY KNOWS") + _implicit(0x0043, 0x1001, b"123"),  # unknown creator: bytes
    _implicit(0x2057, 0x0000, b"L "),  # an odd (private) group's length: bytes
])
def test_values_any_length_fits_pass(tmp_path, elements) -> None:
    body = with_element_before_pixels(encode(ct(), implicit=True), elements, True)
    check(tmp_path, body, ImplicitVRLittleEndian)
    [element.value for element in dcmread(part10(tmp_path / "y.dcm", body, ImplicitVRLittleEndian)).iterall()]


def test_implicit_vr_bytes_in_an_explicit_context_are_refused(tmp_path) -> None:
    with pytest.raises(wellformed.Malformed, match="no valid VR"):
        check(tmp_path, encode(ct(), implicit=True), ExplicitVRLittleEndian)


def test_a_truncated_dataset_and_stray_bytes_are_refused(tmp_path) -> None:
    body = encode(ct(), implicit=False)
    with pytest.raises(wellformed.Malformed, match="truncated"):
        check(tmp_path, body[:len(body) // 2])
    with pytest.raises(wellformed.Malformed, match="stray bytes"):
        check(tmp_path, body + b"\x00\x00\x00")


def nested(depth: int, implicit: bool) -> bytes:
    return with_element_before_pixels(encode(ct(), implicit=implicit), nested_sequences(depth, implicit), implicit)


@pytest.mark.parametrize("implicit", [False, True])
def test_sequences_nested_too_deep_are_refused(tmp_path, implicit) -> None:
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    check(tmp_path, nested(wellformed.MAX_SEQUENCE_DEPTH, implicit), syntax)
    assert len(dcmread(tmp_path / "x.dcm").ContentSequence) == 1  # what passes, pydicom reads
    with pytest.raises(wellformed.Malformed, match="nested deeper than"):
        check(tmp_path, nested(wellformed.MAX_SEQUENCE_DEPTH + 1, implicit), syntax)
    with pytest.raises(wellformed.Malformed, match="nested deeper than"):
        check(tmp_path, nested(500, implicit), syntax)


def test_undefined_lengths_need_their_delimiters(tmp_path) -> None:
    ds = ct()
    item = Dataset()
    item.CodeValue = "X"
    ds.ContentSequence = Sequence([item])
    ds["ContentSequence"].is_undefined_length = True
    body = encode(ds, implicit=False)
    check(tmp_path, body)
    delimiter = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    assert delimiter in body
    with pytest.raises(wellformed.Malformed):
        check(tmp_path, body.replace(delimiter, b"", 1)[:-8])


def test_encapsulated_pixel_data_needs_items_and_a_delimiter(tmp_path) -> None:
    ds = ct()
    if 0xFFFCFFFC in ds:
        del ds[0xFFFCFFFC]  # pixel data last, so that the delimiter is the last 8 bytes
    frames = encapsulate([b"\x01\x02" * 100])
    ds.PixelData = frames
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    body = encode(ds, implicit=False)
    check(tmp_path, body, RLELossless)
    with pytest.raises(wellformed.Malformed, match="no sequence delimiter"):
        check(tmp_path, body[:-8], RLELossless)
    with pytest.raises(wellformed.Malformed, match="without a fragment"):
        empty = body[:body.index(frames)] + b"\xfe\xff\x00\xe0" + bytes(4) + b"\xfe\xff\xdd\xe0" + bytes(4)
        check(tmp_path, empty, RLELossless)
    # native pixel data under a compressed syntax is not what it says
    with pytest.raises(wellformed.Malformed, match="native"):
        check(tmp_path, dataset_bytes(CT_SMALL), RLELossless)


def test_a_deflated_dataset_is_inflated_to_a_bound(tmp_path, monkeypatch) -> None:
    body = encode(ct(), implicit=False)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = deflater.compress(body) + deflater.flush()
    check(tmp_path, deflated, DeflatedExplicitVRLittleEndian)
    monkeypatch.setattr(wellformed, "MAX_INFLATED_BYTES", len(body) - 1)
    with pytest.raises(wellformed.Malformed, match="expands beyond"):
        check(tmp_path, deflated, DeflatedExplicitVRLittleEndian)
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcm"]  # the inflated copy is gone
    with pytest.raises(wellformed.Malformed, match="cannot be inflated"):
        check(tmp_path, b"\xff" * 100, DeflatedExplicitVRLittleEndian)
