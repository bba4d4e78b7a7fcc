"""The .metadata.json text mongodump writes for a collection, which an archive's prelude carries
(mongo-tools mongodump/metadata_dump.go; mongorestore/metadata.go reads it back)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from bson import json_util
from bson.binary import Binary


def metadata_json(info: Mapping[str, Any], indexes: Iterable[Mapping[str, Any]]) -> str:
    """The .metadata.json text mongodump writes for a collection (mongo-tools
    mongodump/metadata_dump.go): `{options, indexes, uuid, collectionName, type}` in that order,
    canonical Extended JSON v2, compact, UTF-8 (not \\u-escaped), as Go's MarshalExtJSON writes it.

    `info` is the collection's listCollections document ({name, type, options, info: {uuid}});
    `indexes` its listIndexes documents in server order (ignored for a view: mongodump lists
    none). `options` is left out when empty, `uuid` when the server gives none (views,
    timeseries), `type` when empty. Pass documents decoded by pymongo as they came (int64
    values stay bson.Int64, so `$numberLong` stays `$numberLong`)."""
    kind = info.get("type") or ""
    document: dict[str, Any] = {}
    options = info.get("options") or {}
    if options:
        document["options"] = options
    document["indexes"] = [] if kind == "view" else list(indexes)
    uuid_hex = _uuid_hex((info.get("info") or {}).get("uuid"))
    if uuid_hex:
        document["uuid"] = uuid_hex
    document["collectionName"] = info["name"]
    if kind:
        document["type"] = kind
    text = json_util.dumps(
        document, json_options=json_util.CANONICAL_JSON_OPTIONS, separators=(",", ":"), ensure_ascii=False
    )
    # Go escapes these two always; they can only occur inside strings here.
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _uuid_hex(value: Any) -> str:
    """mongo-tools common/db/namespaces.go GetUUID: hex of a subtype-4 binary, else ""."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, Binary) and value.subtype == 4:
        return bytes(value).hex()
    return ""
