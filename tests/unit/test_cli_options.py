"""Options on the command line: lists, mappings and times in the forms a person types."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError
from typer.testing import CliRunner

from vaultflow.cli import app
from vaultflow.cli_restore import _option_value

LIST = TypeAdapter(list[str] | None)
MAPPING = TypeAdapter(dict[str, str] | None)
MOMENT = TypeAdapter(datetime | None)
runner = CliRunner()


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05 14:30:00+00", datetime(2026, 1, 5, 14, 30, tzinfo=UTC)),  # README's example
        ("2026-01-05T14:30:00Z", datetime(2026, 1, 5, 14, 30, tzinfo=UTC)),
        ("2026-01-05T15:30:00+01:00", datetime(2026, 1, 5, 14, 30, tzinfo=UTC)),
        ("2026-01-05 14:30", datetime(2026, 1, 5, 14, 30)),
    ],
)
def test_times_as_python_reads_iso_8601(text, expected):
    assert _option_value(MOMENT, text) == expected


def test_the_restore_time_of_the_docs_is_accepted():
    # The repository is checked after the options: its error means --to-time was read.
    result = runner.invoke(
        app, ["restore", "-t", "prod", "--repo-path", "/nonexistent", "--to-time", "2026-01-05 14:30:00+00"]
    )
    assert result.exit_code == 2, result.output
    assert "repository directory /nonexistent" in result.output and "--to-time" not in result.output, result.output


def test_a_time_that_is_not_one_is_refused_with_the_forms_of_a_time_only():
    result = runner.invoke(app, ["restore", "-t", "prod", "--repo-path", "/nonexistent", "--to-time", "yesterday"])
    assert result.exit_code == 2 and "--to-time" in result.output, result.output
    assert "2026-01-05T14:30:00Z" in result.output and "mappings" not in result.output, result.output


@pytest.mark.parametrize("text", ["2026-01-05 14:30:00+00", "2026-01-05T14:30:00Z", "2026-01-05T14:30:00"])
def test_status_as_of_takes_the_same_times(text):
    result = runner.invoke(app, ["status", "--repo-path", "/nonexistent", "--as-of", text])
    assert result.exit_code == 2, result.output
    assert "repository directory /nonexistent" in result.output and "--as-of" not in result.output, result.output
    bad = runner.invoke(app, ["status", "--repo-path", "/nonexistent", "--as-of", "noon"])
    assert bad.exit_code == 2 and "--as-of" in bad.output and "is not a date and time" in bad.output, bad.output
