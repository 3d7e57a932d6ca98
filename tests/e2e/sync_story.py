"""A user's story with a sync, told through the real CLI against the sandbox.

Between commands a test edits what a user edits (sync YAML, model SQL, warehouse rows, the
project file), then compares Braze, read back from the sandbox, with the model under the
CURRENT mapping: per external_id (users) or item id (catalogs), only the fields the sync maps
now, under the names Braze gives them. Nothing here asks Reflow what it thinks it sent.

    story = Story(project, cli, sandbox)
    story.edit_fields("braze_users", lambda f: f.update(ltv2="lifetime_value"))
    plan = story.plan()                       # reflow plan --json, parsed
    story.assert_users_in_step("braze_users")
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import requests
import yaml
from braze_checks import model_rows

from engine.sandbox.validate import STANDARD_FIELDS

MISSING = object()


# ------------------------------------------------------------------------------------ the sandbox


@dataclasses.dataclass(frozen=True)
class Sent:
    """One request the sandbox received (not /_sandbox/): method, path, parsed body, status answered."""

    method: str
    path: str
    body: Any
    status: int


class Recorder:
    """Records every Braze request a sandbox receives, in arrival order (wraps Sandbox.handle)."""

    def __init__(self, handle: Any) -> None:
        self.requests: list[Sent] = []
        self._lock = threading.Lock()
        original = handle.sandbox.handle

        def record(method: str, target: str, headers: Any, body: bytes | None, length: int,
                   base_url: str = "") -> Any:
            response = original(method, target, headers, body, length, base_url)
            path = target.partition("?")[0]
            if not path.startswith("/_sandbox"):
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = body
                with self._lock:
                    self.requests.append(Sent(method, path, parsed, response.status))
            return response

        handle.sandbox.handle = record

    def mark(self) -> int:
        with self._lock:
            return len(self.requests)

    def since(self, mark: int = 0) -> list[Sent]:
        with self._lock:
            return list(self.requests[mark:])

    def attributes(self, mark: int = 0) -> list[dict[str, Any]]:
        """Every /users/track attributes object received since `mark`."""
        return [obj for r in self.since(mark) if r.path == "/users/track" and isinstance(r.body, dict)
                for obj in r.body.get("attributes") or []]

    def to(self, path_prefix: str, mark: int = 0) -> list[Sent]:
        return [r for r in self.since(mark) if r.path.startswith(path_prefix)]


def set_sandbox_options(handle: Any, **changes: Any) -> None:
    """Change a running sandbox's options (faults included) from now on."""
    options = dataclasses.replace(handle.sandbox.options, **changes)
    handle.sandbox.options = options
    handle.sandbox.faults.options = options


def create_catalog(handle: Any, name: str) -> None:
    """Create a catalog with the example `products` fields, as a user would in the dashboard."""
    from engine.demo import PRODUCTS_CATALOG

    body = json.loads(json.dumps(PRODUCTS_CATALOG))
    body["catalogs"][0]["name"] = name
    r = requests.post(f"{handle.url}/catalogs", json=body, headers=handle.headers, timeout=10)
    assert r.status_code == 201, r.text


# ------------------------------------------------------------------------------------ values


def braze_form(value: Any) -> Any:
    """A model value as Braze holds it once Reflow sent it: timestamps as ISO-8601 UTC with
    milliseconds, dates as YYYY-MM-DD, decimals as numbers, nested values recursively."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: braze_form(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [braze_form(v) for v in value]
    return value


def same(braze: Any, model: Any) -> bool:
    """Equal as Braze and the model see it (floats to 1e-9; a missing Braze value equals null)."""
    if braze is MISSING:
        braze = None
    if isinstance(model, bool) or isinstance(braze, bool):
        return type(model) is type(braze) and model == braze
    if isinstance(model, int | float) and isinstance(braze, int | float):
        return math.isclose(float(model), float(braze), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(model, dict) and isinstance(braze, dict):
        return set(model) == set(braze) and all(same(braze[k], model[k]) for k in model)
    if isinstance(model, list) and isinstance(braze, list):
        return len(model) == len(braze) and all(same(b, m) for b, m in zip(braze, model, strict=True))
    return type(model) is type(braze) and model == braze


def profile_value(profile: dict[str, Any] | None, field: str) -> Any:
    """A profile's value of one attribute as Braze names it (standard fields at the top level)."""
    if profile is None:
        return MISSING
    if field in STANDARD_FIELDS:
        return profile.get(field, MISSING)
    return profile.get("custom_attributes", {}).get(field, MISSING)


def first(problems: list[str], n: int = 12) -> str:
    return f"{len(problems)} difference(s), e.g.:\n  " + "\n  ".join(problems[:n])


# ------------------------------------------------------------------------------------ the story


class Story:
    """The example project, its CLI and a sandbox: edit, run, compare."""

    def __init__(self, project: Path, cli: Any, sandbox: Any) -> None:
        self.project = project
        self.cli = cli
        self.sandbox = sandbox
        self.sent = Recorder(sandbox)           # every Braze request the sandbox receives from now on

    def use_sandbox(self, sandbox: Any) -> None:
        """Compare with (and record) another sandbox from now on."""
        self.sandbox = sandbox
        self.sent = Recorder(sandbox)

    # -- running ------------------------------------------------------------------------------
    def __call__(self, *args: str) -> tuple[int, str, str]:
        return self.cli(*args)

    def ok(self, *args: str) -> str:
        code, out, err = self.cli(*args)
        assert code == 0, f"reflow {' '.join(args)} exited {code}\n{out}\n{err}"
        return out

    def plan(self, *args: str) -> dict[str, Any]:
        code, out, err = self.cli("plan", "--json", *args)
        assert code == 0, f"reflow plan --json exited {code}\n{out}\n{err}"
        return json.loads(out)

    @staticmethod
    def sync_of(plan: dict[str, Any], name: str) -> dict[str, Any]:
        found = [s for s in plan["syncs"] if s["name"] == name]
        assert found, f"sync {name} not in the plan: {[s['name'] for s in plan['syncs']]}"
        return found[0]

    def plan_rows(self, *args: str) -> list[dict[str, Any]]:
        """`reflow show --format json --limit 0 ARGS`: every row of the latest plan, with its payload."""
        code, out, err = self.cli("show", "--format", "json", "--limit", "0", *args)
        assert code == 0, err
        return json.loads(out)

    # -- editing ------------------------------------------------------------------------------
    def spec_path(self, sync: str) -> Path:
        for path in sorted((self.project / "syncs").glob("*.yml")):
            data = yaml.safe_load(path.read_text())
            if isinstance(data, dict) and data.get("name", path.stem) == sync:
                return path
        raise AssertionError(f"no sync file declares {sync}")

    def spec(self, sync: str) -> dict[str, Any]:
        return yaml.safe_load(self.spec_path(sync).read_text())

    def edit_spec(self, sync: str, change: Callable[[dict[str, Any]], None]) -> None:
        path = self.spec_path(sync)
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    def set_destination(self, sync: str, **values: Any) -> None:
        self.edit_spec(sync, lambda d: d["destination"].update(values))

    def edit_fields(self, sync: str, change: Callable[[dict[str, str]], Any]) -> None:
        """Change `destination.fields` (Braze name → model column), keeping the order of the others."""
        def apply(d: dict[str, Any]) -> None:
            fields = dict(d["destination"]["fields"])
            result = change(fields)
            d["destination"]["fields"] = result if isinstance(result, dict) else fields
        self.edit_spec(sync, apply)

    def rename_field(self, sync: str, old: str, new: str) -> None:
        """Rename a destination field in place (same model column)."""
        self.edit_fields(sync, lambda f: {(new if k == old else k): v for k, v in f.items()})

    def edit_model(self, model: str, old: str, new: str) -> None:
        path = self.project / "models" / f"{model}.sql"
        text = path.read_text()
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new))

    def edit_project(self, change: Callable[[dict[str, Any]], None]) -> None:
        path = self.project / "reflow_project.yml"
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    def sql(self, statement: str, params: Iterable[Any] | None = None) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.project / "warehouse.duckdb"))
        try:
            cur = con.execute(statement, list(params) if params is not None else None)
            try:
                return cur.fetchall()
            except duckdb.InvalidInputException:
                return []
        finally:
            con.close()

    # -- reading ------------------------------------------------------------------------------
    def model(self, name: str) -> list[dict[str, Any]]:
        return model_rows(self.project, name)

    def mapping(self, sync: str) -> dict[str, str]:
        """Braze field → model column, as the sync maps them now (automatic: every other column)."""
        spec = self.spec(sync)
        dest = spec["destination"]
        if dest.get("fields") is not None:
            return dict(dest["fields"])
        keys = spec["primary_key"] if isinstance(spec["primary_key"], list) else [spec["primary_key"]]
        skip = set(keys)
        if dest.get("identifier"):
            skip |= set(dest["identifier"].values())
        if dest.get("item_id"):
            skip.add(dest["item_id"])
        rows = self.model(spec["model"])
        columns = list(rows[0]) if rows else []
        return {c: c for c in columns if c not in skip}

    def identifier_column(self, sync: str) -> str:
        ident = self.spec(sync)["destination"]["identifier"]
        assert list(ident) == ["external_id"], ident
        return str(ident["external_id"])

    def users_out_of_step(self, sync: str = "braze_users", *, sandbox: Any = None,
                          skip_nulls: bool = False) -> list[str]:
        """Differences between Braze's profiles and the model under the sync's current mapping.
        `skip_nulls`: a null model value may be anything in Braze (nulls: skip)."""
        sandbox = sandbox or self.sandbox
        spec = self.spec(sync)
        column = self.identifier_column(sync)
        mapping = self.mapping(sync)
        problems = []
        for row in self.model(spec["model"]):
            ext = row[column]
            ext = str(ext) if isinstance(ext, int) else ext
            profile = sandbox.user(ext)
            for field, col in mapping.items():
                want = braze_form(row[col])
                if want is None and skip_nulls:
                    continue
                got = profile_value(profile, field)
                if not same(got, want):
                    shown = "(no profile)" if profile is None else "(absent)" if got is MISSING else repr(got)
                    problems.append(f"{ext} {field}: Braze {shown}, model {want!r}")
        return problems

    def assert_users_in_step(self, sync: str = "braze_users", **kwargs: Any) -> None:
        problems = self.users_out_of_step(sync, **kwargs)
        assert not problems, first(problems)

    def unset_problems(self, external_ids: Iterable[str], fields: Iterable[str], *,
                       sandbox: Any = None) -> list[str]:
        """Profiles that must not hold any of `fields` (e.g. rows removed with on_removed: unset)."""
        sandbox = sandbox or self.sandbox
        problems = []
        for ext in external_ids:
            profile = sandbox.user(ext)
            for field in fields:
                got = profile_value(profile, field)
                if got is not MISSING and got is not None:
                    problems.append(f"{ext} {field}: Braze still holds {got!r}, the model has no row")
        return problems

    def catalog_out_of_step(self, sync: str = "catalog_products", *, sandbox: Any = None,
                            catalog: str | None = None) -> list[str]:
        """Differences between a Braze catalog and the model under the sync's current mapping
        (items the model no longer has count too when on_removed is delete)."""
        sandbox = sandbox or self.sandbox
        spec = self.spec(sync)
        dest = spec["destination"]
        name = catalog or dest["catalog"]
        items = {i["id"]: i for i in sandbox.catalog_items(name) or []}
        mapping = self.mapping(sync)
        problems = []
        rows = {str(r[dest["item_id"]]): r for r in self.model(spec["model"])}
        for item_id, row in rows.items():
            item = items.get(item_id)
            if item is None:
                problems.append(f"{item_id}: not in catalog {name}")
                continue
            for field, col in mapping.items():
                want = braze_form(row[col])
                got = item.get(field, MISSING)
                if not same(got, want):
                    problems.append(f"{item_id} {field}: Braze {got!r}, model {want!r}")
        if dest.get("on_removed") == "delete":
            problems += [f"{k}: in catalog {name}, not in the model" for k in sorted(set(items) - set(rows))]
        return problems

    def assert_catalog_in_step(self, sync: str = "catalog_products", **kwargs: Any) -> None:
        problems = self.catalog_out_of_step(sync, **kwargs)
        assert not problems, first(problems)

    def profiles(self, sandbox: Any = None) -> dict[str, dict[str, Any]]:
        """Every profile by external_id, without its events and purchases (to compare before/after)."""
        sandbox = sandbox or self.sandbox
        out = {}
        for p in sandbox.users():
            p = dict(p)
            p.pop("events", None)
            p.pop("purchases", None)
            p.pop("last_updated", None)
            out[p.get("external_id") or p["braze_id"]] = p
        return out
