"""prefect.yaml as data: its deployments, the project root its entrypoints are relative to,
and the flow an entrypoint names. Shared by serve_all (serves them) and validate (checks them).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = "prefect.yaml"
SCHEDULE_KINDS = ("cron", "interval", "rrule")


def resolve_path(path: str | os.PathLike[str] = DEFAULT_PATH) -> Path:
    """`path` as given, else (when relative and missing) relative to the project root."""
    candidate = Path(path)
    if not candidate.is_absolute() and not candidate.exists() and (ROOT / candidate).exists():
        candidate = ROOT / candidate
    return candidate.resolve()


def _document(file: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{file} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{file} must be a mapping with a `deployments` list")
    return document


def load_pull_steps(path: str | os.PathLike[str] = DEFAULT_PATH) -> list[dict[str, Any]]:
    """The `pull` steps of a prefect.yaml, templates left as written (vaultflow's: set the
    working directory to `{{ $VAULTFLOW_HOME }}`, which the worker resolves when a run starts).
    Raises OSError when the file cannot be read, ValueError when it is not YAML or its `pull` is
    not a list."""
    file = resolve_path(path)
    steps = _document(file).get("pull") or []
    if not isinstance(steps, list):
        raise ValueError(f"{file}: pull is not a list of steps")
    return steps


def load_deployments(path: str | os.PathLike[str] = DEFAULT_PATH) -> list[dict[str, Any]]:
    """The `deployments` list of a prefect.yaml, YAML anchors and merge keys (<<:) resolved.

    Raises OSError when the file cannot be read and ValueError when it is not YAML or has
    no list of deployment mappings.
    """
    file = resolve_path(path)
    document = _document(file)
    deployments = document.get("deployments")
    if not isinstance(deployments, list) or not deployments:
        raise ValueError(f"{file} has no `deployments` list")
    for index, entry in enumerate(deployments):
        if not isinstance(entry, dict):
            raise ValueError(f"{file}: deployments[{index}] is a {type(entry).__name__}, not a mapping")
    return deployments


def project_root(path: str | os.PathLike[str] = DEFAULT_PATH) -> Path:
    """Entrypoints are relative to the directory that holds prefect.yaml."""
    return resolve_path(path).parent


def load_flow(entrypoint: str, root: Path):
    """The Flow an entrypoint names: a file relative to `root` ('flows/full_backup.py:full_backup',
    as in a checkout) or a module ('vaultflow.flows.full_backup:full_backup', as from an installed
    vaultflow, which Prefect's workers load the same way).

    Raises ValueError for a malformed entrypoint, FileNotFoundError for a missing file,
    ModuleNotFoundError for a missing module, prefect.exceptions.ScriptError when the file fails
    to import and MissingFlowError when the name is absent or not a flow.
    """
    from prefect.flows import load_flow_from_entrypoint

    if not isinstance(entrypoint, str) or ":" not in entrypoint:
        raise ValueError(
            f"entrypoint {entrypoint!r} is not of the form path/to/file.py:flow_function or package.module:flow_function"
        )
    file, func = entrypoint.rsplit(":", 1)
    if not file.endswith(".py") and "/" not in file:  # a module path
        if importlib.util.find_spec(file) is None:
            raise ModuleNotFoundError(f"no module named {file!r}", name=file)
        key: tuple = (file, func)
        if key not in _LOADED:
            _LOADED[key] = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
        return _LOADED[key]
    script = Path(file) if Path(file).is_absolute() else root / file
    if not script.is_file():
        raise FileNotFoundError(f"no such file: {script}")
    if str(root) not in sys.path:  # a project's flows may import their siblings: `from flows.common import ...`
        sys.path.insert(0, str(root))
    stat = script.stat()
    key = (str(script.resolve()), func, stat.st_mtime_ns, stat.st_size)
    if key not in _LOADED:
        _LOADED[key] = load_flow_from_entrypoint(f"{script}:{func}", use_placeholder_flow=False)
    return _LOADED[key]


# Flows loaded so far, by (file, function, the file's mtime and size) or (module, function): Prefect runs the file
# again on every load and builds each flow's parameter schema (about 0.3 s a flow), and
# prefect.yaml names the same few entrypoints in many deployments. A changed file loads anew.
_LOADED: dict[tuple, Any] = {}


def parameter_schema_of(flow: Any) -> dict[str, Any]:
    """The flow's parameter schema as a deployment carries it (Prefect's parameter_schema, unset
    fields left out), built once per flow object (_schema): about 0.3 s each, and a fleet has a
    deployment per strategy and queue of the same few flows. The caller gets its own copy."""
    return copy.deepcopy(_schema(flow))


@functools.cache  # by the flow object itself: a Flow hashes by identity, and the cache keeps it
def _schema(flow: Any) -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(flow).model_dump(exclude_unset=True)
