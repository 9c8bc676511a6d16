"""DICOM over TLS (PS3.15 B.1, the BCP 195 profile): the contexts pacslite listens and sends with.

- **Listening** (the TLS port): pacslite's certificate; TLS 1.2 or later with forward-secret
  AEAD ciphers only; a client certificate is asked for but not required. A client that
  presents one must present one pacslite trusts: pinned for an AE on the modalities page, or
  issued by ``DICOM_TLS_CA_FILE``; whether it is *its* AE's is checked when it associates
  (:func:`pacslite.ris.aes.admit`). The context is made again when the pinned certificates change.
- **Sending** to an AE marked TLS: pacslite presents its certificate; the AE's is checked
  against the one pinned for it, else against ``DICOM_TLS_CA_FILE``, else (said in the log)
  not at all: the connection is encrypted but the peer unauthenticated.
"""
from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from ..core import certificates, db
from ..ris import aes

log = logging.getLogger(__name__)

#: BCP 195 (RFC 9325): ECDHE or DHE key exchange, AES-GCM or ChaCha20-Poly1305 (TLS 1.3's own are all allowed).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def _hardened(context: ssl.SSLContext, settings: Mapping[str, Any]) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(settings["DICOM_TLS_CERTIFICATE"], settings["DICOM_TLS_KEY"])
    return context


def ensure_certificate(settings: Mapping[str, Any]) -> None:
    """pacslite's certificate, made at the first start when none is there."""
    certificate, key = Path(settings["DICOM_TLS_CERTIFICATE"]), Path(settings["DICOM_TLS_KEY"])
    if certificates.ensure(certificate, key, settings["AE_TITLE"]):
        log.warning("made pacslite's TLS certificate %s (SHA-256 %s); replace it and its key to use the"
                    " hospital's own", certificate, certificates.fingerprint(certificate))


def server_context(settings: Mapping[str, Any], pinned: str) -> ssl.SSLContext:
    context = _hardened(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), settings)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.verify_mode = ssl.CERT_OPTIONAL
    if pinned:
        context.load_verify_locations(cadata=pinned)
    if settings["DICOM_TLS_CA_FILE"]:
        context.load_verify_locations(cafile=settings["DICOM_TLS_CA_FILE"])
    return context


class ServerContexts:
    """The listening context, made again when the pinned certificates changed. Asked for at
    each accepted connection, in the accepting thread: the database is looked at no more than
    once every :data:`RECHECK_SECONDS`, and a failed look keeps the context there is."""

    RECHECK_SECONDS = 5.0

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        pinned = self._pinned()
        self._pinned_digest = hashlib.sha256(pinned.encode()).hexdigest()
        self._context = server_context(settings, pinned)
        self._checked = time.monotonic()

    def _pinned(self) -> str:
        conn = db.connect(self.settings["DATABASE"])
        try:
            return aes.pinned_certificates(conn)
        finally:
            conn.close()

    def current(self) -> ssl.SSLContext:
        with self._lock:
            if time.monotonic() - self._checked < self.RECHECK_SECONDS:
                return self._context
            self._checked = time.monotonic()
            try:
                pinned = self._pinned()
                digest = hashlib.sha256(pinned.encode()).hexdigest()
                if digest != self._pinned_digest:
                    self._context, self._pinned_digest = server_context(self.settings, pinned), digest
            except Exception:  # the database busy, a pinned certificate unreadable: as before
                log.exception("could not reload the pinned certificates; the TLS port keeps the ones it has")
            return self._context


def client_context(settings: Mapping[str, Any], destination: Mapping[str, Any]) -> ssl.SSLContext:
    """The context to send to ``destination`` (an AE marked TLS) with."""
    context = _hardened(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), settings)
    context.check_hostname = False  # modalities are known by address and pinned certificate, rarely by name
    if destination["certificate"]:
        context.load_verify_locations(cadata=destination["certificate"])
    elif settings["DICOM_TLS_CA_FILE"]:
        context.load_verify_locations(cafile=settings["DICOM_TLS_CA_FILE"])
    else:
        context.verify_mode = ssl.CERT_NONE
        log.warning("sending to %s over TLS without checking its certificate: pin it on the modalities page"
                    " or set DICOM_TLS_CA_FILE", destination["ae_title"])
    return context


def tls_args(settings: Mapping[str, Any], destination: Mapping[str, Any]) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for an association to ``destination``; None when it is not marked TLS."""
    if not destination["tls"]:
        return None
    return client_context(settings, destination), destination["host"]
