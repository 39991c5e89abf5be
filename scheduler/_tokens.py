"""Join tokens and node enrolments, kept in the scheduler's SQLite file.

An operator mints a join token (``anypu token create``): 32 random bytes, shown once,
stored only as its SHA-256 with an expiry, the tiers it may join and a capacity cap. An
agent spends it once to enrol: the scheduler signs the agent's certificate and records
the enrolment (node name, certificate fingerprint, the token's scope). From then on the
node proves who it is with that certificate, and every Join is checked against the scope
recorded here, so a node cannot grow past its cap or move tier by editing its Join.

Tokens are random and long, so a plain hash suffices: there is nothing to brute-force
offline, and comparing by primary-key lookup on the hash leaks nothing useful by timing.
The module has its own connection to the same WAL-mode database as ``StateStore``.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from anypu.errors import AnypuError, AuthenticationError, ConfigError
from anypu.placement import TIERS
from anypu.scheduler._store import open_state_db

__all__ = [
    "AccessDeniedError",
    "Enrolment",
    "NameTakenError",
    "Scope",
    "TokenStore",
    "parse_ttl",
]

TOKEN_PREFIX = "anypu-join-"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS join_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    tiers TEXT NOT NULL,
    max_devices INTEGER NOT NULL,
    max_memory_bytes INTEGER NOT NULL,
    used_at REAL,
    used_by TEXT
);
CREATE TABLE IF NOT EXISTS enrolments (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    tiers TEXT NOT NULL,
    max_devices INTEGER NOT NULL,
    max_memory_bytes INTEGER NOT NULL,
    enrolled_at REAL NOT NULL
);
"""

_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_TTL_S = 365 * 86400


class AccessDeniedError(AuthenticationError):
    """The credential is valid but does not allow this (gRPC PERMISSION_DENIED)."""


class NameTakenError(AnypuError):
    """A live node already holds this name (gRPC ALREADY_EXISTS)."""


@dataclass(frozen=True)
class Scope:
    """What a credential lets a node be: its tiers and at most this much capacity.

    ``max_devices``/``max_memory_bytes`` of 0 mean no cap.
    """

    tiers: tuple[str, ...] = TIERS
    max_devices: int = 0
    max_memory_bytes: int = 0

    def check(self, name: str, tier: str, devices: int, memory_bytes: int) -> None:
        """Raise ``AccessDeniedError`` naming the limit a node ``name`` would break."""
        if tier not in self.tiers:
            raise AccessDeniedError(
                f"node {name} may join as tier {'/'.join(self.tiers)} only, not {tier!r}:"
                f" mint a token with --tier {tier} for it"
            )
        if self.max_devices and devices > self.max_devices:
            raise AccessDeniedError(
                f"node {name} reports {devices} devices but its token allows at most"
                f" {self.max_devices}: mint a token with a larger --max-devices"
            )
        if self.max_memory_bytes and memory_bytes > self.max_memory_bytes:
            raise AccessDeniedError(
                f"node {name} reports {memory_bytes / 2**30:.1f} GiB of device memory but its"
                f" token allows at most {self.max_memory_bytes / 2**30:.1f} GiB: mint a token"
                " with a larger --max-memory"
            )


UNLIMITED = Scope()


@dataclass(frozen=True)
class Enrolment:
    """A node that spent a token: its certificate's fingerprint and the token's scope."""

    name: str
    fingerprint: str
    scope: Scope
    enrolled_at: float

    def admit(self, name: str, tier: str, devices: int, memory_bytes: int) -> None:
        """Check a Join from the holder of this enrolment's certificate."""
        if name != self.name:
            raise AccessDeniedError(
                f"this node's certificate is for {self.name!r} but its Join names {name!r}:"
                " a node cannot speak for another node"
            )
        self.scope.check(name, tier, devices, memory_bytes)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_ttl(text: str, flag: str = "--ttl", zero: bool = False) -> float:
    """Seconds from ``90s``, ``15m``, ``1h``, ``7d``, ``2w`` or a plain number of seconds
    (``zero``: 0 is allowed)."""
    match = _TTL.match(text)
    if match is None:
        raise ConfigError(f"{flag} {text!r} is not a duration: use e.g. 90s, 15m, 1h, 7d or 2w")
    seconds = float(match.group(1)) * _TTL_UNITS[match.group(2)]
    if not (0 <= seconds if zero else 0 < seconds) or seconds > _MAX_TTL_S:
        least = "0" if zero else "more than 0"
        raise ConfigError(f"{flag} {text!r} must be {least} and at most 365d")
    return seconds


def _tiers(tiers: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(tiers))
    bad = [t for t in chosen if t not in TIERS]
    if bad or not chosen:
        raise ConfigError(f"token tiers {bad or '(none)'} are invalid: choose from {list(TIERS)}")
    return chosen


class TokenStore:
    """Join tokens and enrolments in ``<state_dir>/anypu.db``; thread-safe."""

    def __init__(self, state_dir: str | Path) -> None:
        _, self._db = open_state_db(state_dir, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(
        self,
        ttl_s: float,
        tiers: Iterable[str],
        now: float,
        max_devices: int = 0,
        max_memory_bytes: int = 0,
    ) -> str:
        """Mint a token valid for ``ttl_s``; return it (it is not stored, only its hash)."""
        if not (math.isfinite(ttl_s) and 0 < ttl_s <= _MAX_TTL_S):
            raise ConfigError(f"a token's ttl must be in (0, 365 days], got {ttl_s} s")
        if max_devices < 0 or max_memory_bytes < 0:
            raise ConfigError("--max-devices and --max-memory must be ≥ 0 (0: no cap)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._db.execute(
                "INSERT INTO join_tokens (token_hash, created_at, expires_at, tiers,"
                " max_devices, max_memory_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    token_hash(token),
                    now,
                    now + ttl_s,
                    ",".join(_tiers(tiers)),
                    max_devices,
                    max_memory_bytes,
                ),
            )
        return token

    def redeem(
        self,
        token: str,
        name: str,
        tier: str,
        devices: int,
        memory_bytes: int,
        fingerprint: str,
        now: float,
    ) -> Enrolment:
        """Spend ``token`` to enrol node ``name``; atomically, so a token is spent once.

        Raises ``AuthenticationError`` for an unknown, expired or spent token and
        ``AccessDeniedError`` when the node falls outside the token's scope (the token
        is then left unspent: the operator may have picked the wrong tier).
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT expires_at, tiers, max_devices, max_memory_bytes, used_at, used_by"
                    " FROM join_tokens WHERE token_hash = ?",
                    (token_hash(token),),
                ).fetchone()
                if row is None:
                    raise AuthenticationError(
                        "the scheduler does not know this join token: mint one with"
                        " `anypu token create` and pass it with --token"
                    )
                expires_at, tiers, max_devices, max_memory, used_at, used_by = row
                if used_at is not None:
                    raise AuthenticationError(
                        f"this join token was already used (by node {used_by}): join tokens"
                        " are single-use, mint a new one with `anypu token create`"
                    )
                if now >= expires_at:
                    raise AuthenticationError(
                        "this join token has expired: mint a new one with `anypu token create`"
                    )
                scope = Scope(tuple(tiers.split(",")), max_devices, max_memory)
                scope.check(name, tier, devices, memory_bytes)
                self._db.execute(
                    "UPDATE join_tokens SET used_at = ?, used_by = ? WHERE token_hash = ?",
                    (now, name, token_hash(token)),
                )
                enrolment = Enrolment(name, fingerprint, scope, now)
                self._put_enrolment(enrolment)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return enrolment

    def enrol(self, enrolment: Enrolment) -> None:
        """Record an enrolment made without a join token (the admin token's)."""
        with self._lock:
            self._put_enrolment(enrolment)

    def _put_enrolment(self, e: Enrolment) -> None:
        self._db.execute(
            "INSERT INTO enrolments (name, fingerprint, tiers, max_devices, max_memory_bytes,"
            " enrolled_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
            " fingerprint=excluded.fingerprint, tiers=excluded.tiers,"
            " max_devices=excluded.max_devices, max_memory_bytes=excluded.max_memory_bytes,"
            " enrolled_at=excluded.enrolled_at",
            (
                e.name,
                e.fingerprint,
                ",".join(e.scope.tiers),
                e.scope.max_devices,
                e.scope.max_memory_bytes,
                e.enrolled_at,
            ),
        )

    def enrolment(self, name: str) -> Enrolment | None:
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint, tiers, max_devices, max_memory_bytes, enrolled_at"
                " FROM enrolments WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        fingerprint, tiers, max_devices, max_memory, at = row
        scope = Scope(tuple(tiers.split(",")), max_devices, max_memory)
        return Enrolment(name, fingerprint, scope, at)

    def tokens(self, now: float) -> list[dict[str, object]]:
        """Every token's metadata (never the token): for ``anypu token list``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT substr(token_hash, 1, 12), created_at, expires_at, tiers, max_devices,"
                " max_memory_bytes, used_at, used_by FROM join_tokens ORDER BY created_at"
            ).fetchall()
        keys = ("id", "created_at", "expires_at", "tiers", "max_devices", "max_memory_bytes")
        result = []
        for row in rows:
            item: dict[str, object] = dict(zip(keys, row[:6], strict=True))
            item["state"] = (
                "used" if row[6] is not None else "expired" if now >= row[2] else "valid"
            )
            item["used_by"] = row[7] or ""
            result.append(item)
        return result
