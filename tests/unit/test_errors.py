"""Error messages built from other programs' messages read as sentences."""

from __future__ import annotations

import pytest

from vaultflow.errors import clause


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Connection refused.", "Connection refused"), (" no such file \n", "no such file"), ("a... ", "a"), ("", "")],
)
def test_a_clause_ends_without_a_period_so_the_next_sentence_adds_one(text, expected):
    assert clause(text) == expected
    assert ".." not in f"{clause(OSError(text))}. Check"
