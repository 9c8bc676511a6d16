"""DICOM test helpers: real files (pydicom's bundled ones and images made from them) and DCMTK."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import data_manager
from pydicom.dataset import Dataset
from pydicom import uid
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

TEST_FILES = Path(data_manager.DATA_ROOT) / "test_files"
CT_SMALL = TEST_FILES / "CT_small.dcm"


def make_ct(path: Path, *, study_uid: str | None = None, series_uid: str | None = None, sop_uid: str | None = None,
            accession: str = "", patient_id: str = "", name: str = "", sex: str = "", birth_date: str = "",
            charset: str = "ISO_IR 192", size: int = 0, instance_number: int = 1, seed: int = 0) -> Dataset:
    """A CT image made from pydicom's CT_small.dcm, with these identifiers; ``size`` > 0 gives
    a ``size``×``size`` 16-bit image instead of its 128×128 one."""
    ds = dcmread(CT_SMALL)
    ds.SpecificCharacterSet = charset
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.AccessionNumber = accession
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientSex = sex
    ds.PatientBirthDate = birth_date
    ds.InstanceNumber = instance_number
    if size:
        pixels = np.random.default_rng(seed).integers(0, 4096, (size, size), dtype=np.uint16)
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return ds


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its file meta: what travels over the network."""
    data = path.read_bytes()
    offset = 132
    while data[offset:offset + 2] == b"\x02\x00":  # group 0002, explicit VR little endian
        vr = data[offset + 4:offset + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR", b"OD", b"OF", b"OL", b"OV"):
            length = int.from_bytes(data[offset + 8:offset + 12], "little")
            offset += 12 + length
        else:
            length = int.from_bytes(data[offset + 6:offset + 8], "little")
            offset += 8 + length
    return data[offset:]


#: storescu's option that proposes a file's own transfer syntax, so that it is sent as it is.
PROPOSE = {
    uid.ExplicitVRLittleEndian: "-x=", uid.ImplicitVRLittleEndian: "-xi", uid.ExplicitVRBigEndian: "-xb",
    uid.DeflatedExplicitVRLittleEndian: "-xd", uid.JPEGBaseline8Bit: "-xy", uid.JPEGExtended12Bit: "-xx",
    uid.JPEGLosslessSV1: "-xs", uid.JPEG2000Lossless: "-xv", uid.JPEG2000: "-xw", uid.JPEGLSLossless: "-xt",
    uid.JPEGLSNearLossless: "-xu", uid.RLELossless: "-xr",
}


def propose_option(path: Path) -> tuple[str, ...]:
    """The storescu option for this file's transfer syntax (none if DCMTK has none for it)."""
    ts = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    return (PROPOSE[ts],) if ts in PROPOSE else ()


#: storescp's option that makes it prefer (accept first) this transfer syntax.
PREFER = {
    uid.ExplicitVRLittleEndian: "+xe", uid.ImplicitVRLittleEndian: "+xi", uid.ExplicitVRBigEndian: "+xb",
    uid.DeflatedExplicitVRLittleEndian: "+xd", uid.JPEGBaseline8Bit: "+xy", uid.JPEGExtended12Bit: "+xx",
    uid.JPEGLosslessSV1: "+xs", uid.JPEG2000Lossless: "+xv", uid.JPEG2000: "+xw", uid.JPEGLSLossless: "+xt",
    uid.JPEGLSNearLossless: "+xu", uid.RLELossless: "+xr",
}


#: Runs inside its own network namespace, where nothing but this script can reach the port:
#: storescp cannot be told to listen on loopback only.
_WIRE_SCRIPT = """
ip link set lo up
storescp +B "$1" -aet PACSLITE -od "$2" -fe .dcm 11112 &
scp=$!
tries=0
until echoscu -aec PACSLITE 127.0.0.1 11112 2>/dev/null; do
    tries=$((tries + 1)); [ "$tries" -gt 400 ] && exit 3
    sleep 0.05
done
file=$3
shift 3
storescu -R -aet STORESCU -aec PACSLITE "$@" 127.0.0.1 11112 "$file"
status=$?
kill "$scp"; wait "$scp"
exit "$status"
"""


def wire_bytes(path: Path, transfer_syntax: str, directory: Path, extra: tuple[str, ...] = ()) -> bytes | None:
    """The dataset bytes storescu puts on the wire for ``path`` when ``transfer_syntax`` is
    accepted: sent the same way to DCMTK's storescp in bit-preserving mode (+B), which writes
    exactly what it read. The reference for "stored as received". None if storescu cannot
    send this file in that transfer syntax."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    sent = run(["unshare", "--net", "--map-root-user", "sh", "-c", _WIRE_SCRIPT, "wire", PREFER[transfer_syntax],
                str(directory), str(path), *extra])
    if "unable to convert dataset" in sent.stderr:
        return None
    written = list(directory.iterdir())
    assert sent.returncode == 0 and len(written) == 1, (path.name, sent.returncode, sent.stderr[-2000:])
    return dataset_bytes(written[0])


def run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=timeout)


def echoscu(port: int, *, aet: str = "ECHOSCU", aec: str = "PACSLITE") -> subprocess.CompletedProcess:
    return run(["echoscu", "-aet", aet, "-aec", aec, "127.0.0.1", str(port)])


def storescu(port: int, files: list[Path], *, aet: str = "STORESCU", aec: str = "PACSLITE",
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Send ``files`` over one association, proposing each file's own transfer syntax (-R)."""
    return run(["storescu", "-v", "-R", "-aet", aet, "-aec", aec, *extra, "127.0.0.1", str(port),
                *map(str, files)], timeout=600)


def store_results(output: str) -> dict[str, str]:
    """{file: 'Success' or the failure text} from ``storescu -v`` output."""
    results: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        sending = re.match(r"I: Sending file: (.*)", line)
        if sending:
            current = sending.group(1).strip()
            continue
        response = re.match(r"I: Received Store Response \((.*)\)", line)
        if response and current:
            results[current] = response.group(1)
            current = None
        failed = re.match(r"E: Store Failed, file: (.*?):?$", line)
        if failed:
            results.setdefault(failed.group(1).strip(), "send failed")
            current = None
    return results


def findscu(port: int, keys: list[str], directory: Path, *, aet: str = "FINDSCU",
            aec: str = "PACSLITE") -> tuple[subprocess.CompletedProcess, list[Dataset]]:
    """A worklist query (-W) with ``-k`` keys; the answers as written by ``findscu -X``."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("rsp*.dcm"):
        old.unlink()
    args = ["findscu", "-v", "-W", "-X", "--output-directory", str(directory), "-aet", aet, "-aec", aec]
    for key in keys:
        args += ["-k", key]
    result = run([*args, "127.0.0.1", str(port)])
    return result, [dcmread(p) for p in sorted(directory.glob("rsp*.dcm"))]


def qr_findscu(port: int, model: str, keys: list[str], directory: Path, *, aet: str = "WORKSTATION",
               aec: str = "PACSLITE") -> tuple[subprocess.CompletedProcess, list[Dataset]]:
    """A Query/Retrieve C-FIND (``model`` "P": patient root, "S": study root) with ``-k`` keys;
    the answers as written by ``findscu -X``."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("rsp*.dcm"):
        old.unlink()
    args = ["findscu", "-v", f"-{model}", "-X", "--output-directory", str(directory), "-aet", aet, "-aec", aec]
    for key in keys:
        args += ["-k", key]
    result = run([*args, "127.0.0.1", str(port)])
    return result, [dcmread(p) for p in sorted(directory.glob("rsp*.dcm"))]


def self_signed_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate (ECDSA P-256) and its key for ``name``, made with openssl as a
    site would make one for a modality or a workstation: (key, certificate)."""
    key, certificate = directory / f"{name}.key", directory / f"{name}.crt"
    made = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", f"/CN={name}", "-days", "30", "-keyout", str(key), "-out", str(certificate)], timeout=60)
    assert made.returncode == 0, made.stderr
    return key, certificate
