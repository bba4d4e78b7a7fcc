"""Shared block metadata."""

# The logo lives in this repository (docs/img/logo.png); the Prefect UI loads it from here.
LOGO_PATH = "docs/img/logo.png"
LOGO_URL = f"https://raw.githubusercontent.com/vaultflow/vaultflow/main/{LOGO_PATH}"


def target_name(block) -> str:
    """A target block's name in the repository layout: target_name, else the saved block's
    name, else host-port."""
    return block.target_name or getattr(block, "_block_document_name", None) or f"{block.host}-{block.port}"
