"""Thin @task wrappers over the vaultflow core, by verb. Flows compose these."""
