"""Reverse proxies the admin trusts (``TRUSTED_PROXIES``), and the PROXY protocol.

Behind a load balancer (docs/beyond-one-server.md) every connection comes from its address.
The pages read the client's address from ``X-Forwarded-For`` (web/proxies.py); DICOM and HL7,
passed through in TCP mode, from the PROXY protocol's first line (HAProxy's ``send-proxy``,
version 1): ``PROXY TCP4 <client> <proxy> <client port> <proxy port>\\r\\n``. Either is believed
only from a trusted proxy; from anyone else a connection is what it is.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The longest PROXY v1 line (the protocol's own bound), and how long a trusted proxy may take to send it.
HEADER_MAX_BYTES = 107
HEADER_SECONDS = 5.0


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """``["10.0.0.5", "192.168.1.0/24"]`` → networks; SystemExit naming a malformed entry (at start-up)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise SystemExit(f"TRUSTED_PROXIES: {entry!r} is not an IP address or network") from None
    return networks


def is_trusted(address: str, trusted: list[Network]) -> bool:
    try:
        found = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(found in network for network in trusted)


class ProxyHeaderError(OSError):
    """A trusted proxy's connection did not start with a PROXY v1 line."""


def parse_header(line: bytes) -> tuple[str, int] | None:
    """The client's (address, port) from a PROXY v1 line (with its CRLF); None for
    ``PROXY UNKNOWN`` (the proxy's own health check: the connection's own address stands)."""
    if not line.endswith(b"\r\n") or len(line) > HEADER_MAX_BYTES:
        raise ProxyHeaderError("not a PROXY protocol line")
    parts = line[:-2].decode("ascii", "replace").split(" ")
    if parts[:2] == ["PROXY", "UNKNOWN"]:
        return None
    if len(parts) != 6 or parts[0] != "PROXY" or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("not a PROXY protocol line")
    try:
        address = ipaddress.ip_address(parts[2])
        port = int(parts[4])
    except ValueError:
        raise ProxyHeaderError("a malformed PROXY protocol line") from None
    if (address.version == 4) != (parts[1] == "TCP4") or not 0 < port < 65536:
        raise ProxyHeaderError("a malformed PROXY protocol line")
    return str(address), port


def read_header(sock: socket.socket) -> tuple[str, int] | None:
    """Read a PROXY v1 line from the start of ``sock``, byte by byte (nothing after it is
    consumed: the DICOM association follows); see :func:`parse_header`."""
    sock.settimeout(HEADER_SECONDS)
    line = b""
    try:
        while not line.endswith(b"\r\n") and len(line) < HEADER_MAX_BYTES:
            byte = sock.recv(1)
            if not byte:
                raise ProxyHeaderError("closed before the PROXY protocol line")
            line += byte
    finally:
        sock.settimeout(None)
    return parse_header(line)
