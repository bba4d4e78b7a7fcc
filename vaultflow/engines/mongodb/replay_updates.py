"""Oplog update entries (`op: "u"`) as ordinary updates a server runs without `applyOps`.

An update entry's `o` comes in four shapes; `translate_update(o)` turns each into a `Translation`:

- a whole document (no `$` keys): a replacement, run as `replace_one({_id}, o, upsert=True)`;
- classic `{"$set": ..., "$unset": ...}` (mongod before 5.0, `$v` 1 or absent): run as is;
- mongod 5.0+ delta `{"$v": 2, "diff": {...}}` (replay_delta.py has the format): a `$set`/`$unset`
  where one exists, guarded by the conditions under which it equals mongod's diff applier, the
  pipeline form running where the guard fails; otherwise the pipeline form alone;
- SecantusDB's `{"$v": 2, "diff": {"updatedFields": {path: value}, "removedFields": [path],
  "truncatedArrays": [{field, newSize}], "disambiguatedPaths": {path: [segments]}}}` (a change
  stream's updateDescription, docs/mongodb-secantus.md). Values are absolute: `$set` the updated
  paths, `$unset` the removed ones, then cut the arrays (`$push` of nothing with `$slice`). A
  dotted path is read as nested fields; `disambiguatedPaths` gives the exact segments when
  present. **Ambiguity**: SecantusDB writes a field literally named "a.b" as the path "a.b" and
  does not disambiguate it, so it cannot be told from field b of a. Such paths are returned in
  `Translation.dotted_paths`; after writing, the replayer reads those documents back and raises
  if one holds a field whose name joins segments of the path (`dotted_name_conflict`). What stays
  undetectable: a new "a.b" field created where no such name existed before; it is replayed as
  {a: {b}}. A single top-level segment that cannot be a `$set` path (a leading '$', or a '.'
  named by disambiguatedPaths) is written with `$setField`; deeper ones raise.

A diff this module cannot translate raises `UntranslatableUpdate` (the replayer adds the entry's
ts and namespace): nothing is applied approximately.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vaultflow.engines.mongodb.replay_delta import (
    DocDiff,
    UntranslatableUpdate,
    delta_operators,
    delta_pipeline,
    parse_diff,
    plain,
)

__all__ = ["Translation", "UntranslatableUpdate", "dotted_name_conflict", "translate_update"]

Update = dict[str, Any] | list[dict[str, Any]]  # an update document or an update pipeline
DESCRIPTION_KEYS = {"updatedFields", "removedFields", "truncatedArrays", "disambiguatedPaths"}


@dataclass
class Translation:
    """What to run for one update entry. `replacement`: a whole document (replace_one, upsert);
    else `updates`, run in order against {_id} without upsert. With a `guard` (an aggregation
    expression), `updates[0]` runs only on a document where it is true and `fallback` (an update
    pipeline) where it is false. `dotted_paths`: segments of SecantusDB paths to check for dotted
    field names after writing."""

    replacement: dict[str, Any] | None = None
    updates: list[Update] = field(default_factory=list)
    guard: Any = None
    fallback: list[dict[str, Any]] | None = None
    dotted_paths: list[list[str]] = field(default_factory=list)


def translate_update(o: Any) -> Translation:
    """The update(s) that reproduce oplog update `o` (any of the shapes in the module docstring).
    Raises UntranslatableUpdate naming the problem."""
    if not isinstance(o, Mapping) or not o:
        raise UntranslatableUpdate(f"update entry o is not a document: {o!r}")
    if not any(str(key).startswith("$") for key in o):  # a field named "diff" is a field
        return Translation(replacement=dict(o))
    version = o.get("$v")
    if "diff" in o:
        if version != 2:
            raise UntranslatableUpdate(f"diff with $v {version!r} (only $v 2 diffs exist)")
        diff = o["diff"]
        if not isinstance(diff, Mapping) or not diff:
            raise UntranslatableUpdate(f"$v 2 diff is not a non-empty document: {diff!r}")
        if set(diff) <= DESCRIPTION_KEYS:
            return from_description(diff)
        return from_delta(diff)
    return from_classic(o)


# -- classic ($v 1) -------------------------------------------------------------------------


def from_classic(o: Mapping[str, Any]) -> Translation:
    """`{"$v": 1?, "$set": {...}, "$unset": {...}}` as the same update; other operators raise
    (the classic oplog writes only these two: their values are absolute, so replay is idempotent)."""
    update = {key: value for key, value in o.items() if key != "$v"}
    unknown = sorted(set(update) - {"$set", "$unset"})
    if unknown or not update:
        raise UntranslatableUpdate(f"classic update with {unknown or 'no operators'} (expected $set/$unset)")
    return Translation(updates=[update])


# -- mongod delta ($v 2) --------------------------------------------------------------------


def from_delta(diff: Mapping[str, Any]) -> Translation:
    """A mongod `$v: 2` diff as a guarded `$set`/`$unset` when one exists (the pipeline form
    where the guard fails), else as the pipeline form."""
    parsed = parse_diff(diff)
    if not isinstance(parsed, DocDiff):
        raise UntranslatableUpdate("the diff of a whole document is an array diff")
    operators = delta_operators(parsed)
    if operators is None:
        return Translation(updates=[delta_pipeline(parsed)])
    update, conditions = operators
    if not conditions:
        return Translation(updates=[update])
    guard: Any = True
    for condition in reversed(conditions):  # parents first; $cond evaluates only the branch taken
        guard = {"$cond": [condition, guard, False]}
    return Translation(updates=[update], guard=guard, fallback=delta_pipeline(parsed))


# -- SecantusDB updateDescription -----------------------------------------------------------


def from_description(diff: Mapping[str, Any]) -> Translation:
    """SecantusDB's change-stream-shaped diff as `$set`/`$unset` (then `$push`+`$slice` for
    truncated arrays, then `$setField` stages for odd top-level names), in that order."""
    updated = diff.get("updatedFields") or {}
    removed = diff.get("removedFields") or []
    truncated = diff.get("truncatedArrays") or []
    given = diff.get("disambiguatedPaths") or {}
    if not isinstance(updated, Mapping) or not isinstance(removed, list) or not isinstance(truncated, list):
        raise UntranslatableUpdate(f"malformed updateDescription: {dict(diff)!r}")
    sets: dict[str, Any] = {}
    unsets: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    translation = Translation()
    for path, value in updated.items():
        target = _description_path(path, given, translation)
        if target is None:
            stages.append({"$replaceWith": _set_field("$$ROOT", path if path not in given else given[path][0], value)})
        else:
            sets[target] = value
    for path in removed:
        target = _description_path(path, given, translation)
        if target is None:
            name = path if path not in given else given[path][0]
            stages.append({"$replaceWith": _without_fields("$$ROOT", [name])})
        else:
            unsets[target] = ""
    translation.updates = _split_conflicts(sets, unsets)
    for entry in truncated:
        if not isinstance(entry, Mapping) or "field" not in entry or "newSize" not in entry:
            raise UntranslatableUpdate(f"malformed truncatedArrays entry {entry!r}")
        target = _description_path(str(entry["field"]), given, translation)
        if target is None:
            raise UntranslatableUpdate(f"truncated array {entry['field']!r} is not a path")
        translation.updates.append({"$push": {target: {"$each": [], "$slice": int(entry["newSize"])}}})
    if stages:
        translation.updates.append(stages)
    if not translation.updates:
        raise UntranslatableUpdate("updateDescription changes nothing")
    return translation


def _description_path(path: str, given: Mapping[str, Any], translation: Translation) -> str | None:
    """The `$set` path for an updateDescription path, or None for a single top-level name that
    only `$setField` can write. Dotted paths without disambiguation are noted for the check."""
    segments = [str(s) for s in given[path]] if path in given else path.split(".")
    if all(plain(s) for s in segments):
        if path not in given and len(segments) > 1:
            translation.dotted_paths.append(segments)
        return ".".join(segments)
    if len(segments) == 1:
        return None
    raise UntranslatableUpdate(
        f"path {path!r} has a component that is not a field path ({segments!r}): it cannot be written exactly"
    )


def _set_field(source: str, name: str, value: Any) -> dict[str, Any]:
    return {"$setField": {"field": {"$literal": name}, "input": source, "value": {"$literal": value}}}


def _without_fields(source: str, names: Sequence[str]) -> dict[str, Any]:
    keep = {"$not": [{"$in": ["$$f.k", {"$literal": list(names)}]}]}
    return {"$arrayToObject": {"$filter": {"input": {"$objectToArray": source}, "as": "f", "cond": keep}}}


def _split_conflicts(sets: dict[str, Any], unsets: dict[str, str]) -> list[Update]:
    """One {$set, $unset} update, or two (sets first) when a set path and an unset path overlap
    (one is the other or its prefix), which a single update refuses."""
    overlap = any(a == b or a.startswith(b + ".") or b.startswith(a + ".") for a in sets for b in unsets)
    if overlap:
        return [{"$set": sets}, {"$unset": unsets}]
    update: dict[str, Any] = {}
    if sets:
        update["$set"] = sets
    if unsets:
        update["$unset"] = unsets
    return [update] if update else []


def dotted_name_conflict(doc: Mapping[str, Any], segments: Sequence[str]) -> str | None:
    """A field name in `doc`, along the nested reading of `segments`, that joins two or more of
    them ("a.b" for ["a", "b", "c"]): proof that a SecantusDB dotted path was ambiguous. None when
    there is none."""
    container: Any = doc
    for i, segment in enumerate(segments[:-1]):
        if isinstance(container, Mapping):
            for j in range(i + 2, len(segments) + 1):
                name = ".".join(segments[i:j])
                if name in container:
                    return name
            container = container.get(segment)
        elif isinstance(container, list) and segment.isdigit() and int(segment) < len(container):
            container = container[int(segment)]
        else:
            return None
    return None
