"""Every parameter of every flow has a description in the Prefect run form (read from the
`Args:` section of the flow's docstring), and closed sets of values are choices, not free text."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from prefect import Flow
from prefect.utilities.callables import parameter_schema

from vaultflow import flows


def all_flows() -> list[Flow]:
    found = []
    for module in pkgutil.iter_modules(flows.__path__):
        if module.name.startswith("_"):
            continue
        for value in vars(importlib.import_module(f"flows.{module.name}")).values():
            if isinstance(value, Flow) and value not in found:
                found.append(value)
    return found


def test_the_flows_are_found():
    names = {f.name for f in all_flows()}
    assert {
        "full-backup",
        "incremental-backup",
        "differential-backup",
        "restore",
        "restore-drill",
        "verify",
        "prune",
        "archive-logs",
        "upload",
        "status",
    } <= names, names


@pytest.mark.parametrize("flow", all_flows(), ids=lambda f: f.name)
def test_every_flow_parameter_has_a_description(flow: Flow):
    schema = parameter_schema(flow.fn).model_dump()
    assert schema["properties"], flow.name
    missing = [name for name, prop in schema["properties"].items() if not (prop.get("description") or "").strip()]
    assert not missing, (
        f"flow {flow.name!r}: parameters without a description (add them to its docstring's Args:): {missing}"
    )


def test_closed_sets_are_choices():
    from vaultflow.flows.restore import restore

    schema = parameter_schema(restore.fn).model_dump()
    timeline = schema["definitions"]["PostgresRestoreOptions"]["properties"]["to_timeline"]
    choices = [option for option in timeline["anyOf"] if "enum" in option]
    assert choices and set(choices[0]["enum"]) == {"latest", "current"}, timeline


def test_a_target_parameter_offers_every_registered_target_block_type():
    from vaultflow.blocks.registry import target_types
    from vaultflow.flows.full_backup import full_backup

    schema = parameter_schema(full_backup.fn).model_dump()
    [block_ref] = [o["$ref"] for o in schema["properties"]["target"]["anyOf"] if "$ref" in o]
    offered = schema["definitions"][block_ref.rsplit("/", 1)[1]]["anyOf"]
    assert [o["block_type_slug"] for o in offered] == list(target_types())


def test_restore_offers_each_engines_options_model_with_every_field_described():
    from vaultflow.engines.registry import names, restore_options
    from vaultflow.flows.restore import restore

    schema = parameter_schema(restore.fn).model_dump()
    offered = [o["$ref"].rsplit("/", 1)[1] for o in schema["properties"]["options"]["anyOf"] if "$ref" in o]
    models = [model for name in names() if (model := restore_options(name)) is not None]
    assert offered == [model.__name__ for model in models]
    for model in models:
        fields = schema["definitions"][model.__name__]["properties"]
        assert fields, model
        missing = [name for name, prop in fields.items() if not (prop.get("description") or "").strip()]
        assert not missing, f"{model.__name__}: fields without a description: {missing}"
        assert schema["definitions"][model.__name__]["title"].endswith("restore options")


@pytest.mark.parametrize("rto", [-5, 0, float("nan"), float("inf"), "1e400"])
def test_a_drill_refuses_an_rto_objective_that_is_not_positive_and_finite(rto):
    """-5, nan or inf would record a drill that can never pass (or always passes) and page
    on-call; 1e400 is inf. The run form and a deployment's schedule are checked against the
    schema, a run's parameters by the flow's validation, before anything runs."""
    from prefect.exceptions import ParameterTypeError

    from vaultflow.flows.restore_drill import restore_drill

    with pytest.raises(ParameterTypeError, match="rto_objective_s: Input should be (greater than 0|a finite number)"):
        restore_drill.validate_parameters({"target": "x", "repository": "y", "rto_objective_s": rto})
    assert restore_drill.validate_parameters({"target": "x", "repository": "y", "rto_objective_s": 0.5})
    schema = parameter_schema(restore_drill.fn).model_dump()
    assert schema["properties"]["rto_objective_s"]["exclusiveMinimum"] == 0


@pytest.mark.parametrize("rto", [-5, 0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-9, 0.5, 900, 1e300])
def test_the_cli_and_the_drill_flow_accept_the_same_rto_objectives(rto):
    """`vaultflow drill --rto` (summary.rto_seconds) and the flow's parameter follow one rule:
    a value one accepts the other accepts, and one it refuses the other refuses."""
    from prefect.exceptions import ParameterTypeError

    from vaultflow.flows.restore_drill import restore_drill
    from vaultflow.summary import rto_seconds

    try:
        restore_drill.validate_parameters({"target": "x", "repository": "y", "rto_objective_s": rto})
        flow_accepts = True
    except ParameterTypeError:
        flow_accepts = False
    try:
        cli_accepts = rto_seconds(rto) == rto
    except ValueError as exc:
        assert "is not a recovery time objective: give seconds above 0" in str(exc)
        cli_accepts = False
    assert cli_accepts == flow_accepts
    assert flow_accepts == (rto > 0 and rto != float("inf"))
