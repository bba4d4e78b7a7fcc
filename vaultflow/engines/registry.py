"""Which engines exist, and what generic code (flows, tasks, CLI, verify, prune, the catalog,
manifest parsing) needs to know about each one: its EngineSpec.

An engine is a package `vaultflow/engines/<name>/` with a `spec` module defining `SPEC`; it is
found by its package name, imported only when first asked for (so importing the registry
imports no database driver, and `vaultflow wal-push` stays fast). Adding an engine is adding
a package; nothing generic is edited. An engine defined elsewhere (a test's, a plugin's)
calls `register(spec)`.

    spec("postgres")   -> EngineSpec   (raises ConfigError naming the known engines)
    names()            -> ["postgres", "redis", ...]  built-in packages + registered ones
    restore_options(n) -> the engine's RestoreOptions model (built-ins: without importing the engine)
    cli_commands(n)    -> adds the engine's own `vaultflow` commands (PostgreSQL: wal-push, wal-fetch)
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vaultflow.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass(frozen=True)
class EngineSpec:
    """Everything generic code needs to know about one engine.

    name:          the engine's name in the repository layout (`<store>/<name>/<target>/`), in
                   manifests (`engine`) and events; lowercase, stable forever.
    make_engine:   the engine class itself (e.g. PostgresEngine), not a factory function:
                   called with target settings (the target's block, see blocks/) it returns an
                   object satisfying vaultflow.engines.base.Engine; its class attributes `name`
                   and `restore_options` are read without making an engine (registry.
                   restore_options, tests/unit/test_engine_protocol.py requires a class).
    consistency:   the models of `Manifest.consistency` this engine writes (subclasses of
                   vaultflow.manifest.Consistency, at least one per mode it uses); each has a
                   `type` Literal that names it in the JSON (manifest parsing looks them up here).
    chain_rules:   an object with `check_link(parent, child) -> str | None` (vaultflow.chain.
                   ChainRules): engine-specific checks of a link of an incremental chain (system
                   identifier, timeline, AOF base), run after the generic chain walk's; None:
                   generic rules only.
    log_archive:   (repository, target name, target settings) -> the engine's continuous log
                   archive (WAL, oplog, ...); None when the engine has none.
    """

    name: str
    make_engine: Callable[[Any], Any]
    consistency: tuple[type, ...] = ()
    chain_rules: Any = None
    log_archive: Callable[..., Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


_REGISTERED: dict[str, EngineSpec] = {}
_PACKAGE = "vaultflow.engines"


def register(engine_spec: EngineSpec) -> EngineSpec:
    """Make an engine known (engines outside vaultflow/engines/: a test's, a plugin's) in this
    Python process: a worker knows it only if it imported the module that calls this. Returns
    `engine_spec`. Re-registering a name replaces it."""
    _REGISTERED[engine_spec.name] = engine_spec
    return engine_spec


def unregister(name: str) -> None:
    """Forget a registered engine (tests that define their own clean up with it); a built-in
    package's engine is found again on the next spec(name)."""
    _REGISTERED.pop(name, None)


def _builtin_names() -> list[str]:
    import vaultflow.engines as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg)


def names() -> list[str]:
    """Every engine name: the packages under vaultflow/engines/ and the registered ones, sorted."""
    return sorted(set(_builtin_names()) | set(_REGISTERED))


def restore_options(name: str) -> type[BaseModel] | None:
    """The restore options model (a vaultflow.engines.settings.RestoreOptions subclass) of engine
    `name`, without importing the engine and its drivers when it is a built-in one: its package's
    light `settings` module names it as RESTORE_OPTIONS (the CLI builds its restore options from
    these at every start). A registered engine's comes from its engine class (None when that
    declares none, as a test's partial engine may).

    Raises ConfigError when no engine has that name."""
    if name in _REGISTERED:
        return getattr(_REGISTERED[name].make_engine, "restore_options", None)
    if name in _builtin_names():
        return importlib.import_module(f"{_PACKAGE}.{name}.settings").RESTORE_OPTIONS
    raise ConfigError(f"no vaultflow engine named {name!r} (known: {', '.join(names())})")


def cli_commands(name: str) -> Callable[[Any], None] | None:
    """The function that adds engine `name`'s own `vaultflow` commands to the typer app, or None:
    a built-in engine's `commands` module (`add_commands(app)`), a registered engine's
    `extras["cli_commands"]`. Imports no engine driver for a built-in engine."""
    if name in _REGISTERED:
        return _REGISTERED[name].extras.get("cli_commands")
    if name in _builtin_names() and importlib.util.find_spec(f"{_PACKAGE}.{name}.commands") is not None:
        return importlib.import_module(f"{_PACKAGE}.{name}.commands").add_commands
    return None


def spec(name: str) -> EngineSpec:
    """The EngineSpec of engine `name`, importing its package on first use.

    Raises ConfigError when no engine has that name (the message lists the known ones)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _builtin_names():
        module = importlib.import_module(f"{_PACKAGE}.{name}.spec")
        return register(module.SPEC)
    raise ConfigError(f"no vaultflow engine named {name!r} (known: {', '.join(names())})")
