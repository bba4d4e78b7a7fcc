"""The CLI finds engine-specific options and commands through the registry: one restore option
per engine restore option (described by its field), and the commands an engine adds."""

from __future__ import annotations

from typer.testing import CliRunner

from vaultflow.cli import app
from vaultflow.engines import registry

runner = CliRunner()


def test_restore_has_one_option_per_engine_restore_option():
    result = runner.invoke(app, ["restore", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for name in registry.names():
        for option, field in registry.restore_options(name).model_fields.items():
            assert "--" + option.replace("_", "-") in result.output, option
            assert field.description.split("(")[0].strip()[:40] in result.output, option


def test_a_value_of_the_wrong_shape_is_refused_naming_the_option():
    result = runner.invoke(app, ["restore", "-t", "x", "--repo-path", "/nonexistent", "--into-db", "seven"])
    assert result.exit_code == 2 and "--into-db" in result.output, result.output


def test_engines_add_their_own_commands():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "300"})
    assert "wal-push" in result.output and "wal-fetch" in result.output
    misuse = runner.invoke(app, ["wal-fetch", "000000010000000000000001", "/tmp/x", "-t", "t"])
    assert misuse.exit_code == 255  # PostgreSQL aborts recovery on exit codes above 125
