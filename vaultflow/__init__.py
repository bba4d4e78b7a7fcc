"""vaultflow core: repository, stores, streaming pipeline, retention and engines.

Nothing in this package imports Prefect (the CLI imports flows lazily, inside its
commands); it is usable and testable on its own.
"""

__version__ = "0.1.0"
