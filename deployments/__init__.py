"""The deployments of prefect.yaml, served from one process or checked before `prefect deploy`.

    python -m vaultflow.deployments.validate [prefect.yaml]   # entrypoints, crons, timezones, parameters
    python -m vaultflow.deployments.serve_all [prefect.yaml]  # every deployment, no work pool or worker

prefect.yaml is the single source of truth for names, parameters and schedules.
"""
