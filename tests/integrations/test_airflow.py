"""Airflow: `ReflowRunOperator` runs the selected syncs against the Braze sandbox as a task, with Airflow's
task test helpers: exit 0 succeeds with the numbers as its XCom, 3 succeeds with a warning (or fails with
`fail_on_undelivered`), 4 fails without retry, a locked state fails with a retry. Runs in its own virtual
environment (.ci/run: .venv-airflow); skipped without Airflow."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cli_runner import warehouse_sql

pytest.importorskip("airflow")

from engine.integrations.airflow import (  # noqa: E402
    AirflowException,
    AirflowFailException,
    ReflowRunOperator,
)
from engine.sandbox.testing import running_sandbox  # noqa: E402

pytestmark = pytest.mark.e2e


def operator(project: Path, **kwargs) -> ReflowRunOperator:
    return ReflowRunOperator(task_id="reflow_users", project_dir=str(project), select=["braze_users"], **kwargs)


def logged(capsys, caplog) -> str:
    """The task's log: Airflow 3 logs through structlog (to the console), Airflow 2 through logging."""
    out, err = capsys.readouterr()
    return out + err + caplog.text


def test_a_run_succeeds_with_its_numbers(example_project: Path, braze_env, capsys, caplog):
    with caplog.at_level(logging.INFO):
        pushed = operator(example_project).execute(context={})
    assert pushed["exit_code"] == 0
    [users] = pushed["syncs"]
    assert users["name"] == "braze_users" and users["rows"] > 0 and users["acknowledged"] == users["rows"]
    assert users["requests"] > 0 and users["data_points"] > 0
    text = logged(capsys, caplog)
    assert "braze_users:" in text and "acknowledged" in text, text
    assert braze_env.api_key not in text + repr(pushed)


def test_undelivered_rows_warn_or_fail(example_project: Path, monkeypatch, capsys, caplog):
    with running_sandbox(reject_external_ids=frozenset({"c_00001"})) as braze:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze.url)
        monkeypatch.setenv("BRAZE_API_KEY", braze.api_key)
        with caplog.at_level(logging.WARNING):
            pushed = operator(example_project).execute(context={})
        assert pushed["exit_code"] == 3 and pushed["syncs"][0]["rejected"] == 1
        assert "undelivered" in logged(capsys, caplog)
        warehouse_sql(example_project, "UPDATE customers SET email = 'new-' || email WHERE customer_id = 'c_00001'")
        with pytest.raises(AirflowException, match="undelivered") as raised:
            operator(example_project, fail_on_undelivered=True).execute(context={})
        assert not isinstance(raised.value, AirflowFailException)


def test_a_guard_fails_the_task_without_retry(example_project: Path, braze_env):
    operator(example_project).execute(context={})
    warehouse_sql(example_project, "UPDATE customers SET loyalty_tier = 'obsidian'")
    before = braze_env.stats()["requests_total"]
    with pytest.raises(AirflowFailException, match="max_changed_pct"):
        operator(example_project).execute(context={})
    assert braze_env.stats()["requests_total"] == before
    pushed = operator(example_project, allow_guards=["max_changed_pct"]).execute(context={})
    assert pushed["exit_code"] == 0


def test_a_state_held_by_another_run_fails_with_a_retry(example_project: Path, braze_env):
    from engine.state.lock import StateLock

    (example_project / ".reflow").mkdir()
    held = StateLock(example_project / ".reflow" / "state.duckdb", "run")
    held.acquire()
    try:
        with pytest.raises(AirflowException, match="in use by another reflow run") as raised:
            operator(example_project, lock_timeout=0).execute(context={})
        assert not isinstance(raised.value, AirflowFailException)
    finally:
        held.release()


DAG_FILE = '''
import datetime

from airflow.sdk import DAG

from engine.integrations.airflow import ReflowRunOperator

with DAG("reflow_daily", schedule="@daily", start_date=datetime.datetime(2026, 1, 1), catchup=False) as dag:
    ReflowRunOperator(task_id="reflow_users", project_dir={project!r}, select=["tag:users"], lock_timeout=600)

if __name__ == "__main__":
    run = dag.test()
    print("RESULT", run.state, [(ti.task_id, ti.state) for ti in run.get_task_instances()])
'''


def test_a_dag_runs_the_operator_with_dag_test(example_project: Path, braze_env, tmp_path):
    """The whole of Airflow around the task: a DAG file in a DAGs folder, a metadata database, `dag.test()`."""
    import os
    import subprocess
    import sys

    pytest.importorskip("airflow.sdk")             # Airflow 3's DAG authoring interface
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "reflow_daily.py").write_text(DAG_FILE.format(project=str(example_project)))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": os.pathsep.join(sys.path)}
    airflow = [sys.executable, "-m", "airflow"]
    for step in (["db", "migrate"], ["dags", "reserialize"]):
        proc = subprocess.run(airflow + step, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, str(dags / "reflow_daily.py")], env=env, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "RESULT success [('reflow_users', 'success')]" in out, out
    assert "braze_users: " in out and "acknowledged" in out, out
    assert braze_env.api_key not in out
    assert braze_env.stats()["requests_total"] > 1


def test_the_deploy_page_example_loads(example_project: Path):
    """docs/deploy.md's DAG, pointed at this project, parses into its two tasks in order."""
    import re

    pytest.importorskip("airflow.sdk")
    page = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    [code] = [b for b in re.findall(r"^```python\n(.*?)^```$", page, re.MULTILINE | re.DOTALL)
              if "ReflowRunOperator" in b]
    scope: dict = {}
    exec(compile(code.replace('"/opt/analytics"', repr(str(example_project))), "deploy.md", "exec"), scope)
    dag = scope["dag"]
    assert set(dag.task_dict) == {"reflow_users", "reflow_events"}
    assert dag.task_dict["reflow_events"].upstream_task_ids == {"reflow_users"}
    assert dag.task_dict["reflow_events"].fail_on_undelivered is True
