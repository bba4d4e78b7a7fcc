"""vaultflow.source.same_source: when a recorded source and a block's source are one source."""

import pytest

from vaultflow.source import same_source, source_text


@pytest.mark.parametrize(
    ("recorded", "now", "same"),
    [
        (source_text("db1:5432", ["shop"]), source_text("db1:5432", ["shop"]), True),
        # a database added to or dropped from the block's list: the same server's data
        (source_text("db1:5432", ["shop"]), source_text("db1:5432", ["shop", "crm"]), True),
        (source_text("db1:5432", ["shop", "crm"]), source_text("db1:5432", ["crm"]), True),
        (source_text("db1:5432"), source_text("db1:5432", ["shop"]), True),
        (source_text("db1:5432", ["shop"]), source_text("db1:5432"), True),
        # another database set on the same server: another source (the newcomer's shop and hr)
        (source_text("db1:5432", ["shop"]), source_text("db1:5432", ["hr"]), False),
        # another place
        (source_text("db1:5432", ["shop"]), source_text("db2:5432", ["shop"]), False),
        (source_text("replica set rs0", ["app"]), source_text("replica set rs1", ["app"]), False),
        ("cluster 7412", "cluster 7412", True),
        ("cluster 7412", "cluster 9999", False),
        ("127.0.0.1:6379", "127.0.0.1:6380", False),
        # a database named like the separator stays one name
        (source_text("db1:5432", ["a, b"]), source_text("db1:5432", ["c"]), False),
        (None, source_text("db1:5432", ["shop"]), True),  # older manifests are not judged
    ],
)
def test_same_source(recorded, now, same):
    assert same_source(recorded, now) is same
