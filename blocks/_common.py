"""Shared block metadata."""

from vaultflow.errors import ConfigError

# The logo lives in this repository (docs/img/logo.png); the Prefect UI loads it from here.
LOGO_PATH = "docs/img/logo.png"
LOGO_URL = f"https://raw.githubusercontent.com/vaultflow/vaultflow/main/{LOGO_PATH}"


def target_name(block) -> str:
    """A target block's name in the repository layout: target_name, else the saved block's
    name, else host-port. Any other text is allowed (the repository percent-encodes it, see
    docs/repository-format.md) except control characters (line breaks would split the
    restore_command line of a restored cluster and the lines of logs).

    Raises ConfigError for a name with control characters."""
    name = block.target_name or getattr(block, "_block_document_name", None) or f"{block.host}-{block.port}"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"target name {name!r} contains control characters (line breaks, tabs...): "
                          "set a target_name without them on the target block")
    return name
