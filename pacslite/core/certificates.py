"""pacslite's own TLS certificate: made at the first start when none is configured.

A self-signed certificate (ECDSA P-256, ten years) whose SHA-256 fingerprint the admin gives
to the modalities that pin it; the admin may replace both files (a certificate from the
hospital's CA) and restart. The key is written readable by its owner only.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import socket
import ssl
from pathlib import Path

VALID_DAYS = 3650


def ensure(certificate: Path, key: Path, common_name: str) -> bool:
    """Make a self-signed certificate and its key unless both exist; True when made."""
    if certificate.exists() and key.exists():
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pacslite")])
    now = datetime.datetime.now(datetime.timezone.utc)
    made = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(socket.gethostname() or "pacslite")]),
                           critical=False)
            .sign(private, hashes.SHA256()))
    key.parent.mkdir(parents=True, exist_ok=True)
    certificate.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    _write(key, key_bytes, 0o600)
    _write(certificate, made.public_bytes(serialization.Encoding.PEM), 0o644)
    return True


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fingerprint(certificate: Path) -> str:
    """The SHA-256 fingerprint of a PEM certificate file, as ``AB:CD:…``."""
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(certificate.read_text())).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
