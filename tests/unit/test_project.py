"""The project file: finding it, rendering env vars, keeping API keys out of sight."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.errors import ProjectError, scrub
from engine.project import ConnectionConfig, find_project, load_project, resolve_api_key
from engine.yamlfile import schema_path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MINIMAL = FIXTURES / "projects" / "minimal"

FULL = """\
name: example
warehouse: {type: duckdb, path: data/warehouse.duckdb}
state_path: .reflow/state.duckdb
memory_limit: 512MB
vars: {min_orders: 1, schema: "{{ env_var('REFLOW_T_SCHEMA', 'main') }}"}
owner: {name: Data Team, email: data@example.com}
connections:
  braze:
    type: braze
    endpoint: "{{ env_var('REFLOW_T_ENDPOINT', 'https://rest.iad-01.braze.com') }}/"
    api_key: "{{ env_var('REFLOW_T_KEY') }}"
    rate_limit: {requests: 3000, seconds: 3}
    concurrency: 32
    timeout: 10
    max_retries: 3
    legacy_limits: true
  eu:
    type: braze
    instance: fra-02
    rate_limit: 500
    concurrency: "{{ env_var('REFLOW_T_CONCURRENCY', '8') }}"
    allow_http: "{{ var('min_orders') == 1 }}"
"""


def write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "reflow_project.yml").write_text(textwrap.dedent(text))
    return root


def project_error(root: Path) -> str:
    with pytest.raises(ProjectError) as info:
        load_project(root)
    return info.value.message


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REFLOW_T_SCHEMA", "REFLOW_T_ENDPOINT", "REFLOW_T_KEY", "REFLOW_T_CONCURRENCY", "REFLOW_T_NAME"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- finding


def test_found_from_a_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, FULL)
    deep = tmp_path / "models" / "marts"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_project() == tmp_path.resolve()


def test_not_found_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProjectError) as info:
        find_project()
    assert info.value.message == (
        f"no reflow_project.yml found in {tmp_path.resolve()} or any parent; "
        "run `reflow init` or pass --project-dir"
    )


def test_project_dir_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "p", FULL)
    monkeypatch.chdir(tmp_path)
    assert find_project("p") == (tmp_path / "p").resolve()
    assert find_project(tmp_path / "p" / "reflow_project.yml") == (tmp_path / "p").resolve()
    with pytest.raises(ProjectError, match=r"^no reflow_project.yml in elsewhere; run `reflow init elsewhere`"):
        find_project("elsewhere")


# ---------------------------------------------------------------- loading


def test_full_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLOW_T_SCHEMA", "crm")
    p = load_project(write(tmp_path, FULL))
    assert p.root == tmp_path.resolve()
    assert p.name == "example"
    assert p.warehouse.type == "duckdb" and p.warehouse.path == "data/warehouse.duckdb"
    assert p.state_path == tmp_path.resolve() / ".reflow" / "state.duckdb"
    assert p.memory_limit == "512MB"
    assert p.vars == {"min_orders": 1, "schema": "crm"}
    assert p.owner == {"name": "Data Team", "email": "data@example.com"}
    braze = p.connections["braze"]
    assert braze.endpoint == "https://rest.iad-01.braze.com"
    assert braze.api_key_template == "{{ env_var('REFLOW_T_KEY') }}"
    assert braze.rate_limit == 1000.0
    assert braze.extra == {"rate_limit_requests": 3000, "rate_limit_seconds": 3.0}
    assert (braze.concurrency, braze.timeout, braze.max_retries, braze.legacy_limits) == (32, 10.0, 3, True)
    eu = p.connections["eu"]
    assert (eu.instance, eu.endpoint) == (None, "https://rest.fra-02.braze.eu")  # resolved once, at load
    assert eu.rate_limit == 500.0
    assert eu.concurrency == 8  # a template renders to text; read as the integer the schema wants
    assert eu.allow_http is True
    assert eu.api_key_template is None
    assert p.warnings == ()


def test_defaults(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """\
        name: small
        connections:
          braze: {type: braze, instance: us-10}
    """))
    assert p.warehouse.type == "duckdb" and p.warehouse.path == "warehouse.duckdb"
    assert p.state_path == tmp_path.resolve() / ".reflow" / "state.duckdb"
    assert p.memory_limit == "1GB"
    assert p.vars == {} and p.owner == {}
    c = p.connections["braze"]
    assert c.endpoint == "https://rest.us-10.braze.com"
    assert (c.rate_limit, c.concurrency, c.timeout, c.max_retries, c.legacy_limits, c.allow_http) == (
        None, None, 30.0, 5, False, False
    )


def test_dbt_warehouse(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """\
        name: dbtproj
        warehouse: {type: dbt, project_dir: ., profiles_dir: ~/.dbt, target: dev}
        state_path: /tmp/elsewhere/state.duckdb
        connections:
          braze: {type: braze, endpoint: "http://127.0.0.1:8123"}
    """))
    assert (p.warehouse.type, p.warehouse.project_dir, p.warehouse.profiles_dir, p.warehouse.target) == (
        "dbt", ".", "~/.dbt", "dev"
    )
    assert p.state_path == Path("/tmp/elsewhere/state.duckdb")
    assert p.connections["braze"].endpoint == "http://127.0.0.1:8123"


def test_env_var_renders_in_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLOW_T_ENDPOINT", "https://rest.iad-05.braze.com")
    monkeypatch.setenv("REFLOW_T_NAME", "from_env")
    p = load_project(write(tmp_path, FULL.replace("name: example", "name: \"{{ env_var('REFLOW_T_NAME') }}\"")))
    assert p.name == "from_env"
    assert p.connections["braze"].endpoint == "https://rest.iad-05.braze.com"


def test_every_problem_in_the_project_file_at_once(tmp_path: Path) -> None:
    text = project_error(write(tmp_path, """\
        name: bad
        warehouse: {type: duckdb, path: w.duckdb, target: dev}
        memory_limit: lots
        colour: blue
        connections:
          braze:
            type: braze
            endpoint: "{{ env_var('REFLOW_T_ENDPOINT') }}"
            instance: iad-01
            concurrency: many
          other:
            type: braz
            instance: "{{ var('nope') }}"
    """))
    assert text.splitlines() == [
        "reflow_project.yml:2:43: warehouse.target: not allowed for type 'duckdb'",
        "reflow_project.yml:3:15: memory_limit: 'lots' is not valid: expected a size like 1GB or 512MB",
        "reflow_project.yml:4:1: colour: unknown key; expected one of: name, warehouse, state_path, remote_state, memory_limit, vars, "
        "owner, connections",
        "reflow_project.yml:6:3: connections.braze: give exactly one of endpoint, instance",
        "reflow_project.yml:8:15: connections.braze.endpoint: environment variable 'REFLOW_T_ENDPOINT' is not set "
        "and env_var() has no default",
        "reflow_project.yml:10:18: connections.braze.concurrency: expected integer, got string 'many'",
        "reflow_project.yml:12:11: connections.other.type: 'braz' is not one of 'braze' (did you mean 'braze'?)",
        "reflow_project.yml:13:15: connections.other.instance: var 'nope' is not defined in the project's vars "
        "and var() has no default",
        "8 problems in reflow_project.yml",
    ]


def test_missing_required_keys_and_empty_file(tmp_path: Path) -> None:
    assert project_error(write(tmp_path / "a", "owner: {name: x}\n")).splitlines() == [
        "reflow_project.yml:1:1: missing required key 'connections'",
        "reflow_project.yml:1:1: missing required key 'name'",
        "2 problems in reflow_project.yml",
    ]
    assert project_error(write(tmp_path / "b", "\n")) == "reflow_project.yml:1:1: empty project file\n1 problem in reflow_project.yml"
    assert project_error(write(tmp_path / "c", "name: [\n")).startswith("reflow_project.yml:2:1: YAML syntax error: ")


def test_plain_http_needs_allow_http(tmp_path: Path) -> None:
    text = project_error(write(tmp_path, """\
        name: x
        connections:
          braze: {type: braze, endpoint: "http://braze.example.com"}
    """))
    assert text.splitlines()[0] == (
        "reflow_project.yml:3:34: connections.braze.endpoint: plain http:// would send the API key unencrypted; "
        "use https:// (or allow_http: true for testing)"
    )
    p = load_project(write(tmp_path, """\
        name: x
        connections:
          braze: {type: braze, endpoint: "http://braze.example.com", allow_http: true}
    """))
    assert p.connections["braze"].allow_http is True


def test_no_project_file(tmp_path: Path) -> None:
    assert project_error(tmp_path).startswith(f"no reflow_project.yml in {tmp_path.resolve()}")


# ---------------------------------------------------------------- API keys


def test_api_key_stays_a_template_until_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = load_project(write(tmp_path, FULL))  # no REFLOW_T_KEY set: loading still works
    braze = p.connections["braze"]
    assert braze.api_key_template == "{{ env_var('REFLOW_T_KEY') }}"
    assert "REFLOW_T_KEY" not in repr(braze)
    monkeypatch.setenv("REFLOW_T_KEY", "sk-live-0123456789")
    assert resolve_api_key(braze, required=True) == "sk-live-0123456789"
    assert p.api_key("braze") == "sk-live-0123456789"
    assert scrub("sent sk-live-0123456789 to braze") == "sent *** to braze"


def test_missing_api_key_env_var_names_the_variable_not_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLOW_T_ENDPOINT", "https://rest.iad-02.braze.com")
    p = load_project(write(tmp_path, FULL))
    with pytest.raises(ProjectError) as info:
        resolve_api_key(p.connections["braze"], required=True)
    message = info.value.message
    assert message == (
        "connection 'braze': environment variable REFLOW_T_KEY is not set (api_key in reflow_project.yml); "
        "export REFLOW_T_KEY=<your Braze REST API key>"
    )
    assert "iad-02" not in message
    assert resolve_api_key(p.connections["braze"], required=False) is None


def test_empty_env_var_and_no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLOW_T_KEY", "  ")
    c = ConnectionConfig(name="braze", api_key_template="{{ env_var('REFLOW_T_KEY') }}")
    with pytest.raises(ProjectError, match="renders to an empty string"):
        resolve_api_key(c, required=True)
    assert resolve_api_key(c, required=False) is None
    none = ConnectionConfig(name="braze")
    assert resolve_api_key(none, required=False) is None
    with pytest.raises(ProjectError, match=r"^connection 'braze' has no api_key; add api_key:"):
        resolve_api_key(none, required=True)


def test_inline_api_key_works_with_a_warning_and_is_scrubbed(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """\
        name: x
        connections:
          braze:
            type: braze
            instance: iad-01
            api_key: inline-secret-4242
    """))
    assert p.warnings == (
        "reflow_project.yml:6:14: connections.braze.api_key: the API key is written in the project file; "
        "use \"{{ env_var('BRAZE_API_KEY') }}\" to keep it out of version control",
    )
    assert resolve_api_key(p.connections["braze"], required=True) == "inline-secret-4242"
    assert ProjectError("oops inline-secret-4242").message == "oops ***"


def test_api_key_template_syntax_is_checked_at_load(tmp_path: Path) -> None:
    text = project_error(write(tmp_path, """\
        name: x
        connections:
          braze: {type: braze, instance: iad-01, api_key: "{{ env_var('K' }}"}
    """))
    assert text.splitlines()[0].startswith(
        "reflow_project.yml:3:51: connections.braze.api_key: template syntax error: "
    )


def test_project_template_cannot_escape_the_sandbox(tmp_path: Path) -> None:
    text = project_error(write(tmp_path, """\
        name: "{{ ''.__class__.__mro__ }}"
        connections:
          braze: {type: braze, instance: iad-01}
    """))
    assert text.splitlines()[0].startswith("reflow_project.yml:1:7: name: unsafe template access refused: ")


def test_minimal_fixture() -> None:
    p = load_project(MINIMAL)
    assert p.name == "minimal"
    assert p.vars == {"min_orders": 1}
    assert p.connections["braze"].api_key_template == "{{ env_var('BRAZE_API_KEY') }}"


# ---------------------------------------------------------------- reflow init


def test_init_scaffolds_a_working_project(tmp_path: Path) -> None:
    import duckdb

    from engine.models import render_model
    from engine.scaffold import init_project
    from engine.specs import check_columns, load_syncs

    target = tmp_path / "my project"
    created = init_project(target)
    assert sorted(p.relative_to(target).as_posix() for p in created) == [
        ".gitignore", "models/braze_users.sql", "reflow_project.yml", "schemas/project.schema.json",
        "schemas/sync.schema.json", "syncs/braze_users.yml", "warehouse.duckdb",
    ]
    p = load_project(target)
    assert p.name == "my_project"
    assert p.warnings == ()
    [spec] = load_syncs(p)
    assert spec.guards.max_removed == 100
    sql = render_model(p, spec.model).sql
    con = duckdb.connect()
    con.execute(f"ATTACH '{target / 'warehouse.duckdb'}' AS wh (READ_ONLY)")
    result = con.execute(sql)
    columns = [d[0] for d in result.description]
    assert result.fetchall() == [
        ("1", "ada@example.com", "Ada", pytest.approx(120.5)),
        ("2", "grace@example.com", "Grace", pytest.approx(80.0)),
    ]
    check_columns([spec], lambda s: columns)
    assert ".reflow/" in (target / ".gitignore").read_text()
    # the files point at the schemas by a path relative to the project: it holds on any machine
    first_line = (target / "syncs" / "braze_users.yml").read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../schemas/sync.schema.json"
    assert (target / "syncs" / "../schemas/sync.schema.json").read_text() == schema_path("sync.schema.json").read_text()
    project_text = (target / "reflow_project.yml").read_text()
    assert project_text.startswith("# yaml-language-server: $schema=schemas/project.schema.json\n")
    assert str(tmp_path) not in project_text and "/schemas/" not in project_text.replace("$schema=schemas/", "")


def test_init_schemas_refreshes_the_copies(tmp_path: Path) -> None:
    from engine.errors import UserError
    from engine.scaffold import init_project, write_schemas

    init_project(tmp_path, name="x")
    stale = tmp_path / "schemas" / "sync.schema.json"
    stale.write_text("{}")
    write_schemas(tmp_path)
    assert stale.read_text() == schema_path("sync.schema.json").read_text()
    with pytest.raises(UserError, match="run `reflow init` there first"):
        write_schemas(tmp_path / "nowhere")


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    from engine.errors import UserError
    from engine.scaffold import init_project

    (tmp_path / "syncs").mkdir()
    (tmp_path / "syncs" / "braze_users.yml").write_text("mine")
    with pytest.raises(UserError, match="refusing to overwrite existing files: .*braze_users.yml"):
        init_project(tmp_path, name="x")
    assert (tmp_path / "syncs" / "braze_users.yml").read_text() == "mine"
    assert not (tmp_path / PROJECT_FILE_NAME).exists()
    with pytest.raises(UserError, match="project name 'bad name' is not valid"):
        init_project(tmp_path / "other", name="bad name")


PROJECT_FILE_NAME = "reflow_project.yml"


def test_memory_limit_defaults_by_warehouse(tmp_path: Path) -> None:
    conn = "connections: {braze: {type: braze, endpoint: 'https://rest.iad-01.braze.com', api_key: x}}\n"
    (tmp_path / "reflow_project.yml").write_text("name: a\nwarehouse: {type: dbt}\n" + conn)
    assert load_project(tmp_path).memory_limit == "256MB"
    (tmp_path / "reflow_project.yml").write_text("name: a\n" + conn)
    assert load_project(tmp_path).memory_limit == "1GB"
    (tmp_path / "reflow_project.yml").write_text("name: a\nwarehouse: {type: dbt}\nmemory_limit: 2GB\n" + conn)
    assert load_project(tmp_path).memory_limit == "2GB"


@pytest.mark.parametrize("url", ["s3:/acme/prod/state.duckdb", "S3:/acme/state.duckdb", "gcs://acme/state.duckdb",
                                 "s3a://acme/state.duckdb", "https://acme.s3.amazonaws.com/state.duckdb",
                                 "az:/container/state.duckdb"])
def test_a_state_url_that_is_not_one_is_refused_not_taken_for_a_local_file(tmp_path: Path, url: str) -> None:
    """A mistyped object-store URL read as a relative path would give a CI runner an empty local state, and
    its first run would send every row again (events and purchases twice)."""
    message = project_error(write(tmp_path, f"""\
        name: small
        state_path: "{url}"
        connections:
          braze: {{type: braze, instance: us-10}}
    """))
    assert "state_path" in message and "s3://BUCKET/" in message, message


def test_a_relative_state_path_is_a_local_file(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """\
        name: small
        state_path: state/reflow.duckdb
        connections:
          braze: {type: braze, instance: us-10}
    """))
    assert p.state_url is None and p.state_path == tmp_path.resolve() / "state" / "reflow.duckdb"


@pytest.mark.parametrize("name", ["AWS_TOKEN", "AWS_SSE_CUSTOMER_KEY_BASE64", "AZURE_CLIENT_SECRET",
                                  "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_MASTER_KEY", "AZURE_STORAGE_SAS_TOKEN",
                                  "AZURE_STORAGE_TOKEN", "GOOGLE_BEARER_TOKEN"])
def test_every_credential_variable_the_object_store_library_reads_is_a_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """obstore reads these aliases too (AWS_TOKEN for the session token, AZURE_STORAGE_ACCESS_KEY for the account
    key, …): their values must be scrubbed like AWS_SECRET_ACCESS_KEY's."""
    value = f"store-credential-{name.lower()}-0123456789"
    monkeypatch.setenv(name, value)
    load_project(write(tmp_path, """\
        name: small
        state_path: s3://acme/prod/state.duckdb
        connections:
          braze: {type: braze, instance: us-10}
    """))
    assert value not in scrub(f"the store said {value}")
