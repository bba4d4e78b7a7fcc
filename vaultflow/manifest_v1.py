"""Manifests of schema_version 1 (vaultflow before issue 9), upgraded on read to version 2.

Version 1 is frozen history: only the PostgreSQL and Redis engines ever wrote it, so this module
names them (and nothing else needs to: a new engine starts at version 2). `upgrade_v1` is a
pure function of the parsed JSON; manifest.parse_manifest validates its result as version 2.

What changes (docs/repository-format.md, "Version 1"):
- `mode` (absent in the oldest: 'logical') stays; `consistency` gains `type`, chosen by engine
  and mode: postgres/logical -> 'postgres-logical', postgres/physical -> 'postgres-physical',
  redis/rdb -> 'redis-rdb', redis/aof -> 'redis-aof'.
- the top-level `database_properties` (PostgreSQL logical backups) moves into the consistency
  record; on other backups it was always null and is dropped.
- each fingerprint's `rows` becomes `count` (`method` defaults to 'text', version 1's default).
"""

from __future__ import annotations

import copy
from typing import Any

V1_CONSISTENCY_TYPES = {
    ("postgres", "logical"): "postgres-logical",
    ("postgres", "physical"): "postgres-physical",
    ("redis", "rdb"): "redis-rdb",
    ("redis", "aof"): "redis-aof",
}
V1_DEFAULT_METHOD = {"postgres-logical": "exported snapshot per database"}


def upgrade_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """A version 1 manifest (parsed JSON) as version 2; `doc` is not changed.

    ValueError (the manifest is then reported as unreadable, naming its key) for an engine and
    mode that version 1 never wrote, a database_properties record on a backup other than a
    PostgreSQL logical one, or fingerprints that are not objects."""
    new = copy.deepcopy(doc)
    new["schema_version"] = 2
    engine, mode = new.get("engine"), new.setdefault("mode", "logical")
    kind = V1_CONSISTENCY_TYPES.get((engine, mode))
    if kind is None:
        raise ValueError(
            f"version 1 manifests of engine {engine!r} with mode {mode!r} do not exist "
            f"(version 1 knew {', '.join('/'.join(k) for k in V1_CONSISTENCY_TYPES)})"
        )
    consistency = dict(new.get("consistency") or {})
    consistency["type"] = kind
    if kind in V1_DEFAULT_METHOD:
        consistency.setdefault("method", V1_DEFAULT_METHOD[kind])
    properties = new.pop("database_properties", None)
    if properties is not None:
        if kind != "postgres-logical":
            raise ValueError(
                f"database_properties on a {engine}/{mode} backup (only PostgreSQL logical backups record them)"
            )
        consistency["database_properties"] = properties
    new["consistency"] = consistency
    fingerprints = new.get("fingerprints") or {}
    if not isinstance(fingerprints, dict) or not all(isinstance(units, dict) for units in fingerprints.values()):
        raise ValueError("fingerprints must map each database to an object of units")
    new["fingerprints"] = {
        group: {unit: _fingerprint(value) for unit, value in units.items()} for group, units in fingerprints.items()
    }
    return new


def _fingerprint(value: Any) -> Any:
    if not isinstance(value, dict) or "rows" not in value:
        return value  # version 2 validation names what is wrong with it
    upgraded = {"count": value["rows"], **{k: v for k, v in value.items() if k != "rows"}}
    upgraded.setdefault("method", "text")
    return upgraded
