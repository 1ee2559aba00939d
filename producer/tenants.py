"""Tenants of the HTTP API: their keys, what each may touch, and how fast.

Ops give the keys as JSON, in a file (``STYLEQUEUE_API_KEYS_FILE``) or a variable
(``STYLEQUEUE_API_KEYS``)::

    {"keys": [{"tenant": "acme", "key_sha256": "…", "input": ["photos/acme/"],
               "output": ["results/acme/"], "max_priority": 2, "rate_per_s": 20, "burst": 100,
               "max_in_flight": 1000, "webhook_secret": "whsec_…"}]}

Only the sha256 of each key is stored; ``stylequeue keys create --tenant acme ...`` makes a key,
prints it once, and prints the entry to add. A request carries ``Authorization: Bearer <key>``.
``input``/``output`` are buckets or ``bucket/prefix/`` entries, as the deployment's allowlists
(which apply too); a job outside them is refused with 403. ``rate_per_s`` and ``burst`` make a
token bucket in Redis (shared by every API replica); ``max_in_flight`` caps the tenant's jobs not
ended yet. Over either: 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from producer.broker import keys, scripts
from producer.core.access import overlaps
from producer.core.errors import ConfigError, InvalidJob
from producer.core.settings import Settings

#: Prefix of the keys ``stylequeue keys create`` makes.
KEY_PREFIX = "sq_"

# Token bucket: refill at ARGV[1] tokens/s up to ARGV[2], take one. KEYS: the bucket.
# Returns 0 when taken, else the seconds until a token is there.
_TAKE = scripts.load("producer.broker", "tenant_take")


@dataclass(frozen=True)
class Tenant:
    """One API key's owner and limits (see the module docstring)."""

    tenant: str
    key_sha256: str
    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    max_priority: int = 0
    rate_per_s: float = 10.0
    burst: int = 100
    max_in_flight: int = 1000
    webhook_secret: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON entry ops keep."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _tenant(entry: Any, i: int) -> Tenant:
    """One entry of the keys document, checked."""
    if not isinstance(entry, dict):
        raise TypeError(f"keys[{i}] is not an object")
    unknown = set(entry) - {f.name for f in fields(Tenant)}
    if unknown:
        raise KeyError(f"keys[{i}]: unknown field {sorted(unknown)[0]!r}")
    name, digest = entry.get("tenant"), entry.get("key_sha256")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"keys[{i}].tenant must be 1-32 of a-z 0-9 _ - (it prefixes the tenant's job ids)")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ValueError(f"keys[{i}].key_sha256 must be 64 lower-case hex digits")
    lists: dict[str, Any] = {}
    for direction in ("input", "output"):
        value = entry.get(direction)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"keys[{i}].{direction} must list the tenant's buckets or bucket/prefix/ entries")
        for j, item in enumerate(value):
            if "/" in item and not item.endswith("/"):
                raise ValueError(f"keys[{i}].{direction}[{j}] {item!r} must end with '/' (a prefix is a folder)")
        lists[direction] = tuple(value)
    numbers: dict[str, Any] = {}
    for name_, kind in (("max_priority", int), ("rate_per_s", float), ("burst", int), ("max_in_flight", int)):
        if name_ in entry:
            value = entry[name_]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"keys[{i}].{name_} must be a number >= 0")
            numbers[name_] = kind(value)
    secret = entry.get("webhook_secret", "")
    if not isinstance(secret, str):
        raise ValueError(f"keys[{i}].webhook_secret must be a string")
    return Tenant(tenant=name, key_sha256=digest, **lists, **numbers, webhook_secret=secret)


def _check_apart(tenants: list[Tenant]) -> None:
    """Refuse two tenants whose buckets overlap: one could read or overwrite the other's objects."""
    for i, a in enumerate(tenants):
        for b in tenants[i + 1 :]:
            for x in (*a.input, *a.output):
                for y in (*b.input, *b.output):  # one's inputs against the other's outputs too
                    if overlaps(x, y):
                        raise ValueError(f"tenants {a.tenant!r} and {b.tenant!r} overlap: {x!r} and {y!r}")


def validate_entry(entry: dict[str, Any]) -> Tenant:
    """Check one keys-document entry (what ``stylequeue keys create`` prints).

    Raises:
        InvalidJob: naming what is wrong.
    """
    try:
        return _tenant(entry, 0)
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidJob("keys", str(e)) from None


def hash_key(key: str) -> str:
    """The sha256 (hex) a key is stored as."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass
class Tenants:
    """The configured tenants, by key hash and by name."""

    by_hash: dict[str, Tenant] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings) -> Tenants:
        """Read the keys from ``STYLEQUEUE_API_KEYS_FILE`` or ``STYLEQUEUE_API_KEYS``.

        Raises:
            ConfigError: naming the variable, when the JSON does not parse or an entry is wrong.
        """
        if settings.api_keys_file:
            try:
                text = Path(settings.api_keys_file).read_text()
            except OSError as e:
                raise ConfigError("STYLEQUEUE_API_KEYS_FILE", f"cannot read {settings.api_keys_file}: {e}") from None
            source = "STYLEQUEUE_API_KEYS_FILE"
        else:
            text, source = settings.api_keys or '{"keys": []}', "STYLEQUEUE_API_KEYS"
        try:
            entries = json.loads(text)["keys"]
            if not isinstance(entries, list):
                raise TypeError("'keys' is not a list")
            tenants = [_tenant(entry, i) for i, entry in enumerate(entries)]
            _check_apart(tenants)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(source, f"is not a valid keys document ({type(e).__name__}: {e})") from None
        return cls({t.key_sha256: t for t in tenants})

    def authenticate(self, authorization: str | None) -> Tenant | None:
        """The tenant of an ``Authorization: Bearer <key>`` header, or ``None``."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        return self.by_hash.get(hash_key(authorization.split(" ", 1)[1].strip()))

    def named(self, name: str) -> Tenant | None:
        """The tenant called ``name`` (for the notifier's signing secret)."""
        return next((t for t in self.by_hash.values() if t.tenant == name), None)


class KeysSource:
    """The keys document as it is now: reloaded when its file changes, without a restart.

    ``STYLEQUEUE_API_KEYS_FILE`` is looked at (one ``stat``) at most every ``check_s`` seconds; a
    changed file is read again, so a revoked key stops working and a new tenant's key (and its
    webhook secret) starts within about that long on every replica and notifier. A changed file
    that does not parse is refused with an error in the log, and the keys in force stay. Keys
    given inline (``STYLEQUEUE_API_KEYS``) are read once.

    Raises:
        ConfigError: from the constructor, when the document in force at start is wrong.
    """

    def __init__(self, settings: Settings, check_s: float = 1.0) -> None:
        self.settings = settings
        self.check_s = check_s
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._tenants = Tenants.load(settings)
        self._checked = time.monotonic()

    def current(self) -> Tenants:
        """The tenants in force (reloading first if the file changed)."""
        if not self.settings.api_keys_file or time.monotonic() - self._checked < self.check_s:
            return self._tenants
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._tenants = Tenants.load(self.settings)
                    log.info(
                        "keys reloaded from %s: %d tenants", self.settings.api_keys_file, len(self._tenants.by_hash)
                    )
                except ConfigError as e:
                    log.error("the keys file changed but is not valid; the keys in force stay: %s", e)
        return self._tenants

    def _stat(self) -> tuple[int, int, int] | None:
        if not self.settings.api_keys_file:
            return None
        try:
            st = os.stat(self.settings.api_keys_file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)


def take_token(redis: Any, tenant: Tenant) -> float:
    """Take one request from the tenant's bucket: 0 when allowed, else the seconds to wait."""
    return float(_TAKE(redis, 1, keys.RATE.format(tenant.tenant), tenant.rate_per_s, tenant.burst, time.time()))
