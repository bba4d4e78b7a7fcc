"""One flow per strategy. Flows only orchestrate tasks; the work is in vaultflow/."""
