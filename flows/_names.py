"""Flow run names a person reads: '<kind>-<engine>-<target>-<time>', or the name the user gave.

A run is named when it starts (Prefect calls the flow's `flow_run_name`): 'full-postgres-prod-
20261126T020000.123Z'. The time is the instant the run started, in the backup id's own form
(vaultflow.manifest.id_time), and a backup run's id takes the same instant
(vaultflow.engines.base.dated_by_run), so the runs list and the catalog are searched by one time.

A run that already has a name somebody chose keeps it: typed in the UI's Custom run form, given
to `prefect deployment run --flow-run-name`, or to `flow.with_options(flow_run_name=...)`. A name
Prefect made up is replaced; Prefect makes up names in three places, each from its own words:
the API and the Python client (prefect.utilities.names.generate_slug(2): coolname's adjective and
animal, 'fuzzy-corgi'), the Custom run form of the default UI (ui-v2: one of 17 product
adjectives and an animal of at most 6 letters, 'Rustic-Falcon'), and the same form of the
legacy UI (a Greek letter, digits, a constellation and maybe a noun, 'tau4-andromedae-nebula').
Each is recognised by its generator's own words (coolname's data; _ui_run_names.json for the
UIs), so 'beta-test' or 'Small-Fix' typed by a person is kept; 'red-fox' cannot be told from
coolname's and is replaced (docs/operations.md, "Reading runs and events").
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from functools import cache
from typing import Any

import coolname
import httpx
from coolname import loader
from prefect import get_client
from prefect.context import FlowRunContext
from prefect.runtime import deployment, flow_run

from vaultflow.blocks.registry import target_types
from vaultflow.manifest import id_time

# The words the two UIs' Custom run forms make default names from, taken from the UIs Prefect
# 3.9.1 ships (prefect/server/ui-v2 and prefect/server/ui assets): ui-v2 (the default UI) makes
# `${adjective}-${animal of <= 6 chars}` ('Rustic-Falcon'); the legacy UI makes
# '<greek letter>[<digits>]-<place>[-<noun>]' ('tau4-andromedae-nebula'), a place possibly
# empty ('alpha--nebula') or hyphenated ('canis-majoris').
_UI_WORDS_FILE = os.path.join(os.path.dirname(__file__), "_ui_run_names.json")


@cache
def _ui_words() -> dict[str, frozenset[str]]:
    """The UI generators' word lists (_UI_WORDS_FILE), each a set."""
    with open(_UI_WORDS_FILE, encoding="utf-8") as f:
        return {key: frozenset(value) for key, value in json.load(f).items() if isinstance(value, list)}


def _is_ui_v2_name(name: str) -> bool:
    adjective, _, animal = name.partition("-")
    words = _ui_words()
    return adjective in words["ui_v2_adjectives"] and animal in words["ui_v2_animals"]


_LEGACY_GREEK = re.compile(r"([a-z]+)\d*")


def _is_legacy_ui_name(name: str) -> bool:
    letter, _, rest = name.partition("-")
    words = _ui_words()
    greek = _LEGACY_GREEK.fullmatch(letter)
    if not greek or greek.group(1) not in words["legacy_greek_letters"] or not rest:
        return False
    if rest in words["legacy_places"]:
        return True
    place, _, noun = rest.rpartition("-")
    return place in words["legacy_places"] and noun in words["legacy_nouns"]


# Run starts this process named, by flow run id: the backup id of the run takes the instant.
_RUN_STARTS: dict[str, datetime] = {}


@cache
def _coolname_pairs() -> list[tuple[frozenset[str], frozenset[str]]]:
    """The (first words, second words) of every two-word slug coolname makes (its config's '2')."""
    config = loader.load_config(os.path.join(os.path.dirname(coolname.__file__), "data"))

    def words(name: str) -> frozenset[str]:
        entry = config[name]
        if entry["type"] == "words":
            return frozenset(entry["words"])
        if entry["type"] == "nested":
            return frozenset().union(*(words(child) for child in entry["lists"]))
        return frozenset()  # phrases and constants make no word of a two-word slug

    pairs = []
    for child in config["2"]["lists"]:
        if config[child]["type"] == "cartesian" and len(config[child]["lists"]) == 2:
            first, second = config[child]["lists"]
            pairs.append((words(first), words(second)))
    return pairs


def is_generated_name(name: str) -> bool:
    """True when `name` is one Prefect makes up for a run nobody named (the API's and client's
    coolname slug, or a Custom run form's default in either UI), judged by the generators' own
    words; False for a name a person chose. The limit: a name a person types that the
    generators could also make ('red-fox' is a coolname slug) reads as made up and is replaced;
    a third word or a digit keeps it (docs/operations.md, "Reading runs and events")."""
    if _is_ui_v2_name(name) or _is_legacy_ui_name(name):
        return True
    parts = name.split("-")
    return len(parts) == 2 and any(parts[0] in first and parts[1] in second for first, second in _coolname_pairs())


def param_name(value: Any) -> str:
    """A short name for a flow parameter that is a block or a block reference (run names): a
    repository reference's block name; a target's name (target_name_of)."""
    if isinstance(value, str):
        return value.split("/")[-1]
    if isinstance(value, dict):  # parameters as the runtime sees them before validation
        return str(value.get("target_name") or value.get("host") or "target")
    return getattr(value, "name", None) or type(value).__name__


def _target_documents(ref: str) -> list[dict] | None:
    """The saved target block documents (at most 2) a reference names, secrets not read:
    'postgres-target/prod' by its type and name, a bare 'prod' among every target type. None when
    the API cannot be asked (unreachable) or the type prefix is no target type."""
    types = target_types()
    slug, _, name = ref.rpartition("/")
    if slug and slug not in types:
        return None
    try:
        with get_client(sync_client=True) as client:
            return client.request(
                "POST",
                "/block_documents/filter",
                json={
                    "block_documents": {"name": {"any_": [name]}, "is_anonymous": {"eq_": False}},
                    "block_types": {"slug": {"any_": [slug] if slug else list(types)}},
                    "include_secrets": False,
                    "limit": 2,
                },
            ).json()
    except httpx.HTTPError:
        return None


def target_engine(value: Any) -> str | None:
    """The engine of a target parameter, cheaply: a target block's own; a name with its block
    type ('redis-target/cache') by that type; a bare name ('prod') by one API query for target
    blocks of that name, secrets not read. None when that does not tell one engine (no such
    block, blocks of several kinds, the API unreachable): the run itself then says why."""
    engine = getattr(value, "engine_name", None)
    if engine or not isinstance(value, str):
        return engine
    if "/" in value:
        slug = value.split("/", 1)[0]
        types = target_types()
        return types[slug].engine_name if slug in types else None
    return _target_identity(value)[0]


def _target_identity(value: Any) -> tuple[str | None, str]:
    """(engine or None, target name) of a target parameter, with at most one API query and no
    secrets: a block's own engine and `.name`; a block reference's saved document gives its
    engine (by block type) and its name (target_name when set, else the block's name). A
    reference the API cannot resolve to one document keeps its block name (and a type prefix's
    engine)."""
    if not isinstance(value, str):
        return getattr(value, "engine_name", None), param_name(value)
    types = target_types()
    slug, _, block_name = value.rpartition("/")
    engine = types[slug].engine_name if slug in types else None
    if slug and engine is None:
        return None, block_name
    found = _target_documents(value)
    if not found or len(found) != 1 or not found[0].get("block_type"):
        return engine, block_name
    doc = found[0]
    engine = types[doc["block_type"]["slug"]].engine_name if doc["block_type"]["slug"] in types else engine
    return engine, str((doc.get("data") or {}).get("target_name") or block_name)


def deployment_id() -> str | None:
    """The id of the deployment this flow run belongs to; None for a run started outside a
    deployment (the CLI, tests, a user's own flow) or outside any run. Read from the run's context
    with no API call: Prefect 3.9's `prefect.runtime.deployment.id` looks for `deployment_id` on
    the context rather than on its flow run, and so reads the flow run from the API (a new client
    and a request) every time it is asked."""
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        return str(context.flow_run.deployment_id) if context.flow_run.deployment_id else None
    return deployment.id


def deployment_name() -> str | None:
    """The name of this run's deployment (one API read, by deployment_id's id: Prefect's
    `deployment.name` would read the flow run first to find it); None, with no API call, for a
    run outside a deployment."""
    found = deployment_id()
    if found is None:
        return None
    with get_client(sync_client=True) as client:
        return client.read_deployment(found).name


def run_name(kind: str, subject_param: str = "repository"):
    """flow_run_name callable: '<kind>-<engine>-<target>-<time>' ('full-postgres-prod-
    20261126T020000.123Z'), <target> the target's name as the repository, catalog and events
    read it (target_name when set, else the block's name); a run over a repository rather than one target is
    '<kind>-<repository>-<time>' (`subject_param` names that parameter). The time is when the
    run started, in the backup id's form; a backup run's id takes it (run_started). A name the
    run already has that nobody made up (is_generated_name) is kept as it is."""

    def name() -> str:
        current = flow_run.name
        if current and not is_generated_name(current):
            return current
        params = flow_run.parameters or {}
        target = params.get("target")
        started = datetime.now(UTC)
        if flow_run.id:
            _RUN_STARTS[str(flow_run.id)] = started
        if target:
            engine, subject = _target_identity(target)
        else:
            engine, subject = None, param_name(params.get(subject_param) or "all")
        parts = (kind, engine, subject, id_time(started))
        return "-".join(part for part in parts if part)

    return name


def run_started() -> datetime | None:
    """The instant this flow run's name carries (run_name), for its backup id; None for a run
    this process did not name (it kept a name a person gave it, or runs outside a flow)."""
    return _RUN_STARTS.get(str(flow_run.id)) if flow_run.id else None
