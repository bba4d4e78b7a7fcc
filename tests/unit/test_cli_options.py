"""Engine restore options on the command line: lists and mappings in the forms a person types."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from vaultflow.cli_restore import _option_value

LIST = TypeAdapter(list[str] | None)
MAPPING = TypeAdapter(dict[str, str] | None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app.orders", ["app.orders"]),
        ("app.orders, app.audit_*", ["app.orders", "app.audit_*"]),
        ('["app.*"]', ["app.*"]),
        ("['app.*', '*.orders']", ["app.*", "*.orders"]),
    ],
)
def test_lists_as_one_name_commas_json_or_a_python_literal(text, expected):
    assert _option_value(LIST, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{'app.*': 'app_copy.*'}", {"app.*": "app_copy.*"}),  # as the help's example is written
        ('{"app.*": "app_copy.*"}', {"app.*": "app_copy.*"}),
        ("app.*=app_copy.*, shop.orders=archive.orders", {"app.*": "app_copy.*", "shop.orders": "archive.orders"}),
    ],
)
def test_mappings_as_json_a_python_literal_or_pairs(text, expected):
    assert _option_value(MAPPING, text) == expected


def test_what_fits_no_reading_is_the_first_error():
    with pytest.raises(ValidationError, match="valid dictionary"):
        _option_value(MAPPING, "app.* app_copy.*")
