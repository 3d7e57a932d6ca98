"""Orchestrator integrations over the Python API (engine/api.py), each an optional extra:

    dagster.py   `reflow_assets(...)`: one Dagster asset per sync        pip install "reflow[dagster]"
    airflow.py   `ReflowRunOperator`: plan, guards and apply as a task   pip install "reflow[airflow]"

Each module imports its orchestrator when it is imported (and says which extra to install when it is
missing); nothing else in Reflow imports them.
"""
