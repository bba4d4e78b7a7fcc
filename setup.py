"""What `pip install vaultflow` installs: the core package `vaultflow/` and, under the same name,
the Prefect layers that the repository keeps at the top level where Prefect projects keep them
(flows/ -> vaultflow.flows, tasks/ -> vaultflow.tasks, blocks/ -> vaultflow.blocks,
deployments/ -> vaultflow.deployments), so an installed vaultflow claims no import name but its
own (docs/architecture.md, "Issue 12: packaging"). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

LAYERS = ("flows", "tasks", "blocks", "deployments")

setup(
    package_dir={"vaultflow": "vaultflow", **{f"vaultflow.{layer}": layer for layer in LAYERS}},
    packages=[
        *find_packages(include=["vaultflow", "vaultflow.*"]),
        *(f"vaultflow.{name}" for name in find_packages(include=[f"{layer}*" for layer in LAYERS])),
    ],
    package_data={"vaultflow.flows": ["_ui_run_names.json"]},
)
