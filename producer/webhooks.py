"""Webhooks: Standard Webhooks signatures, and the guard on where they may go.

Each delivery carries three headers (https://www.standardwebhooks.com):

* ``webhook-id``: the event's id, the same on every retry (receivers dedupe on it);
* ``webhook-timestamp``: Unix seconds of this attempt;
* ``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(secret, "<id>.<timestamp>.<body>")), where
  the secret is the tenant's ``whsec_…`` value, base64-decoded after the prefix.

The guard (:func:`check_url`) runs when a job is submitted and again before every delivery (a
name may resolve elsewhere by then): ``https://`` only (unless ``STYLEQUEUE_WEBHOOK_ALLOW_HTTP``),
the host must match ``STYLEQUEUE_WEBHOOK_HOSTS`` when that is set, and no address it resolves to
may be private, loopback, link-local, multicast or reserved, unless it is inside one of the
networks ops list in ``STYLEQUEUE_WEBHOOK_ALLOW_NETWORKS``: the service must not be a way into
the network it runs in (the cloud's metadata address, an internal admin port).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import ipaddress
import secrets
import socket
from urllib.parse import urlsplit

from producer.core.errors import ConfigError, InvalidJob
from producer.core.settings import Settings

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 24 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header of one delivery."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secret: str, msg_id: str, timestamp: str, body: str, signature_header: str) -> bool:
    """Whether one of the header's signatures is right (what a receiver does)."""
    expected = sign(secret, msg_id, int(timestamp), body).split(",", 1)[1]
    given = [s.split(",", 1)[1] for s in signature_header.split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, g) for g in given)


class Unresolved(InvalidJob):
    """The webhook's host name does not resolve (now)."""


def check_url(url: str, settings: Settings, field: str = "webhook") -> list[str]:
    """Refuse a webhook URL the guard does not allow (see the module docstring); its addresses.

    Returns:
        The addresses the host resolved to, in the resolver's order, every one checked: a delivery
        connects to these, never to a second lookup's answer.

    Raises:
        InvalidJob: naming ``field`` and why (:class:`Unresolved` when the name does not resolve
            now: at delivery time, a reason to try again later, not to give up).
    """
    if not isinstance(url, str) or len(url) > 2048:
        raise InvalidJob(field, "must be an https:// URL of at most 2048 characters")
    parts = urlsplit(url)
    schemes = ("https", "http") if settings.webhook_allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise InvalidJob(field, f"{url[:200]!r} is not an {' or '.join(s + '://' for s in schemes)} URL")
    host = parts.hostname.lower()
    if settings.webhook_hosts and not any(fnmatch.fnmatch(host, pattern) for pattern in settings.webhook_hosts):
        raise InvalidJob(field, f"host {host!r} is not in STYLEQUEUE_WEBHOOK_HOSTS")
    try:
        found = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
    except OSError:
        raise Unresolved(field, f"host {host!r} does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))  # the resolver's order, once each
    allowed = _networks(settings.webhook_allow_networks)
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if _internal(ip) and not any(ip.version == net.version and ip in net for net in allowed):
            raise InvalidJob(field, f"host {host!r} resolves to {ip}, not a public address: refused")
    return addresses


def _networks(entries: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(e, strict=False) for e in entries]
    except ValueError as e:
        raise ConfigError("STYLEQUEUE_WEBHOOK_ALLOW_NETWORKS", str(e)) from None


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Anything but a globally reachable unicast address (IPv4-mapped ones judged as IPv4).

    ``is_global`` is the test, not a list of private ranges: it also refuses shared address space
    (100.64.0.0/10, where cloud metadata services such as Alibaba's 100.100.100.200 live),
    benchmarking and documentation ranges, and whatever IANA adds as not global.
    """
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return not ip.is_global or ip.is_multicast
