#!/usr/bin/env bash
# import-linter (contracts in pyproject.toml) on the layout `pip install vaultflow` installs
# (setup.py): flows/, tasks/, blocks/ and deployments/ inside vaultflow/. The checkout reaches that
# layout through the editable install's import hook, which grimp does not use: it reads a
# package's own directory, so the packages are copied into one, in a temporary directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
layout=$(mktemp -d)
trap 'rm -rf "$layout"' EXIT
cp -r "$root/vaultflow" "$layout/vaultflow"
for layer in flows tasks blocks deployments; do
    cp -r "$root/$layer" "$layout/vaultflow/$layer"
done
cd "$layout"
PYTHONPATH="$layout" "$root/.venv/bin/lint-imports" --config "$root/pyproject.toml" --no-cache
