"""Every registered engine implements vaultflow.engines.base.Engine exactly: the Protocol's
methods with the Protocol's signatures (parameter names, kinds and defaults), its engine name,
and a RestoreOptions model whose every option is described."""

from __future__ import annotations

import inspect

import pytest

from vaultflow.engines import registry
from vaultflow.engines.base import Engine
from vaultflow.engines.settings import RestoreOptions

METHODS = [
    "check",
    "source_identity",
    "plan_backup",
    "dump",
    "finish_backup",
    "full_backup",
    "incremental_backup",
    "restore",
    "drill",
]


def protocol_methods() -> list[str]:
    return sorted(
        name for name, value in vars(Engine).items() if inspect.isfunction(value) and not name.startswith("_")
    )


def shape(function) -> list[tuple[str, object, object]]:
    """(name, kind, default) of each parameter: what callers rely on (annotations are documentation)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_the_protocol_lists_what_engines_implement():
    assert protocol_methods() == sorted(METHODS)


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_engine_satisfies_the_protocol(name: str):
    engine_class = registry.spec(name).make_engine
    assert inspect.isclass(engine_class), f"engine {name}: make_engine should be the engine class"
    assert engine_class.name == name
    for method in protocol_methods():
        implemented = getattr(engine_class, method, None)
        assert callable(implemented), f"engine {name} lacks {method}()"
        assert shape(implemented) == shape(getattr(Engine, method)), (
            f"engine {name}: {method}{inspect.signature(implemented)} differs from the Protocol's "
            f"{method}{inspect.signature(getattr(Engine, method))}"
        )
    options = engine_class.restore_options
    assert registry.restore_options(name) is options  # what the CLI reads without importing the engine
    assert issubclass(options, RestoreOptions) and options is not RestoreOptions
    assert options.model_config.get("extra") == "forbid"
    for field_name, field in options.model_fields.items():
        assert field.description, f"engine {name}: restore option {field_name} has no description"
        assert field.default is None or field.default is False, (
            f"engine {name}: restore option {field_name} must default to 'not given' (None or False)"
        )


def test_a_wrong_signature_is_caught():
    class Drifted:
        def restore(self, ctx, manifest, *, into=None, overwrite=False, databases=None, recovery_target=None): ...

    assert shape(Drifted.restore) != shape(Engine.restore)
