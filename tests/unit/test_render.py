"""Model rendering: ref/source/var/env_var/config, located errors, cycles, the sandbox."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from engine.errors import RenderError, WarehouseError
from engine.models import RenderedModel, find_model, list_models, render_model
from engine.project import Project, WarehouseConfig


def project(root: Path, models: dict[str, str], vars: dict[str, object] | None = None) -> Project:
    for name, sql in models.items():
        path = root / "models" / f"{name}.sql"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
    return Project(
        root=root, name="t", warehouse=WarehouseConfig(), state_path=root / ".reflow" / "state.duckdb",
        vars=vars or {},
    )


def render_error(p: Project, name: str) -> str:
    with pytest.raises(RenderError) as info:
        render_model(p, name)
    return info.value.message


def test_plain_sql_and_trailing_semicolons(tmp_path: Path) -> None:
    p = project(tmp_path, {"a": "select 1 as x;\n\n"})
    m = render_model(p, "a")
    assert m == RenderedModel(name="a", path=tmp_path / "models" / "a.sql", sql="select 1 as x", refs=(), sources=(),
                             file="models/a.sql")


def test_ref_to_model_is_inlined_recursively_and_runs(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "base": "select * from (values (1, 'a'), (2, 'b')) as t(id, name);",
        "mid": "select id, upper(name) as name from {{ ref('base') }} as b",
        "marts/top": "select * from {{ ref('mid') }} as m where id > 1",
    })
    m = render_model(p, "top")
    assert m.sql == (
        "select * from (\n"
        "select id, upper(name) as name from (\n"
        "select * from (values (1, 'a'), (2, 'b')) as t(id, name)\n"
        ") as b\n"
        ") as m where id > 1"
    )
    assert m.refs == ("mid", "base")
    assert duckdb.connect().execute(m.sql).fetchall() == [(2, "B")]


def test_ref_to_table_and_source_default_quoting(tmp_path: Path) -> None:
    p = project(tmp_path, {"a": "select * from {{ ref('raw_customers') }} join {{ source('shop', 'or\"ders') }}"})
    m = render_model(p, "a")
    assert m.sql == 'select * from "main"."raw_customers" join "shop"."or""ders"'
    assert m.refs == ("raw_customers",)
    assert m.sources == (("shop", 'or"ders'),)


def test_ref_and_source_callbacks(tmp_path: Path) -> None:
    p = project(tmp_path, {"a": "select * from {{ ref('customers') }}, {{ source('s', 't') }}, {{ ref('pkg', 'x') }}"})
    m = render_model(p, "a", relation_for=lambda n: f"analytics.{n}", source_for=lambda s, t: f"raw_{s}.{t}")
    assert m.sql == "select * from analytics.customers, raw_s.t, analytics.x"


def test_callback_errors_pass_through(tmp_path: Path) -> None:
    p = project(tmp_path, {"a": "select * from {{ ref('customers') }}"})

    def missing(name: str) -> str:
        raise WarehouseError(f"no relation {name}")

    with pytest.raises(WarehouseError, match="no relation customers"):
        render_model(p, "a", relation_for=missing)


def test_var_with_and_without_default(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "a": "select {{ var('min_orders') }} as m, '{{ var('region', 'us') }}' as r",
        "b": "select 1\nwhere x > {{ var('nope') }}",
    }, vars={"min_orders": 3})
    assert render_model(p, "a").sql == "select 3 as m, 'us' as r"
    assert render_error(p, "b") == (
        "models/b.sql:2: var 'nope' is not defined in the project's vars and var() has no default"
    )


def test_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLOW_TEST_SCHEMA", "crm")
    monkeypatch.delenv("REFLOW_TEST_MISSING", raising=False)
    p = project(tmp_path, {
        "a": "select * from {{ env_var('REFLOW_TEST_SCHEMA') }}.t, {{ env_var('REFLOW_TEST_MISSING', 'dflt') }}.u",
        "b": "\n\nselect '{{ env_var('REFLOW_TEST_MISSING') }}'",
    })
    assert render_model(p, "a").sql == "select * from crm.t, dflt.u"
    assert render_error(p, "b") == (
        "models/b.sql:3: environment variable 'REFLOW_TEST_MISSING' is not set and env_var() has no default"
    )


def test_config_is_captured_and_renders_empty(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "a": "{{ config(materialized='ephemeral', tags=['x']) }}"
             "select '{{ config.get('materialized') }}' as m{% if is_incremental() %} where 0{% endif %}",
    })
    m = render_model(p, "a")
    assert m.sql == "select 'ephemeral' as m"
    assert m.config == {"materialized": "ephemeral", "tags": ["x"]}


def test_target_namespace_and_extensions(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "a": "{% set cols = [] %}{% for c in ['a', 'b', 'c'] %}{% if c == 'c' %}{% break %}{% endif %}"
             "{% do cols.append(c) %}{% endfor %}select '{{ target.name }}/{{ target.type }}' as t, "
             "'{{ cols | join(',') }}' as c",
    })
    assert render_model(p, "a").sql == "select 'reflow/duckdb' as t, 'a,b' as c"


def test_undefined_name_is_located(tmp_path: Path) -> None:
    p = project(tmp_path, {"braze_users": "select\n  1 as a,\n  {{ undefined_thing }} as b\n"})
    assert render_error(p, "braze_users") == "models/braze_users.sql:3: 'undefined_thing' is undefined"


def test_error_in_a_referenced_model_names_that_model(tmp_path: Path) -> None:
    p = project(tmp_path, {"outer": "select * from {{ ref('inner') }}", "sub/inner": "select\n{{ oops }}"})
    assert render_error(p, "outer") == "models/sub/inner.sql:2: 'oops' is undefined"


def test_syntax_error_is_located(tmp_path: Path) -> None:
    p = project(tmp_path, {"a": "select 1\n{% if %}\n"})
    assert render_error(p, "a").startswith("models/a.sql:2: template syntax error: ")


def test_ref_cycle(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "a": "select * from {{ ref('b') }}",
        "b": "select * from {{ ref('c') }}",
        "c": "select * from {{ ref('a') }}",
        "self": "select * from {{ ref('self') }}",
    })
    assert render_error(p, "a") == "models/a.sql: ref() cycle: a -> b -> c -> a"
    assert render_error(p, "self") == "models/self.sql: ref() cycle: self -> self"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ref.__globals__ }}",
        "{{ config.__init__.__globals__ }}",
        "{{ 'x' * 100000000 }}",
        "{{ 10 ** 100000 }}",
    ],
)
def test_sandbox_escape_is_refused(tmp_path: Path, template: str) -> None:
    p = project(tmp_path, {"x": template})
    assert render_error(p, "x").startswith("models/x.sql:1: unsafe template access refused: ")


def test_runtime_error_in_template(tmp_path: Path) -> None:
    p = project(tmp_path, {"a": "select {{ 1 // 0 }}"})
    assert render_error(p, "a") == "models/a.sql:1: ZeroDivisionError: integer division or modulo by zero"


def test_bad_arguments_to_functions(tmp_path: Path) -> None:
    p = project(tmp_path, {"a": "select * from {{ ref() }}", "b": "select * from {{ source('only_one') }}"})
    assert render_error(p, "a") == "models/a.sql:1: ref() takes a model or table name, e.g. ref('customers')"
    assert render_error(p, "b") == (
        "models/b.sql:1: source() takes a source and a table name, e.g. source('shop', 'orders')"
    )


def test_empty_model_and_unknown_model(tmp_path: Path) -> None:
    p = project(tmp_path, {"empty": "{# nothing #}\n;\n"})
    assert render_error(p, "empty") == "models/empty.sql: the model renders to empty SQL"
    assert render_error(p, "nope") == "no model 'nope' in models/ (expected models/nope.sql)"


def test_find_and_list_models(tmp_path: Path) -> None:
    p = project(tmp_path, {"a": "select 1", "x/y/b": "select 2", ".hidden/c": "select 3"})
    (tmp_path / "models" / "notes.md").write_text("not a model")
    assert list_models(p) == {"a": tmp_path / "models" / "a.sql", "b": tmp_path / "models" / "x" / "y" / "b.sql"}
    assert find_model(p, "b") == tmp_path / "models" / "x" / "y" / "b.sql"
    assert find_model(p, "c") is None
    assert find_model(p, "missing") is None


def test_duplicate_model_names(tmp_path: Path) -> None:
    p = project(tmp_path, {"a/m": "select 1", "b/m": "select 2", "ok": "select 3"})
    with pytest.raises(RenderError, match="two models are named 'm': models/a/m.sql and models/b/m.sql"):
        list_models(p)
    assert find_model(p, "ok") == tmp_path / "models" / "ok.sql"
    with pytest.raises(RenderError):
        find_model(p, "m")


def test_no_models_folder(tmp_path: Path) -> None:
    p = project(tmp_path, {})
    assert list_models(p) == {}


def test_non_utf8_model(tmp_path: Path) -> None:
    p = project(tmp_path, {})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bin.sql").write_bytes(b"select '\xff'")
    assert render_error(p, "bin") == "models/bin.sql: not valid UTF-8 text"
