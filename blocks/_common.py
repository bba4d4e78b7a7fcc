"""Shared block metadata."""

# The logo lives in this repository (docs/img/logo.png); the Prefect UI loads it from here.
LOGO_PATH = "docs/img/logo.png"
LOGO_URL = f"https://raw.githubusercontent.com/vaultflow/vaultflow/main/{LOGO_PATH}"
