"""One module per engine, each listing its kinds of target in CONTRACTS (see tests/contract/harness.py)."""
