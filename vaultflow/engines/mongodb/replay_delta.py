"""mongod's `$v: 2` delta diffs (oplog update entries since 5.0) read, and written as updates.

The format, read in mongodb/mongo `src/mongo/db/update/document_diff_serialization.{h,cpp}`
(writer and reader) and `document_diff_applier.cpp` (how a secondary applies it):

    document diff   {d: {name: false}, u: {name: value}, i: {name: value}, s<name>: subdiff}
                    sections in that order; names are literal (a '.' in a name is part of it)
    array diff      {a: true, l: <new length>, u<index>: value, s<index>: subdiff}
    b               binary diffs of BSONColumn data (time-series buckets only)

Applied to a pre-image: `d` removes the field; `u` replaces it in place, or appends it when
absent; `i` removes the field and appends it at the end (after the absent `u` fields, in diff
order); `s<name>` applies the subdiff if the field holds the right type, sets it to null when it
holds another type (a later entry will overwrite it) and does nothing when it is absent. In an
array, `l` cuts (or null-pads) it to that length; indexes past the end are null-padded.

Two ways to write a diff as an update:
- `delta_operators`: `$set`/`$unset`, for diffs with only `d`, `u`, `s`, array `u<i>`/`s<i>` and
  names without '.' or a leading '$', with the conditions (aggregation expressions) under which
  it equals the applier: every sub-diffed field holds the type its sub-diff expects (and, where
  one level updates several fields, they exist). Always true on the entry's pre-image, not always
  when an entry is re-applied over a newer document;
- `delta_pipeline`: `[{$replaceWith: expr}]`, expr rebuilding the document the way the applier
  does, step by step, for any diff.

SecantusDB quirks avoided on purpose (docs/mongodb-secantus.md section 9): presence is tested by
the key list, not `$type` "missing"; array elements by `$size`; no `$unsetField`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class UntranslatableUpdate(ValueError):
    """An update entry that has no exact equivalent here, or is malformed; says which part."""


def plain(name: str) -> bool:
    """Whether `name` can be one component of a dotted update path as itself."""
    return bool(name) and "." not in name and not name.startswith("$")


@dataclass
class DocDiff:
    deletes: list[str]
    updates: dict[str, Any]
    inserts: dict[str, Any]
    subs: dict[str, Any]  # name -> DocDiff | ArrayDiff


@dataclass
class ArrayDiff:
    length: int | None
    mods: dict[int, tuple[str, Any]]  # index -> ("u", value) | ("s", DocDiff | ArrayDiff)


def parse_diff(diff: Mapping[str, Any]) -> DocDiff | ArrayDiff:
    """A serialized diff as DocDiff/ArrayDiff (recursively), checked as mongod's readers check it:
    sections d, u, i then s<name>; an array diff starts with a: true; no name twice. `b` (binary
    column diffs, time-series buckets) raises: there is no update for it."""
    if not isinstance(diff, Mapping) or not diff:
        raise UntranslatableUpdate(f"empty or non-document diff: {diff!r}")
    if next(iter(diff)) == "a":
        return _parse_array(diff)
    deletes: list[str] = []
    updates: dict[str, Any] = {}
    inserts: dict[str, Any] = {}
    subs: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in diff.items():
        if key in ("d", "u", "i"):
            if not isinstance(value, Mapping):
                raise UntranslatableUpdate(f"diff section {key!r} is not a document")
            names = list(value)
            if key == "d":
                deletes.extend(names)
            else:
                (updates if key == "u" else inserts).update(value)
        elif key == "b":
            raise UntranslatableUpdate("diff has a binary section 'b' (time-series bucket columns): not supported")
        elif key.startswith("s"):
            names = [key[1:]]
            subs[key[1:]] = parse_diff(value)
        else:
            raise UntranslatableUpdate(f"unexpected section {key!r} in a document diff")
        for name in names:
            if name in seen:
                raise UntranslatableUpdate(f"field {name!r} appears twice in the diff")
            seen.add(name)
    return DocDiff(deletes, updates, inserts, subs)


def _parse_array(diff: Mapping[str, Any]) -> ArrayDiff:
    if diff.get("a") is not True:
        raise UntranslatableUpdate(f"array diff header is not a: true: {diff!r}")
    length: int | None = None
    mods: dict[int, tuple[str, Any]] = {}
    for key, value in list(diff.items())[1:]:
        if key == "l" and length is None and not mods:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UntranslatableUpdate(f"array diff length l is not a non-negative int: {value!r}")
            length = value
            continue
        kind, index = key[:1], key[1:]
        if kind not in ("u", "s") or not index.isdigit() or int(index) in mods:
            raise UntranslatableUpdate(f"unexpected entry {key!r} in an array diff")
        mods[int(index)] = (kind, value if kind == "u" else parse_diff(value))
    if length is not None and mods and max(mods) >= length:
        raise UntranslatableUpdate(f"array diff changes index {max(mods)} past its new length {length}")
    return ArrayDiff(length, mods)


Step = tuple[str, Any]  # ("field", name) or ("index", position)


def delta_operators(diff: DocDiff) -> tuple[dict[str, Any], list[Any]] | None:
    """({"$set": {path: value}, "$unset": {path: ""}}, conditions) where the update equals
    applying `diff` on every document meeting all `conditions` (aggregation expressions, parents
    first), or None when no such update exists (inserted fields move to the end, arrays resize,
    names that are not path components)."""
    sets: dict[str, Any] = {}
    unsets: dict[str, str] = {}
    conditions: list[Any] = []
    if not _operators_doc(diff, [], sets, unsets, conditions):
        return None
    update: dict[str, Any] = {}
    if sets:
        update["$set"] = sets
    if unsets:
        update["$unset"] = unsets
    return update, conditions


def _path(steps: list[Step]) -> str:
    return ".".join(str(key) for _, key in steps)


def _field(source: Any, name: str) -> Any:
    """The expression of field `name` of the object `source` evaluates to, without array
    traversal: a one-component field path on a variable for a plain name, else $getField.
    (Not $getField for plain names: SecantusDB's $type reports a missing $getField as "object";
    callers test presence with `_has_field`.)"""
    if plain(name):
        if isinstance(source, str) and source.startswith("$$"):
            return f"{source}.{name}"
        return {"$let": {"vars": {"parent": source}, "in": f"$$parent.{name}"}}
    return {"$getField": {"field": {"$literal": name}, "input": source}}


def _has_field(source: Any, name: str) -> Any:
    """Whether the object `source` has a field `name`, by its list of keys. (Not `$type` equal to
    "missing": SecantusDB reports a missing field read through a variable as "null".)"""
    return {"$in": [{"$literal": name}, {"$map": {"input": {"$objectToArray": source}, "in": "$$this.k"}}]}


def _value_at(steps: list[Step]) -> Any:
    """The expression of the value at `steps`, read exactly when every parent is an object or
    array as the steps say (the guard tests parents first)."""
    expr: Any = "$$ROOT"
    for kind, key in steps:
        expr = _field(expr, key) if kind == "field" else {"$arrayElemAt": [expr, key]}
    return expr


def _operators_doc(diff: DocDiff, steps: list[Step], sets, unsets, conditions: list[Any]) -> bool:
    names = [*diff.deletes, *diff.updates, *diff.subs]
    if diff.inserts or not all(plain(name) for name in names):
        return False
    for name in diff.deletes:
        unsets[_path([*steps, ("field", name)])] = ""
    for name, value in diff.updates.items():
        sets[_path([*steps, ("field", name)])] = value
        if len(diff.updates) > 1:  # $set appends absent fields sorted by name, the applier in diff order
            conditions.append(_has_field(_value_at(steps), name))
    return all(
        _operators_sub(sub, [*steps, ("field", name)], sets, unsets, conditions) for name, sub in diff.subs.items()
    )


def _operators_sub(sub: DocDiff | ArrayDiff, steps: list[Step], sets, unsets, conditions: list[Any]) -> bool:
    if isinstance(sub, DocDiff):
        conditions.append({"$eq": [{"$type": _value_at(steps)}, "object"]})
        return _operators_doc(sub, steps, sets, unsets, conditions)
    conditions.append({"$isArray": [_value_at(steps)]})
    if sub.length is not None:
        return False
    for index, (kind, value) in sub.mods.items():
        if kind == "u":
            sets[_path([*steps, ("index", index)])] = value
            continue
        conditions.append({"$lt": [index, {"$size": _value_at(steps)}]})  # the element exists
        if not _operators_sub(value, [*steps, ("index", index)], sets, unsets, conditions):
            return False
    return True


def delta_pipeline(diff: DocDiff) -> list[dict[str, Any]]:
    """`[{"$replaceWith": expr}]` where expr rebuilds the document from its current value the way
    document_diff_applier.cpp does (field order included). Expressions used: $let, $getField,
    $setField, $mergeObjects, $objectToArray/$arrayToObject/$filter, $map/$range/$switch, $cond,
    $arrayElemAt, $size, $type, $isArray, $literal (all in mongod 5.0+, and in SecantusDB)."""
    return [{"$replaceWith": {"$let": {"vars": {"d0": "$$ROOT"}, "in": _doc_expr(diff, 0)}}}]


def _doc_expr(diff: DocDiff, depth: int) -> Any:
    """The object `$$d<depth>` (an object) with `diff` applied."""
    var = f"$$d{depth}"
    removed = [*diff.deletes, *diff.inserts]
    base: Any = var
    if removed:
        keep = {"$not": [{"$in": ["$$f.k", {"$literal": removed}]}]}
        base = {"$arrayToObject": {"$filter": {"input": {"$objectToArray": var}, "as": "f", "cond": keep}}}
    parts: list[Any] = [base]
    if diff.updates:
        parts.append({"$literal": dict(diff.updates)})
    odd_subs: list[tuple[str, Any, Any]] = []
    for name, sub in diff.subs.items():
        present = _has_field(var, name)  # an absent field stays absent
        value = _sub_expr(_field(var, name), sub, depth + 1)
        if plain(name):
            parts.append({"$cond": [present, {name: value}, {}]})
        else:
            odd_subs.append((name, present, value))
    if diff.inserts:
        parts.append({"$literal": dict(diff.inserts)})
    expr = {"$mergeObjects": parts} if len(parts) > 1 else base
    for name, present, value in odd_subs:  # a name an expression object cannot hold: set in place
        expr = {"$cond": [present, {"$setField": {"field": {"$literal": name}, "input": expr, "value": value}}, expr]}
    return expr


def _sub_expr(pre: Any, sub: DocDiff | ArrayDiff, depth: int) -> Any:
    """The new value of a field or element whose current value is `pre`: the subdiff applied when
    `pre` has the subdiff's type, else null (the applier's rule; callers handle absence)."""
    var = f"$$d{depth}"
    if isinstance(sub, DocDiff):
        fits: Any = {"$eq": [{"$type": var}, "object"]}
        applied = _doc_expr(sub, depth)
    else:
        fits = {"$isArray": [var]}
        applied = _array_expr(sub, depth)
    return {"$let": {"vars": {f"d{depth}": pre}, "in": {"$cond": [fits, applied, None]}}}


def _array_expr(diff: ArrayDiff, depth: int) -> Any:
    """The array `$$d<depth>` with `diff` applied: length `l`, or max(current length, last changed
    index + 1); changed indexes get their value (a subdiff applied to the element, null when the
    element is absent or of another type), others keep theirs or are null-padded."""
    var, index = f"$$d{depth}", f"$$i{depth}"
    length: Any = diff.length
    if length is None:
        length = {"$max": [{"$size": var}, max(diff.mods) + 1 if diff.mods else 0]}
    keep = {"$cond": [{"$lt": [index, {"$size": var}]}, {"$arrayElemAt": [var, index]}, None]}
    branches = []
    for position, (kind, value) in diff.mods.items():
        if kind == "u":
            then = {"$literal": value}
        else:  # an element past the end becomes null (tested by size: SecantusDB types a missing element "object")
            within = {"$lt": [position, {"$size": var}]}
            then = {"$cond": [within, _sub_expr({"$arrayElemAt": [var, position]}, value, depth + 1), None]}
        branches.append({"case": {"$eq": [index, position]}, "then": then})
    element = {"$switch": {"branches": branches, "default": keep}} if branches else keep
    return {"$map": {"input": {"$range": [0, length]}, "as": f"i{depth}", "in": element}}
