"""The API key is read from the environment and written nowhere: not to stdout/stderr (even with
--debug tracebacks), the state file, the lock file, plan exports, HTML reports or error messages.
Plain http:// goes only to loopback sandboxes unless a connection explicitly allows it.

Secrets stay secrets: an environment variable that feeds a secret setting (connections.*.api_key),
or whose name starts with REFLOW_SECRET_ or DBT_ENV_SECRET_, cannot be read by a model or by any other
setting, and every secret is registered with the scrubber as soon as the project loads."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from engine.errors import (
    Problem,
    ProjectError,
    RenderError,
    contains_secret,
    register_secret,
    registered_secrets,
    scrub,
    scrub_value,
)
from engine.models import render_model
from engine.project import SECRET_FIELDS, load_project
from engine.sandbox.testing import running_sandbox

pytestmark = pytest.mark.e2e

KEY = "SECRETKEY-1234567890abcdef"


def reflow(project: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "engine", "--project-dir", str(project), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_the_api_key_is_written_nowhere(example_project, tmp_path):
    from engine.demo import PRODUCTS_CATALOG

    with running_sandbox(api_key=KEY) as sandbox:
        r = requests.post(f"{sandbox.url}/catalogs", json=PRODUCTS_CATALOG, headers=sandbox.headers, timeout=10)
        assert r.status_code == 201
        env = {**os.environ, "BRAZE_REST_ENDPOINT": sandbox.url, "BRAZE_API_KEY": KEY}
        exports = tmp_path / "exports"
        exports.mkdir()
        outputs: list[str] = []

        def step(expect: int, *args: str) -> None:
            code, out, err = reflow(example_project, env, *args)
            outputs.extend([out, err])
            assert code == expect, (args, out, err)

        step(0, "plan", "--html", str(exports / "plan1.html"))
        step(0, "apply", "--yes")
        step(0, "example", "mutate")
        step(0, "plan", "--json")
        step(0, "plan", "--format", "markdown")
        step(0, "show", "--format", "json", "--limit", "0")
        step(0, "show", "--format", "jsonl", "--limit", "0")
        step(0, "show", "--html", str(exports / "show.html"))
        step(0, "apply", "--yes")
        step(0, "errors")
        step(0, "errors", "--json")
        step(0, "history", "--json")
        step(0, "status")
        step(0, "state", "backup", str(exports / "state-backup.duckdb"))
        step(1, "--debug", "apply", "--yes")           # the plan was applied: PlanError with a traceback
        assert "Traceback" in outputs[-1], outputs[-1]
        # a failure inside the Braze client with --debug: the key lacks a permission (403)
        app = sandbox.sandbox
        app.options = dataclasses.replace(app.options, permissions=app.options.permissions - {"users.track"})
        step(0, "example", "mutate", "--step", "2")
        step(1, "--debug", "run")
        assert "lacks users.track" in outputs[-2] + outputs[-1], outputs[-2:]
        # a wrong key (401) with --debug: the message names the connection, not the key
        code, out, err = reflow(example_project, {**env, "BRAZE_API_KEY": KEY + "-wrong"}, "--debug", "run")
        outputs.extend([out, err])
        assert code == 1 and "rejected the API key (401)" in out + err, out + err

    assert sandbox.stats()["requests_total"] > 0
    assert not any(KEY in text for text in outputs), "the API key appeared in the output"
    written = [p for p in (*example_project.rglob("*"), *exports.rglob("*")) if p.is_file()]
    assert any(p.name == "state.duckdb" for p in written) and any(p.suffix == ".html" for p in written)
    leaked = [str(p) for p in written if KEY.encode() in p.read_bytes()]
    assert not leaked, f"the API key was written to {leaked}"


BUCKET_SECRET = "bucketSECRET-0123456789-abcdefghij"     # the object store's secret key (state_path: s3://…)


def test_the_bucket_credentials_are_written_nowhere(example_project, tmp_path):
    """A remote state (moto's S3 server on 127.0.0.1): the bucket's secret key reaches no output, plan,
    report, the state object, its lock, the working copy, nor an error (--debug included); no model may
    read it."""
    pytest.importorskip("obstore")
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    from engine.demo import PRODUCTS_CATALOG

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key=BUCKET_SECRET)
    client.create_bucket(Bucket="team-state")
    file = example_project / "reflow_project.yml"
    file.write_text(file.read_text().replace("state_path: .reflow/state.duckdb",
                                             "state_path: s3://team-state/prod/state.duckdb"))
    exports = tmp_path / "exports"
    exports.mkdir()
    outputs: list[str] = []
    try:
        with running_sandbox() as sandbox:
            r = requests.post(f"{sandbox.url}/catalogs", json=PRODUCTS_CATALOG, headers=sandbox.headers, timeout=10)
            assert r.status_code == 201
            env = {**os.environ, "BRAZE_REST_ENDPOINT": sandbox.url, "BRAZE_API_KEY": sandbox.api_key,
                   "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": BUCKET_SECRET, "AWS_REGION": "us-east-1",
                   "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}

            def step(expect: int, *args: str, **extra: str) -> None:
                code, out, err = reflow(example_project, {**env, **extra}, *args)
                outputs.extend([out, err])
                assert code == expect, (args, out, err)

            step(0, "plan", "--html", str(exports / "plan.html"))
            step(0, "plan", "--format", "markdown")
            step(0, "apply", "--yes")
            step(0, "plan", "--read-only", "--format", "markdown")          # the pull request's preview
            step(0, "plan", "--read-only", "--json", "--html", str(exports / "preview.html"))
            step(0, "show", "--format", "jsonl", "--limit", "0")
            step(0, "history", "--json")
            step(0, "status")
            step(0, "state", "backup", str(exports / "state-backup.duckdb"))
            step(1, "--debug", "apply", "--yes")                   # a traceback, scrubbed
            assert "Traceback" in outputs[-1]
            step(1, "--debug", "plan", AWS_ENDPOINT_URL="http://127.0.0.1:9")      # unreachable
            step(1, "--debug", "plan", AWS_ALLOW_HTTP="false")
            # a model reading the secret key is refused, naming the variable only
            model = example_project / "models" / "braze_users.sql"
            model.write_text(model.read_text().replace("select", "select '{{ env_var(\"AWS_SECRET_ACCESS_KEY\") }}' as k,", 1))
            step(1, "plan")
            assert "AWS_SECRET_ACCESS_KEY" in outputs[-1] and "secret" in outputs[-1], outputs[-1]
            stored = [client.get_object(Bucket="team-state", Key=o["Key"])["Body"].read()
                      for o in client.list_objects_v2(Bucket="team-state").get("Contents", [])]
    finally:
        server.stop()
    assert stored, "the state was uploaded"
    assert not any(BUCKET_SECRET in text for text in outputs), "the bucket's secret key appeared in the output"
    assert not any(BUCKET_SECRET.encode() in data for data in stored), "the bucket's secret key was uploaded"
    written = [p for p in (*example_project.rglob("*"), *exports.rglob("*")) if p.is_file()]
    assert any(p.name == "state.duckdb.remote.json" for p in written)
    leaked = [str(p) for p in written if BUCKET_SECRET.encode() in p.read_bytes()]
    assert not leaked, f"the bucket's secret key was written to {leaked}"


def test_the_python_api_returns_logs_and_raises_no_key(example_project, capsys, caplog, monkeypatch):
    """engine.api (what the Dagster and Airflow integrations call): its results, its log records (the
    "reflow" logger) and its errors hold no key, when Braze refuses the key (403) too."""
    import logging

    from engine import api
    from engine.errors import ReflowError

    monkeypatch.setenv("BRAZE_API_KEY", KEY)
    with running_sandbox(api_key=KEY, permissions=frozenset()) as sandbox, caplog.at_level(logging.DEBUG):
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
        result = api.run(example_project, select=["braze_users"])
        assert result.exit_code == 1 and result.sync("braze_users").error, result
        preview = api.plan(example_project, read_only=True)
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"http://user:{KEY}@127.0.0.1:9")
        with pytest.raises(ReflowError) as raised:
            api.run(example_project, select=["braze_users"])
    texts = [repr(result), json.dumps(result.plan.to_json(), default=str), json.dumps(preview.to_json(), default=str),
             str(raised.value), caplog.text, *capsys.readouterr()]
    assert not any(KEY in text for text in texts), "the key appeared in the API's results, logs or errors"


def test_a_key_written_in_the_project_file_is_scrubbed_and_warned_about(example_project):
    file = example_project / "reflow_project.yml"
    text = file.read_text()
    file.write_text(text.replace("api_key: \"{{ env_var('BRAZE_API_KEY') }}\"", f'api_key: "{KEY}"'))
    code, out, err = reflow(example_project, {**os.environ, "BRAZE_REST_ENDPOINT": "https://rest.iad-01.braze.com"},
                            "--debug", "plan", "--select", "no_such_sync")
    assert code == 1
    assert "the API key is written in the project file" in err
    assert KEY not in out + err


@pytest.mark.parametrize(("endpoint", "extra", "allowed"), [
    ("http://braze.example.com", "", False),
    ("http://10.1.2.3:8080", "", False),
    ("ftp://rest.iad-01.braze.com", "", False),
    ("http://braze.example.com", "\n    allow_http: true", True),
    ("http://127.0.0.1:9", "", True),
    ("http://localhost:9", "", True),
    ("https://rest.iad-01.braze.com", "", True),
])
def test_plain_http_only_to_loopback_unless_explicitly_allowed(example_project, endpoint, extra, allowed):
    file = example_project / "reflow_project.yml"
    text = file.read_text().replace(
        "endpoint: \"{{ env_var('BRAZE_REST_ENDPOINT', 'https://rest.iad-01.braze.com') }}\"",
        f'endpoint: "{endpoint}"{extra}')
    file.write_text(text)
    code, out, err = reflow(example_project, {**os.environ, "BRAZE_API_KEY": KEY}, "validate")
    if allowed:
        assert code == 0, err
    else:
        assert code == 1 and "Traceback" not in err
        assert "connections.braze.endpoint" in err, err
    assert KEY not in out + err


# ------------------------------------------------------------------------------ secrets stay secrets

MINIMAL = Path(__file__).resolve().parent.parent / "fixtures" / "projects" / "minimal"


def fresh_key() -> str:
    """A key no earlier test registered (the scrubber's registry lives as long as the process)."""
    return f"SECRETKEY-{uuid.uuid4().hex}"


def test_a_model_reading_the_key_is_refused_and_the_key_appears_nowhere(example_project, tmp_path):
    """The model the issue reported: `'{{ env_var("BRAZE_API_KEY") }}' as first_name` used to print the
    key in compile and plan, write it to the HTML report and the state file, and send it to Braze."""
    model = example_project / "models" / "braze_users.sql"
    lines = model.read_text().splitlines()
    line = lines.index("    c.first_name,") + 1
    lines[line - 1] = """    '{{ env_var("BRAZE_API_KEY") }}' as first_name,"""
    model.write_text("\n".join(lines) + "\n")
    refusal = (f"models/braze_users.sql:{line}: env_var('BRAZE_API_KEY') feeds a secret "
               "(connections.braze.api_key) and cannot be read by a model")
    report = tmp_path / "plan.html"
    outputs: list[str] = []
    with running_sandbox(api_key=KEY) as sandbox:
        env = {**os.environ, "BRAZE_REST_ENDPOINT": sandbox.url, "BRAZE_API_KEY": KEY}
        for args in (("validate",), ("compile", "braze_users"), ("--debug", "compile", "braze_users"),
                     ("plan",), ("plan", "--json"), ("plan", "--html", str(report)), ("run",), ("--debug", "run")):
            code, out, err = reflow(example_project, env, *args)
            outputs += [out, err]
            assert code == 1 and refusal in err, (args, out, err)
        assert sandbox.stats()["requests_total"] > 0          # the other syncs ran
        with sandbox.store.lock:
            received = json.dumps(sandbox.store.to_json(), default=str)
    assert not any(KEY in text for text in outputs), "the API key appeared in the output"
    assert KEY not in received, "the API key was sent to Braze"
    assert '"first_name"' not in received                       # braze_users sent nothing at all
    written = [p for p in (*example_project.rglob("*"), report) if p.is_file()]
    assert any(p.name == "state.duckdb" for p in written) and report.is_file()
    leaked = [str(p) for p in written if KEY.encode() in p.read_bytes()]
    assert not leaked, f"the API key was written to {leaked}"


def minimal(root: Path, model: str | None = None, project_file: str | None = None) -> Path:
    shutil.copytree(MINIMAL, root)
    if model is not None:
        (root / "models" / "braze_users.sql").write_text(model)
    if project_file is not None:
        (root / "reflow_project.yml").write_text(project_file)
    return root


@pytest.mark.parametrize(("model", "message"), [
    ("select '{{ env_var(\"BRAZE_API_KEY\") }}' as customer_id",
     "models/braze_users.sql:1: env_var('BRAZE_API_KEY') feeds a secret (connections.braze.api_key) and "
     "cannot be read by a model"),
    ("select 1 as customer_id\n{% if false %}{{ env_var(name='BRAZE_API_KEY') }}{% endif %}",   # never rendered
     "models/braze_users.sql:2: env_var('BRAZE_API_KEY') feeds a secret (connections.braze.api_key) and "
     "cannot be read by a model"),
    ("select 1 as customer_id,\n'{{ env_var('BRAZE_' ~ 'API_KEY') }}' as x",                     # a computed name
     "models/braze_users.sql:2: env_var('BRAZE_API_KEY') feeds a secret (connections.braze.api_key) and "
     "cannot be read by a model"),
    ("select '{{ env_var('REFLOW_SECRET_TOKEN', 'none') }}' as customer_id",
     "models/braze_users.sql:1: env_var('REFLOW_SECRET_TOKEN') is a secret (its name starts with REFLOW_SECRET_) "
     "and cannot be read by a model"),
    ("select '{{ env_var('DBT_ENV_SECRET_' ~ 'GIT_TOKEN', 'none') }}' as customer_id",
     "models/braze_users.sql:1: env_var('DBT_ENV_SECRET_GIT_TOKEN') is a secret (its name starts with "
     "DBT_ENV_SECRET_) and cannot be read by a model"),
])
def test_a_model_cannot_read_a_secret_env_var(tmp_path, monkeypatch, model, message):
    monkeypatch.setenv("BRAZE_API_KEY", fresh_key())
    monkeypatch.setenv("REFLOW_SECRET_TOKEN", fresh_key())
    project = load_project(minimal(tmp_path / "p", model))
    with pytest.raises(RenderError) as caught:
        render_model(project, "braze_users")
    assert caught.value.message == message


def test_a_model_referencing_a_secret_reading_model_is_refused_there(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAZE_API_KEY", fresh_key())
    root = minimal(tmp_path / "p", "select * from {{ ref('customers') }}")
    (root / "models" / "customers.sql").write_text(
        "select 1 as customer_id,\n'{{ env_var('BRAZE_API_KEY') }}' as k")
    with pytest.raises(RenderError, match=r"^models/customers.sql:2: env_var\('BRAZE_API_KEY'\) feeds a secret"):
        render_model(load_project(root), "braze_users")


def test_sql_that_dbt_compiled_for_a_model_is_refused_when_it_holds_a_secret(tmp_path, monkeypatch):
    """A Reflow model that calls a dbt macro is compiled by dbt, whose env_var() Reflow does not guard."""
    key = fresh_key()
    monkeypatch.setenv("BRAZE_API_KEY", key)

    class DbtWarehouse:
        def relation_for(self, name: str) -> str:
            return f'"main"."{name}"'

        def compile_inline(self, source: str, rel: str) -> str:
            return f"select '{key}' as customer_id"          # what dbt would render from a macro

    root = minimal(tmp_path / "p", "select {{ leak_it() }} as customer_id")
    with pytest.raises(RenderError) as caught:
        dbt = DbtWarehouse()
        render_model(load_project(root), "braze_users", relation_for=dbt.relation_for,
                     compile_inline=dbt.compile_inline)
    assert caught.value.message == (
        "models/braze_users.sql: the SQL dbt compiled contains a secret (the value of a secret setting or "
        "environment variable); a model cannot read secrets")


def test_ordinary_env_vars_still_reach_models(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAZE_API_KEY", fresh_key())
    monkeypatch.setenv("SHOP_REGION", "eu")
    root = minimal(tmp_path / "p",
                   "select '{{ env_var('SHOP_REGION') }}{{ env_var('NOT_SET_X', '-d') }}' as customer_id")
    assert render_model(load_project(root), "braze_users").sql == "select 'eu-d' as customer_id"


PROJECT = """name: p
warehouse: {{type: duckdb, path: warehouse.duckdb}}
vars:
  region: "{vars_region}"
connections:
  braze:
    type: braze
    endpoint: "{endpoint}"
    api_key: "{api_key}"
"""


def project_file(vars_region: str = "eu", endpoint: str = "https://rest.iad-01.braze.com",
                 api_key: str = "{{ env_var('BRAZE_API_KEY') }}") -> str:
    return PROJECT.format(vars_region=vars_region, endpoint=endpoint, api_key=api_key)


@pytest.mark.parametrize(("text", "message"), [
    (project_file(vars_region="{{ env_var('BRAZE_API_KEY') }}"),        # var() would hand it to every model
     "reflow_project.yml:4:11: vars.region: env_var('BRAZE_API_KEY') feeds a secret (connections.braze.api_key) "
     "and cannot be read by another setting"),
    (project_file(endpoint="https://{{ env_var('BRAZE_API_KEY') }}.example.com"),
     "reflow_project.yml:8:15: connections.braze.endpoint: env_var('BRAZE_API_KEY') feeds a secret "
     "(connections.braze.api_key) and cannot be read by another setting"),
    (project_file(vars_region="{{ env_var('DBT_ENV_SECRET_PASSWORD', 'x') }}"),
     "reflow_project.yml:4:11: vars.region: env_var('DBT_ENV_SECRET_PASSWORD') is a secret (its name starts with "
     "DBT_ENV_SECRET_) and cannot be read by another setting"),
    (project_file(api_key="{{ env_var('BRAZE_' ~ 'API_KEY') }}"),
     "reflow_project.yml:9:14: connections.braze.api_key: env_var() in a secret setting must name its variable "
     "with a quoted string (env_var('BRAZE_API_KEY')), so that models can be kept from reading it"),
])
def test_no_other_setting_reads_a_secret_env_var(tmp_path, monkeypatch, text, message):
    monkeypatch.setenv("BRAZE_API_KEY", fresh_key())
    with pytest.raises(ProjectError) as caught:
        load_project(minimal(tmp_path / "p", project_file=text))
    assert caught.value.message == f"{message}\n1 problem in reflow_project.yml"


def test_secrets_are_registered_as_soon_as_the_project_loads(tmp_path, monkeypatch):
    """For every command (validate, plan, compile...), not only when a destination is built."""
    key, other, token = fresh_key(), fresh_key(), fresh_key()
    monkeypatch.setenv("BRAZE_API_KEY", f"  {key}\n")                  # what the setting renders is stripped
    monkeypatch.setenv("REFLOW_SECRET_WAREHOUSE", token)
    text = project_file() + f"""  second:
    type: braze
    endpoint: https://rest.fra-02.braze.eu
    api_key: "{other}"
"""
    project = load_project(minimal(tmp_path / "p", project_file=text))
    assert project.secret_env_vars == {"BRAZE_API_KEY": "connections.braze.api_key"}
    assert scrub(f"a {key} b {other} c {token}") == "a *** b *** c ***"
    assert "api_key: the API key is written in the project file" in "\n".join(project.warnings)


def test_an_unset_key_is_registered_later_and_validate_still_works(tmp_path, monkeypatch):
    monkeypatch.delenv("BRAZE_API_KEY", raising=False)
    project = load_project(minimal(tmp_path / "p"))
    assert project.secret_env_vars == {"BRAZE_API_KEY": "connections.braze.api_key"}
    key = fresh_key()
    monkeypatch.setenv("BRAZE_API_KEY", key)
    assert project.api_key("braze") == key and scrub(key) == "***"


def test_the_secret_settings_are_one_list():
    assert SECRET_FIELDS[0] == "api_key" and len(set(SECRET_FIELDS)) == len(SECRET_FIELDS)


def test_the_scrubber_masks_every_form_a_key_takes():
    key = fresh_key()
    inner = key[10:20]
    register_secret(inner)                                   # a secret inside another: the longer goes first
    register_secret(key)
    assert scrub(f"<{key}>") == "<***>"
    quoted = f'k"{fresh_key()}\\'
    register_secret(quoted)
    assert scrub(json.dumps({"v": quoted})) == '{"v": "***"}'          # as it appears inside JSON
    assert scrub(requests.utils.quote(quoted, safe="")) == "***"          # and inside a URL
    assert scrub(f'STRUCT("{quoted.replace(chr(34), 2 * chr(34))}" INTEGER)') == 'STRUCT("***" INTEGER)'  # in SQL
    apostrophe = f"k'{fresh_key()}"
    register_secret(apostrophe)
    assert scrub(f"ENUM('{apostrophe.replace(chr(39), 2 * chr(39))}')") == "ENUM('***')"
    assert contains_secret(f"x{key}y") and not contains_secret("nothing here")
    secrets = registered_secrets()
    assert key in secrets and inner in secrets and secrets.index(key) < secrets.index(inner)
    assert scrub_value({"a": [key, 1, None], key: (f"{key}!",)}) == {"a": ["***", 1, None], "***": ("***!",)}
    assert str(Problem("f.yml", 1, 2, "p", f"bad {key}")) == "f.yml:1:2: p: bad ***"
    error = RenderError(f"late {fresh_key()}")
    late = error.message.removeprefix("late ")
    register_secret(late)                                    # registered after the error was made
    assert error.message == "late ***" and str(error) == "late ***"


# ------------------------------------------------------------------------------ every output, every file

def plant(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def test_a_secret_planted_everywhere_reaches_no_output_no_file_and_not_braze(example_project, tmp_path):
    """The API key (from the environment), a REFLOW_SECRET_ token, and both typed into models as literals
    (a user's model, which no env_var() guard sees: a first name, an event property, a user key): every
    command's stdout and stderr (--debug tracebacks too), plan exports, HTML reports, show/errors/history
    JSON, the state file's bytes and what Braze received are searched for each. The rows holding them
    are invalid with the reason, and the plan says so."""
    key, token = fresh_key(), f"tok-{uuid.uuid4().hex}"
    users = example_project / "models" / "braze_users.sql"
    plant(users, "    c.first_name,",
          f"    case when c.customer_id = 'c_00002' then '{key}' else c.first_name end as first_name,")
    plant(example_project / "models" / "order_events.sql", "    o.channel,",
          f"    case when o.order_id = 'o_0000003' then 'via {token}' else o.channel end as channel,")
    plant(example_project / "models" / "gdpr_deletes.sql", "select",
          f"select '{key}' as customer_id, null as requested_at union all select")
    exports = tmp_path / "exports"
    exports.mkdir()
    outputs: list[str] = []
    with running_sandbox(api_key=key) as sandbox:
        from engine.demo import PRODUCTS_CATALOG

        r = requests.post(f"{sandbox.url}/catalogs", json=PRODUCTS_CATALOG, headers=sandbox.headers, timeout=10)
        assert r.status_code == 201
        env = {**os.environ, "BRAZE_REST_ENDPOINT": sandbox.url, "BRAZE_API_KEY": key,
               "REFLOW_SECRET_TOKEN": token}

        def step(expect: int, *args: str) -> str:
            code, out, err = reflow(example_project, env, *args)
            outputs.extend([out, err])
            assert code == expect, (args, out, err)
            return out

        step(0, "validate")
        step(0, "--debug", "compile", "braze_users")
        text = step(0, "plan", "--html", str(exports / "plan.html"))
        assert "2 row(s) hold a secret value" in text or "1 row(s) hold a secret value" in text, text
        plan = json.loads(step(0, "plan", "--json"))
        invalid = {(s["name"], i["key"]): i["reason"] for s in plan["syncs"] for i in s["invalid_samples"]}
        assert invalid[("braze_users", "c_00002")].startswith("first_name: holds a secret value"), invalid
        assert invalid[("order_events", "o_0000003")].startswith("properties.channel: holds a secret value") \
            or invalid[("order_events", "o_0000003")].startswith("channel: holds a secret value"), invalid
        assert invalid[("gdpr_deletes", "***")].startswith("the primary key"), invalid
        step(0, "plan", "--format", "markdown")
        for fmt in ("json", "jsonl", "csv", "table"):
            step(0, "show", "--format", fmt, "--limit", "0")
        step(0, "show", "--op", "invalid", "--html", str(exports / "show.html"))
        step(3, "apply", "--yes")                                  # the refused rows stay pending
        for args in (("status",), ("history", "--json"), ("errors", "--json"), ("errors",)):
            step(0, *args)
        step(1, "--debug", "apply", "--yes")                      # already applied: a traceback
        assert "Traceback" in outputs[-1]
        step(3, "--debug", "run")
        step(0, "state", "backup", str(exports / "backup.duckdb"))
        with sandbox.store.lock:
            received = json.dumps(sandbox.store.to_json(), default=str)
    assert sandbox.stats()["requests_total"] > 0 and "c_00001" in received
    written = [p for p in (*example_project.rglob("*"), *exports.rglob("*")) if p.is_file()]
    assert {"state.duckdb", "plan.html", "show.html", "backup.duckdb"} <= {p.name for p in written}
    for secret in (key, token):
        assert not [o for o in outputs if secret in o], "a secret appeared in the output"
        assert secret not in received, "a secret was sent to Braze"
        leaked = [str(p) for p in written if secret.encode() in p.read_bytes() and p.suffix != ".sql"]
        assert not leaked, f"a secret was written to {leaked}"


def test_an_unexpected_error_holding_a_key_is_scrubbed_even_with_debug(capsys, monkeypatch):
    """An exception text (a library's, say) that holds a registered key: the one-line error and the
    --debug traceback (its chained causes too) are scrubbed."""
    from engine import cli

    key = fresh_key()
    register_secret(key)

    def boom(args: object) -> int:
        try:
            raise ValueError(f"inner {key}")
        except ValueError as exc:
            raise RuntimeError(f"connect to https://x/?api_key={key} failed") from exc

    monkeypatch.setattr(cli, "_validate", boom)
    for argv in (["validate"], ["--debug", "validate"]):
        assert cli.main(argv) == 1
        out, err = capsys.readouterr()
        assert key not in out + err and "***" in err, err
    assert "Traceback" in err and "inner ***" in err


def test_output_split_across_writes_is_scrubbed():
    from engine.errors import ScrubbedStream

    key = fresh_key()
    register_secret(key)

    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> int:
            self.text += text
            return len(text)

        def flush(self) -> None:
            pass

    sink = Sink()
    stream = ScrubbedStream(sink)          # type: ignore[arg-type]
    stream.write(f"a {key[:7]}")
    stream.write(f"{key[7:]} b\nc {key}")
    stream.flush()
    assert sink.text == "a *** b\nc ***"


def test_a_dbt_profile_password_is_a_secret(tmp_path, monkeypatch):
    """The password of a dbt profile's target (here from an env var) is registered as the project loads,
    and a Reflow model cannot read its env var."""
    password = fresh_key()
    monkeypatch.setenv("SHOP_PG_PASSWORD", password)
    monkeypatch.setenv("BRAZE_API_KEY", fresh_key())
    monkeypatch.delenv("DBT_PROFILES_DIR", raising=False)
    root = tmp_path / "shop"
    shutil.copytree(Path(__file__).resolve().parent.parent / "fixtures" / "dbt_shop", root)
    plant(root / "dbt_project.yml", "model-paths: [models]", "model-paths: [models/marts, models/staging]")
    project = load_project(root)
    assert scrub(f"x {password} y") == "x *** y"
    assert project.secret_env_vars["SHOP_PG_PASSWORD"] == "profiles.yml: dbt_shop.outputs.pg.password"
    (root / "models" / "leak.sql").write_text("select '{{ env_var(\"SHOP_PG_PASSWORD\") }}' as customer_id")
    with pytest.raises(RenderError) as caught:
        render_model(project, "leak")
    assert caught.value.message == ("models/leak.sql:1: env_var('SHOP_PG_PASSWORD') feeds a secret "
                                    "(profiles.yml: dbt_shop.outputs.pg.password) and cannot be read by a model")


def test_a_baseline_first_run_records_no_row_holding_a_secret(example_project):
    """first_run: baseline records rows in SQL without payloads: a row holding a secret is refused there too."""
    key = fresh_key()
    plant(example_project / "models" / "braze_users.sql", "    c.first_name,",
          f"    case when c.customer_id = 'c_00002' then 'x{key}x' else c.first_name end as first_name,")
    plant(example_project / "syncs" / "braze_users.yml", "first_run: send_all", "first_run: baseline")
    env = {**os.environ, "BRAZE_REST_ENDPOINT": "http://127.0.0.1:9", "BRAZE_API_KEY": key}
    code, out, err = reflow(example_project, env, "plan", "--select", "braze_users", "--json")
    assert code == 0, err
    [users] = json.loads(out)["syncs"]
    assert users["invalid"] == 1 and users["invalid_samples"][0]["key"] == "c_00002", users
    assert users["invalid_samples"][0]["reason"].startswith("first_name: holds a secret value")
    state = example_project / ".reflow" / "state.duckdb"
    assert key not in out + err and key.encode() not in state.read_bytes()


@pytest.mark.parametrize("where, path, old, new", [
    ("column 4 of 17: its name", "models/braze_users.sql", "    c.first_name,", "    c.first_name, 1 as \"{key}\","),
    ("its type", "models/braze_users.sql", "    c.first_name,", "    'a'::ENUM('a', '{key}') as first_name,"),
    ("its type", "models/braze_users.sql", "    c.first_name,", "    c.first_name, {{'{key}': 1}} as extra,"),
    ("a destination field's name", "syncs/braze_users.yml", "    loyalty_tier: loyalty_tier", "    {key}: loyalty_tier"),
], ids=["column name", "enum label", "struct field name", "destination field name"])
def test_a_secret_in_a_column_name_or_type_is_refused_and_written_nowhere(example_project, where, path, old, new):
    """Column names and types (enum labels, struct field names) and destination field names are recorded
    in the plan and the state (to see a mapping change): one holding the key refuses the sync, naming the
    column by its position, and the key reaches no output and no file."""
    key = fresh_key()
    plant(example_project / path, old, new.format(key=key))
    env = {**os.environ, "BRAZE_REST_ENDPOINT": "http://127.0.0.1:9", "BRAZE_API_KEY": key}
    outputs = []
    for args in (("plan", "--select", "braze_users"), ("plan", "--select", "braze_users", "--json"),
                 ("run", "--select", "braze_users")):
        code, out, err = reflow(example_project, env, *args)
        outputs += [out, err]
        assert code != 0 and "holds a secret value" in out + err and where in out + err, (args, out, err)
        assert "braze_users" in out + err
    assert not [o for o in outputs if key in o]
    written = [p for p in example_project.rglob("*") if p.is_file() and p.suffix not in (".sql", ".yml")]
    assert not [str(p) for p in written if key.encode() in p.read_bytes()]


@pytest.mark.parametrize("new", ["    c.first_name, 'a'::ENUM('a', '{sql}') as extra,",
                                 "    c.first_name, {{'{raw}': 1}} as extra,"],
                         ids=["enum label with a quote", "struct field name with a double quote"])
def test_a_secret_holding_quotes_is_found_in_a_type_too(example_project, new):
    """DuckDB spells a type's enum labels and field names with their quotes doubled (found by a sceptical
    review: a REFLOW_SECRET_ value holding a quote passed the check, and the state file kept it)."""
    secret = f"pw'\"{uuid.uuid4().hex}"
    plant(example_project / "models" / "braze_users.sql", "    c.first_name,",
          new.format(sql=secret.replace("'", "''"), raw=secret.replace("'", "''")))
    plant(example_project / "syncs" / "braze_users.yml", "    first_name: first_name",
          "    first_name: first_name\n    extra: extra")
    env = {**os.environ, "BRAZE_REST_ENDPOINT": "http://127.0.0.1:9", "BRAZE_API_KEY": fresh_key(),
           "REFLOW_SECRET_PW": secret}
    code, out, err = reflow(example_project, env, "plan", "--select", "braze_users", "--json")
    assert code != 0 and "its type" in out + err and "holds a secret value" in out + err, (out, err)
    forms = {secret, secret.replace("'", "''"), secret.replace('"', '""')}
    assert not [f for f in forms if f in out + err]
    written = [p for p in example_project.rglob("*") if p.is_file() and p.suffix not in (".sql", ".yml")]
    assert not [(str(p), f) for p in written for f in forms if f.encode() in p.read_bytes()]
