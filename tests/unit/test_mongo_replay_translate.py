"""Oplog update entries translated into updates (vaultflow/engines/mongodb/replay_updates.py),
without a server.

mongod's `$v: 2` diffs below are the serialized diffs that mongodb/mongo
src/mongo/db/update/document_diff_serialization_test.cpp asserts its builder writes (test names
in the comments), and the malformed ones are those src/mongo/db/update/document_diff_applier_test.cpp
expects the applier to refuse. What the updates do on a server is tested in
tests/integration/test_mongo_replay_mongod_shapes.py (the applier test's own pre/post images)."""

from __future__ import annotations

import pytest

from vaultflow.engines.mongodb.replay_delta import ArrayDiff, DocDiff, parse_diff
from vaultflow.engines.mongodb.replay_updates import UntranslatableUpdate, dotted_name_conflict, translate_update


def delta(diff: dict):
    return translate_update({"$v": 2, "diff": diff})


# -- mongod delta diffs that are $set/$unset -----------------------------------------------


def test_deletes_are_unsets():  # DiffSerializationTest.DeleteSimple
    t = delta({"d": {"f1": False, "f2": False, "f3": False}})
    assert t.updates == [{"$unset": {"f1": "", "f2": "", "f3": ""}}]
    assert t.guard is None and t.fallback is None and t.replacement is None


def test_one_update_is_a_set_without_guard():
    t = delta({"u": {"f1": 1}})
    assert t.updates == [{"$set": {"f1": 1}}] and t.guard is None


def test_several_updates_at_one_level_are_guarded_by_their_presence():  # DiffSerializationTest.UpdateSimple
    t = delta({"u": {"f1": 1, "f2": "foo"}})
    assert t.updates == [{"$set": {"f1": 1, "f2": "foo"}}]
    # $set appends absent fields sorted by name, the applier in diff order: the $set form runs
    # only where both exist, the pipeline form elsewhere.
    assert t.guard is not None and t.fallback is not None
    assert str(t.guard).count("$objectToArray") == 2


def test_array_update_at_a_high_index():  # DiffSerializationTest.SubArrayHighIndex
    t = delta({"ssubArray": {"a": True, "u254": "foo"}})
    assert t.updates == [{"$set": {"subArray.254": "foo"}}]
    assert t.guard == {"$cond": [{"$isArray": ["$$ROOT.subArray"]}, True, False]}


def test_subdiffs_of_array_elements():  # DiffSerializationTest.SubArrayNestedObject
    t = delta({"ssubArray": {"a": True, "s1": {"u": {"a": 1}}, "s2": {"u": {"b": 2}}, "s3": {"u": {"c": 3}}}})
    assert t.updates == [{"$set": {"subArray.1.a": 1, "subArray.2.b": 2, "subArray.3.c": 3}}]
    text = str(t.guard)  # the array, each element's existence and each element being an object
    assert text.count("$isArray") == 1 and text.count("'$lt'") == 3 and text.count("'object'") == 3


def test_deletes_updates_and_an_object_subdiff():  # DiffSerializationTest.SubDiffAbandon (its output)
    t = delta({"d": {"dField1": False, "dField2": False}, "u": {"uField": 1}, "sobj2": {"d": {"dField2": False}}})
    assert t.updates == [{"$set": {"uField": 1}, "$unset": {"dField1": "", "dField2": "", "obj2.dField2": ""}}]
    assert t.guard == {"$cond": [{"$eq": [{"$type": "$$ROOT.obj2"}, "object"]}, True, False]}


def test_numeric_field_names_in_a_document_subdiff_are_guarded_as_object_fields():
    t = delta({"snum": {"u": {"0": "zero"}}})
    assert t.updates == [{"$set": {"num.0": "zero"}}]  # a key "0" of an object, as the guard checks
    assert "'object'" in str(t.guard)


# -- mongod delta diffs that need the pipeline form ----------------------------------------


@pytest.mark.parametrize(
    "diff",
    [
        {"i": {"f1": 1, "f2": "foo"}},  # DiffSerializationTest.InsertSimple: inserted fields move to the end
        {"sobj": {"d": {"dField": False}, "u": {"uField": "foo"}, "i": {"iField": 1}}},  # .SubDiff
        {
            "sarr": {"a": True, "l": 6, "u0": {"foo": "bar"}, "s2": {"d": {"dField": False}}, "u5": 1}
        },  # .SubArrayWithSubDiff
        {
            "d": {"dField1": False, "dField2": False},
            "u": {"uField": 1},
            "sarr2": {"a": True, "l": 5},
        },  # .SubArrayDiffAbandon
        {"u": {"a.b": 1}},  # a '.' inside a name: not a path
        {"u": {"$x": 1}},
        {"s": {"u": {"x": 1}}},  # the field named ""
    ],
)
def test_diffs_without_an_equal_set_are_one_pipeline(diff):
    t = delta(diff)
    assert t.guard is None and t.fallback is None
    [pipeline] = t.updates
    assert isinstance(pipeline, list) and list(pipeline[0]) == ["$replaceWith"]
    assert pipeline[0]["$replaceWith"]["$let"]["vars"] == {"d0": "$$ROOT"}


def test_pipeline_keeps_literal_values_literal():
    t = delta({"i": {"f": {"$notAnOperator": "$notAPath"}}})
    assert {"$literal": {"f": {"$notAnOperator": "$notAPath"}}} in t.updates[0][0]["$replaceWith"]["$let"]["in"][
        "$mergeObjects"
    ]


def test_parse_diff_reads_sections_and_arrays():
    parsed = parse_diff(
        {"d": {"x": False}, "u": {"y": 1}, "i": {"z": 2}, "sarr": {"a": True, "l": 3, "u0": 5, "s1": {"u": {"k": 1}}}}
    )
    assert isinstance(parsed, DocDiff) and parsed.deletes == ["x"] and parsed.updates == {"y": 1}
    arr = parsed.subs["arr"]
    assert isinstance(arr, ArrayDiff) and arr.length == 3 and arr.mods[0] == ("u", 5)
    assert isinstance(arr.mods[1][1], DocDiff)


@pytest.mark.parametrize(
    ("diff", "problem"),
    [
        ({"d": {"dupField": False}, "u": {"dupField": "new value"}}, "appears twice"),  # DiffWithDuplicateFields
        ({"d": {"b": False}, "i": {"a": {}, "b": None}}, "appears twice"),  # DuplicateFieldNames, across types
        ({"u": {"b": False}, "i": {"a": {}, "b": None}}, "appears twice"),
        ({}, "not a non-empty document"),  # EmptyDiff
        ({"a": True, "l": 5, "d0": False}, "array diff"),  # ArrayDiffAtTop
        ({"sarr": {"a": True, "d0": False}}, "unexpected entry 'd0'"),
        ({"sarr": {"a": True, "l": 2, "u3": 1}}, "past its new length"),
        ({"sarr": {"a": False}}, "header"),
        ({"x": {"y": 1}}, "unexpected section 'x'"),
        ({"b": {"col": {"o": 0, "d": b""}}}, "binary section"),
        ({"u": [1]}, "not a document"),
    ],
)
def test_malformed_or_unsupported_diffs_raise(diff, problem):
    with pytest.raises(UntranslatableUpdate, match=problem):
        delta(diff)


# -- replacements and classic updates -------------------------------------------------------


def test_a_document_without_operators_is_a_replacement():
    t = translate_update({"_id": 1, "a": {"$b": 1}, "diff": {"u": {"x": 1}}})
    assert t.replacement == {"_id": 1, "a": {"$b": 1}, "diff": {"u": {"x": 1}}} and t.updates == []


def test_classic_set_unset_pass_through_without_v():
    t = translate_update({"$v": 1, "$set": {"a.b": 1}, "$unset": {"c": True}})
    assert t.updates == [{"$set": {"a.b": 1}, "$unset": {"c": True}}]
    assert translate_update({"$set": {"x": 1}}).updates == [{"$set": {"x": 1}}]


@pytest.mark.parametrize("o", [{"$inc": {"n": 1}}, {"$v": 1}, {"$v": 3, "diff": {"u": {"a": 1}}}, [], {}])
def test_other_update_shapes_raise(o):
    with pytest.raises(UntranslatableUpdate):
        translate_update(o)


# -- SecantusDB updateDescription -----------------------------------------------------------


def description(**fields):
    return translate_update(
        {"$v": 2, "diff": {"updatedFields": {}, "removedFields": [], "truncatedArrays": [], **fields}}
    )


def test_description_sets_and_unsets_and_notes_dotted_paths():
    t = description(updatedFields={"x": 3, "sub.k": 2, "arr.3": 9}, removedFields=["y"])
    assert t.updates == [{"$set": {"x": 3, "sub.k": 2, "arr.3": 9}, "$unset": {"y": ""}}]
    assert t.dotted_paths == [["sub", "k"], ["arr", "3"]] and t.guard is None


def test_disambiguated_paths_are_exact_and_need_no_check():
    t = description(updatedFields={"num.0": "zero"}, disambiguatedPaths={"num.0": ["num", "0"]})
    assert t.updates == [{"$set": {"num.0": "zero"}}] and t.dotted_paths == []


def test_truncated_arrays_are_cut_after_the_sets():
    t = description(updatedFields={"arr.0": 5}, truncatedArrays=[{"field": "arr", "newSize": 2}])
    assert t.updates == [{"$set": {"arr.0": 5}}, {"$push": {"arr": {"$each": [], "$slice": 2}}}]


def test_top_level_names_that_are_not_paths_use_set_field():
    t = description(updatedFields={"$price": 5, "a.b": 1}, removedFields=["$old"], disambiguatedPaths={"a.b": ["a.b"]})
    [stages] = t.updates  # no $set/$unset: only the pipeline stages, in order
    assert stages[0] == {
        "$replaceWith": {"$setField": {"field": {"$literal": "$price"}, "input": "$$ROOT", "value": {"$literal": 5}}}
    }
    assert stages[1]["$replaceWith"]["$setField"]["field"] == {"$literal": "a.b"}
    assert stages[2]["$replaceWith"]["$arrayToObject"]["$filter"]["cond"] == {
        "$not": [{"$in": ["$$f.k", {"$literal": ["$old"]}]}]
    }


def test_overlapping_set_and_unset_become_two_updates():
    t = description(updatedFields={"a": {"b": 1}}, removedFields=["a.c"])
    assert t.updates == [{"$set": {"a": {"b": 1}}}, {"$unset": {"a.c": ""}}]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"updatedFields": {"a.$b": 1}}, "not a field path"),
        ({"updatedFields": {"x": 1}, "disambiguatedPaths": {"x": ["x.y", "z"]}}, "not a field path"),
        ({}, "changes nothing"),
        ({"truncatedArrays": [{"field": "a"}]}, "malformed truncatedArrays"),
        ({"removedFields": "x"}, "malformed"),
    ],
)
def test_descriptions_that_cannot_be_written_exactly_raise(fields, problem):
    with pytest.raises(UntranslatableUpdate, match=problem):
        description(**fields)


@pytest.mark.parametrize(
    ("doc", "segments", "conflict"),
    [
        ({"a.b": 1, "a": {"b": 2}}, ["a", "b"], "a.b"),
        ({"a.b.c": 1}, ["a", "b", "c"], "a.b.c"),
        ({"x": {"a.b": 1, "a": {"b": 1}}}, ["x", "a", "b"], "a.b"),
        ({"arr": [{}, {"a.b": 1}]}, ["arr", "1", "a", "b"], "a.b"),
        ({"a": {"b": 2}, "a.c": 1}, ["a", "b"], None),
        ({"a": [1]}, ["a", "5", "b"], None),
        ({"a": 1}, ["a"], None),
    ],
)
def test_dotted_name_conflict(doc, segments, conflict):
    assert dotted_name_conflict(doc, segments) == conflict
