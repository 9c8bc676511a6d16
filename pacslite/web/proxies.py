"""The client's address behind a reverse proxy, believed only from proxies the admin trusts.

Behind a proxy every request comes from the proxy's address, so login throttling would lock
the whole hospital out at once and the audit log would name the proxy. ``X-Forwarded-For`` is
read only when the connection comes from an address in ``TRUSTED_PROXIES``; from anyone else
it is ignored, so a client cannot choose the address it is counted and audited under.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable

from ..core.proxies import Network, parse_networks

def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: str, trusted: list[Network]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    address in ``X-Forwarded-For`` (read from the right) that is not a trusted proxy."""
    def is_trusted(address: Any) -> bool:
        return address is not None and any(address in network for network in trusted)

    if not trusted or not is_trusted(_address(peer)):
        return peer
    client = peer
    for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
        address = _address(hop)
        if address is None:
            break  # garbage from further away than the proxy we trust: stop at what we know
        client = str(address)
        if not is_trusted(address):
            break
    return client


class TrustedProxies:
    """WSGI middleware: REMOTE_ADDR becomes the client's address (see :func:`client_address`)."""

    def __init__(self, app: Callable, trusted: Iterable[str]) -> None:
        self.app = app
        self.trusted = parse_networks(trusted)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        if self.trusted:
            environ["REMOTE_ADDR"] = client_address(environ.get("REMOTE_ADDR", ""),
                                                    environ.get("HTTP_X_FORWARDED_FOR", ""), self.trusted)
        return self.app(environ, start_response)
