"""User-controlled names (target names, database names) as repository key segments.

A name becomes one key segment by percent-encoding its UTF-8 bytes: bytes in `a-z 0-9 _ . -`
stay as they are, every other byte becomes `%XX` (upper-case hex) — upper-case letters too, and
a leading dot. So a segment:

- never contains `/` and is never `.`, `..` or a hidden name: it cannot leave its directory;
- maps back to exactly one name (`decode_name`), and two names never give segments that differ
  only in letter case (`Sales` -> `%53ales`, `sales` -> `sales`), so case-insensitive
  filesystems and stores keep them apart;
- is the name itself for the usual names (block names, `db.example.com-5432`, `shop_2024`),
  so repositories written before this encoding keep their layout for such names.

Prefect artifact keys allow only `a-z 0-9 -`: `artifact_slug` gives a name that fits, made
unique by a short hash whenever the name itself does not fit.
"""

from __future__ import annotations

import hashlib
import re

from vaultflow.errors import ConfigError

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_.-")
_CANONICAL = re.compile(r"(?:[a-z0-9_.-]|%[0-9A-F]{2})+")
MAX_SEGMENT = 240  # bytes; common filesystems allow 255 per path component, suffixes need room


def encode_name(name: str, what: str = "name") -> str:
    """`name` as one repository key segment (see the module docstring); ASCII, <= 240 bytes.

    `what` names the object in errors ("target name", "database name"). Raises ConfigError for
    an empty name or one whose encoding exceeds MAX_SEGMENT bytes."""
    if not name:
        raise ConfigError(f"the {what} is empty: give it a name (it names a directory in the repository)")
    out = []
    for position, byte in enumerate(name.encode("utf-8", "surrogatepass")):
        if byte in _SAFE and not (position == 0 and byte == ord(".")):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    segment = "".join(out)
    if len(segment) > MAX_SEGMENT:
        raise ConfigError(
            f"the {what} {name!r} is too long for a repository key ({len(segment)} bytes once "
            f"encoded, at most {MAX_SEGMENT}): choose a shorter one"
        )
    return segment


def decode_name(segment: str) -> str:
    """The name that `encode_name` turned into `segment`. Raises ValueError for a segment that
    encode_name cannot have produced (e.g. a directory from before the encoding: `Prod`)."""
    if not _CANONICAL.fullmatch(segment):
        raise ValueError(f"{segment!r} is not an encoded name")
    raw = bytearray()
    i = 0
    while i < len(segment):
        if segment[i] == "%":
            raw.append(int(segment[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(segment[i]))
            i += 1
    name = raw.decode("utf-8", "surrogatepass")
    if encode_name(name) != segment:  # e.g. %61 for a safe 'a', or a bare leading dot
        raise ValueError(f"{segment!r} is not the canonical encoding of {name!r}")
    return name


_ARTIFACT_SAFE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def artifact_slug(name: str) -> str:
    """`name` as part of a Prefect artifact key (only `a-z 0-9 -`): the name itself when it
    fits, else a readable lower-case form plus 8 hex digits of its SHA-256, so `Sales` and
    `sales` (or `a/b` and `a-b`) get different keys. At most 60 characters."""
    if _ARTIFACT_SAFE.fullmatch(name) and len(name) <= 60:
        return name
    readable = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:51].strip("-")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest
