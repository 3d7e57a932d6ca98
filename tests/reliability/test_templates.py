"""Templates cannot hang a command: a render stops after REFLOW_RENDER_TIMEOUT seconds (default 10)
and past 50 MB of output, with a located error, and a normal template renders exactly as Jinja
renders it. The deadline is checked inside the sandbox (calls, attribute and item lookups, filters,
loop iterations, buffer joins), so it holds off the main thread as well."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from engine.errors import ProjectError, RenderError
from engine.models import render_model
from engine.project import load_project
from engine.templates import DEFAULT_RENDER_TIMEOUT, TemplateProblem, render_text

MINIMAL = Path(__file__).resolve().parent.parent / "fixtures" / "projects" / "minimal"
BUDGET = 1.0                      # seconds, via REFLOW_RENDER_TIMEOUT
SLACK = 4.0                       # what a refusal may take beyond the budget (loaded CI machines)

NESTED_LOOPS = """select 1 as customer_id, 'a@example.com' as email, 'x' as first_name, 1.0 as lifetime_value
{% for i in range(100000) %}
  {% for j in range(100000) %}{% endfor %}
{% endfor %}
"""
TIMEOUT = ("models/braze_users.sql: rendering took longer than 1 s (stopped at line {line}); look for a loop or "
           "macro that runs too long, or set REFLOW_RENDER_TIMEOUT to allow more seconds")
TOO_BIG = "models/braze_users.sql: the rendered SQL is larger than 50 MB; look for a loop that writes too much"


def project_with(root: Path, model: str) -> Path:
    shutil.copytree(MINIMAL, root)
    (root / "models" / "braze_users.sql").write_text(model)
    return root


@pytest.fixture
def budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLOW_RENDER_TIMEOUT", str(BUDGET))


def refused_in_time(project: Path, name: str = "braze_users") -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(RenderError) as caught:
        render_model(load_project(project), name)
    return caught.value.message, time.monotonic() - start


def test_nested_loops_are_refused_by_validate_compile_and_plan_within_the_budget(tmp_path):
    """The issue's case: two nested range(100000) loops hung `validate` and `plan`."""
    project = project_with(tmp_path / "p", NESTED_LOOPS)
    env = {**os.environ, "REFLOW_RENDER_TIMEOUT": str(BUDGET), "BRAZE_API_KEY": "unused-key-0000"}
    for command in (("validate",), ("compile", "braze_users"), ("plan",)):
        start = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "engine", "--project-dir", str(project), *command],
                                  capture_output=True, text=True, env=env, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`reflow {' '.join(command)}` still rendering after 60 s")
        elapsed = time.monotonic() - start
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        # stopped in the inner loop (line 3), or, when the deadline passed while the process waited for a
        # core (a loaded machine), at the outer loop's next iteration (line 2): both name the loops
        assert any(TIMEOUT.format(line=line) in proc.stderr for line in (2, 3)), (command, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert elapsed < BUDGET + SLACK + 3, (command, elapsed)     # + interpreter start-up


@pytest.mark.parametrize(("model", "line"), [
    (NESTED_LOOPS, 3),
    ("{% macro twice(n) %}{% if n %}{{ twice(n - 1) }}{{ twice(n - 1) }}{% endif %}{% endmacro %}"
     "select 1 as customer_id\n{{ twice(40) }}", 1),                              # 2**40 macro calls
    ("select 1 as customer_id\n{% for x in [0] recursive %}{% if loop.depth < 3 %}{{ loop(range(100000)) }}"
     "{% endif %}{% endfor %}", 2),
    ("select 1 as customer_id\n{% for i in range(100000) if i is odd %}"
     "{% for j in range(100000) if j > i %}{% endfor %}{% endfor %}", 2),
    ("{% set big = ['x' * 10000000] * 10000 %}select 1 as customer_id\n"
     "-- {{ big | map('upper') | map('length') | sum }}", 2),                      # filters, no loop
    ("{% set n = namespace(i=0) %}select 1 as customer_id\n"
     "{% for i in range(100000) %}{% for j in 'x' * 100000 %}{% set n.i = n.i + 1 %}{% endfor %}{% endfor %}", 2),
])
def test_long_renders_stop_at_the_budget_with_a_located_error(tmp_path, budget, model, line):
    message, elapsed = refused_in_time(project_with(tmp_path / "p", model))
    assert message == TIMEOUT.format(line=line)
    assert elapsed < BUDGET + SLACK


def test_the_budget_holds_off_the_main_thread(tmp_path, budget):
    project = load_project(project_with(tmp_path / "p", NESTED_LOOPS))
    outcome: list[BaseException] = []

    def render() -> None:
        try:
            render_model(project, "braze_users")
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    worker = threading.Thread(target=render, daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(timeout=BUDGET + SLACK)
    assert not worker.is_alive(), "rendering in a thread did not stop at the budget"
    assert time.monotonic() - start < BUDGET + SLACK
    assert [type(e) for e in outcome] == [RenderError] and str(outcome[0]) == TIMEOUT.format(line=3)


def test_the_budget_covers_a_model_and_everything_it_refs(tmp_path, budget):
    root = project_with(tmp_path / "p", "select * from {{ ref('slow') }}")
    (root / "models" / "slow.sql").write_text(NESTED_LOOPS)
    message, elapsed = refused_in_time(root)
    assert message == TIMEOUT.format(line=3).replace("braze_users", "slow")
    assert elapsed < BUDGET + SLACK


@pytest.mark.parametrize(("model", "message"), [
    ("select 1 as customer_id\n{% for i in range(100000) %}-- {{ 'x' * 1000 }}\n{% endfor %}", TOO_BIG),  # output
    ("{% set s %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}"            # a set block
     "select 1 as customer_id -- {{ s | length }}", TOO_BIG.replace("50 MB", "50 MB (stopped at line 1)")),
    ("select 1 as customer_id\n{% macro m() %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"
     "{% endmacro %}-- {{ m() | length }}", TOO_BIG.replace("50 MB", "50 MB (stopped at line 2)")),  # a macro
])
def test_a_huge_output_is_refused_by_size(tmp_path, model, message):
    got, elapsed = refused_in_time(project_with(tmp_path / "p", model))
    assert got == message
    assert elapsed < DEFAULT_RENDER_TIMEOUT


def test_a_settings_template_has_the_budget_too(tmp_path, budget):
    root = project_with(tmp_path / "p", "select 1 as customer_id")
    file = root / "reflow_project.yml"
    file.write_text(file.read_text().replace(
        "min_orders: 1",
        'min_orders: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}1"'))
    start = time.monotonic()
    with pytest.raises(ProjectError) as caught:
        load_project(root)
    assert time.monotonic() - start < BUDGET + SLACK
    assert caught.value.message == (
        "reflow_project.yml:4:15: vars.min_orders: rendering took longer than 1 s; look for a loop or macro that "
        "runs too long, or set REFLOW_RENDER_TIMEOUT to allow more seconds\n1 problem in reflow_project.yml")


def test_lipsum_is_bounded():
    with pytest.raises(TemplateProblem, match="lipsum\\(\\) generates at most 100 paragraphs"):
        render_text("{{ lipsum(100000000) }}", {})
    assert render_text("{{ lipsum(2, html=false) | wordcount > 0 }}", {}) == "True"


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf"])
def test_a_bad_timeout_setting_is_refused(tmp_path, monkeypatch, value):
    monkeypatch.setenv("REFLOW_RENDER_TIMEOUT", value)
    with pytest.raises(RenderError) as caught:
        render_model(load_project(project_with(tmp_path / "p", "select 1 as customer_id")), "braze_users")
    assert caught.value.message == f"REFLOW_RENDER_TIMEOUT must be a number of seconds greater than 0, not {value!r}"


# ------------------------------------------------------------------------------ normal templates, unchanged


def test_the_minimal_model_renders_as_before(tmp_path):
    project = load_project(project_with(tmp_path / "p", (MINIMAL / "models" / "braze_users.sql").read_text()))
    sql = render_model(project, "braze_users").sql
    customers = (MINIMAL / "models" / "customers.sql").read_text().strip()
    assert sql == ("select\n    cast(customer_id as varchar) as customer_id,\n    email,\n    first_name,\n"
                   f"    ltv as lifetime_value\nfrom (\n{customers}\n)\nwhere orders >= 1")


SAME_AS_JINJA = [
    "{% for x in items %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}",
    "{% for x in items if x is odd %}{{ x }}{% else %}none{% endfor %}",
    "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}",
    "{% for k, v in pairs | dictsort %}{{ k }}={{ v }};{% endfor %}",
    "{% for x in range(3000) %}{% if loop.first or loop.last %}{{ x }}:{{ loop.revindex }}:{{ loop.cycle('a', 'b') }}"
    "{% endif %}{% endfor %}",
    "{% for x in range(2000) | select('odd') %}{% if loop.index > 998 %}{{ x }},{{ loop.length }}{% endif %}{% endfor %}",
    "{% for node in tree recursive %}{{ node.name }}({{ loop(node.children) }}){% endfor %}",
    "{% for x in 'ab' * 600 %}{% if loop.changed(x) and loop.index < 4 %}{{ x }}{% endif %}{% endfor %}",
    "{% for x in items %}{% if x > 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% macro row(c) %}{{ c | upper }}{{ caller() if caller }}{% endmacro %}{% call row('a') %}!{% endcall %}",
    "{% set ns = namespace(total=0) %}{% for x in items %}{% set ns.total = ns.total + x %}{% endfor %}{{ ns.total }}",
    "{{ items | map('string') | join(', ') }} {{ items | sum }} {{ items | batch(2) | list }}",
    "{% set block %}{% for x in items %}{{ x }}{% endfor %}{% endset %}[{{ block }}] {{ 'a' ~ 'b' }} {{ 2 ** 10 }}",
    "{{ {'b': 1, 'a': 2} | dictsort | first }} {{ items | reverse | list }} {{ 'x,y'.split(',') }}",
]


@pytest.mark.parametrize("template", SAME_AS_JINJA)
def test_a_normal_template_renders_exactly_as_jinja_renders_it(template):
    context = {"items": [1, 2, 3, 4], "pairs": {"b": 2, "a": 1},
               "tree": [{"name": "a", "children": [{"name": "b", "children": []}]}]}
    plain = SandboxedEnvironment(undefined=StrictUndefined, extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
                                 autoescape=False, keep_trailing_newline=True)
    assert render_text(template, context) == plain.from_string(template).render(context)
