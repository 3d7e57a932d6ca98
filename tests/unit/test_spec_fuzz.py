"""Property tests: whatever is thrown at the loaders, they only ever raise Reflow's user errors."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ProjectError, RenderError, SpecError, UserError
from engine.models import render_model
from engine.project import Project, load_project
from engine.specs import SyncSpec, load_syncs

MINIMAL = Path(__file__).resolve().parent.parent / "fixtures" / "projects" / "minimal"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID_SPEC: dict[str, Any] = {
    "name": "users",
    "tags": ["daily"],
    "model": "braze_users",
    "primary_key": ["customer_id"],
    "destination": {
        "connection": "braze",
        "object": "users",
        "mode": "upsert",
        "identifier": {"user_alias": {"alias_label": "crm", "alias_name": "customer_id"}},
        "fields": {"email": "email"},
        "on_removed": "delete",
        "nulls": "skip",
    },
    "guards": {"max_removed": 10, "max_changed_pct": 50},
    "first_run": "baseline",
}

VALID_PROJECT: dict[str, Any] = {
    "name": "fuzz",
    "warehouse": {"type": "duckdb", "path": "warehouse.duckdb"},
    "vars": {"min_orders": 1},
    "owner": {"name": "Data", "email": "d@example.com"},
    "connections": {
        "braze": {
            "type": "braze",
            "endpoint": "{{ env_var('REFLOW_FUZZ_ENDPOINT', 'https://rest.iad-01.braze.com') }}",
            "api_key": "{{ env_var('BRAZE_API_KEY') }}",
            "rate_limit": {"requests": 3000, "seconds": 3},
            "concurrency": 8,
        }
    },
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["users", "events", "upsert", "delete", "{{ env_var('X') }}", "{{ var('x') }}",
                     "{{ ''.__class__ }}", "{% if %}", "", "braze", "customer_id", "../x"]),
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=25,
)
fragments = st.lists(
    st.sampled_from([
        "a", "b:", " ", "\n", "  ", "- ", ": ", "[", "]", "{", "}", ",", "&x ", "*x", "!!python/object:os.system ",
        "!tag ", "<<: ", "? ", "'", '"', "#", "---\n", "...\n", "\t", "|", ">", "%YAML 1.1\n", "!!binary ", "\x00",
        "model: ", "destination:\n  ", "object: ", "identifier: ", "guards: ", "9", "-1", "1e999", "~", "\ufeff",
    ]),
    max_size=40,
).map("".join)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    doc: Any = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "rename", "insert"]))
        if not path:
            if action == "replace":
                doc = draw(json_like)
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(json_like)
        elif action == "delete":
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = parent.pop(last)
        elif action == "insert" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(json_like)
    return doc


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("fuzz") / "p"
    shutil.copytree(MINIMAL, root)
    (root / "syncs" / "braze_users.yml").unlink()
    return load_project(root)


def _load_syncs_with(project: Project, text: str) -> None:
    (project.root / "syncs" / "fuzz.yml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        specs = load_syncs(project)
    except (SpecError, UserError):
        return
    assert all(isinstance(s, SyncSpec) for s in specs)


def test_the_base_spec_is_valid(project: Project) -> None:
    (project.root / "syncs" / "fuzz.yml").write_text(_dump(VALID_SPEC))
    [spec] = load_syncs(project)
    assert spec.name == "users" and spec.destination.identifier is not None


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text_as_a_sync_file(project: Project, text: str) -> None:
    _load_syncs_with(project, text.encode("utf-8", "replace").decode("utf-8"))


@FUZZ
@given(text=fragments)
def test_yaml_token_soup_as_a_sync_file(project: Project, text: str) -> None:
    _load_syncs_with(project, text)


@FUZZ
@given(doc=json_like)
def test_random_documents_as_a_sync_file(project: Project, doc: Any) -> None:
    _load_syncs_with(project, _dump(doc))


@FUZZ
@given(doc=mutated(VALID_SPEC))
def test_mutated_specs(project: Project, doc: Any) -> None:
    _load_syncs_with(project, _dump(doc))


@pytest.fixture(scope="module")
def project_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzzproject")
    (root / "reflow_project.yml").write_text(_dump(VALID_PROJECT))
    load_project(root)
    return root


def _load_project_with(root: Path, text: str) -> None:
    (root / "reflow_project.yml").write_text(text, encoding="utf-8")
    try:
        project = load_project(root)
    except (ProjectError, UserError):
        return
    assert isinstance(project, Project)


@FUZZ
@given(doc=mutated(VALID_PROJECT))
def test_mutated_project_files(project_root: Path, doc: Any) -> None:
    _load_project_with(project_root, _dump(doc))


@FUZZ
@given(text=st.one_of(fragments, st.text(max_size=200)))
def test_random_text_as_a_project_file(project_root: Path, text: str) -> None:
    _load_project_with(project_root, text.encode("utf-8", "replace").decode("utf-8"))


template_bits = st.lists(
    st.sampled_from([
        "select ", "1", " from ", "{{ ", " }}", "{% ", " %}", "ref('braze_users')", "ref('t')", "source('a','b')",
        "var('min_orders')", "var('nope')", "env_var('NOPE_X')", "config(x=1)", "is_incremental()", "target.name",
        "''.__class__", "range(10**9)", "'a' * 10**9", "if", "endif", "for x in [1,2]", "endfor", "break", "(", ")",
        "|join", "do", "'", "\n", "#}", "{#", "1/0", "x.y", "[0]", "loop.index", "self", "cycler", "joiner",
        "namespace()", "lipsum()", "dict(a=1)",
    ]),
    max_size=25,
).map("".join)


@FUZZ
@given(template=template_bits)
def test_random_templates_only_raise_render_errors(project: Project, template: str) -> None:
    (project.root / "models" / "fuzz_model.sql").write_text(template)
    try:
        model = render_model(project, "fuzz_model")
    except RenderError as exc:
        assert exc.message.startswith(("models/fuzz_model.sql", "models/braze_users.sql"))
        return
    assert isinstance(model.sql, str) and model.sql
