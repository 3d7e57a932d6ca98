"""The DuckDB fast path for cohort members (sql_cohorts.py) builds exactly what the Python path builds.

Each example plans the same data twice, once with the fast path and once with it switched off, first
as a full sync and again after members left, entered and were renamed, and compares every plan row
byte for byte (status, channel, item text, data points, an invalid row's reason) and the plan's
per-cohort notes. Identifiers, cohort ids and names are chosen on both sides of Braze's rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
from braze_checks import rows_as_sent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.destinations.braze.destination import make_destination
from engine.planner import build_plan
from engine.project import CohortImport, ConnectionConfig, Project, WarehouseConfig
from engine.specs import CohortSpec, DestinationSpec, Identifier, Object, SyncSpec
from engine.state import DB, State
from engine.warehouse.duckdb import DuckDBWarehouse

IDS = ["u1", "u2", "u3", "ç_5", "😀x", "ctl\x1f", 'quote"d', "a/b", "", "   ", "-_-", "tab\there", "new\nline", "x" * 236,
       "x" * 237, "x" * 987, "x" * 988, "é" * 118, "é" * 119]
TIERS = ["gold", "silver", "ok-_1", "has space", "t" * 250, "t" * 251, "é", "gold\n", ""]
NAMES = [None, "Gold", "V I P", "   ", "★", "é/ü?&=#%", "tab\tname"]
ROW = st.fixed_dictionaries({"id": st.sampled_from(IDS), "tier": st.sampled_from(TIERS),
                             "tier_num": st.sampled_from([1, -5, 2**40]), "tier_name": st.sampled_from(NAMES)})
TABLE = "create table members_raw (id varchar, n bigint, tier varchar, tier_num bigint, tier_name varchar)"

ATTRIBUTE = dict(method="attribute", attribute="warehouse_cohorts")
VARIANTS: dict[str, tuple[Identifier, dict[str, Any]]] = {
    "attribute-constant": (Identifier("external_id", "id"), dict(ATTRIBUTE, id="vip")),
    "attribute-column-alias": (Identifier("user_alias", "id", alias_label="crm \"x\""), dict(ATTRIBUTE, id_column="tier")),
    "attribute-integer-cohort": (Identifier("external_id", "id"), dict(ATTRIBUTE, id_column="tier_num")),
    "attribute-integer-member": (Identifier("external_id", "n"), dict(ATTRIBUTE, id="vip")),
    "partner-constant-alias": (Identifier("user_alias", "id", alias_label="crm"),
                               dict(method="partner", id="vip", name="V I P ü/?")),
    "partner-constant-no-name": (Identifier("external_id", "id"), dict(method="partner", id="vip")),
    "partner-column-named": (Identifier("external_id", "id"),
                             dict(method="partner", id_column="tier", name_column="tier_name")),
    "partner-column-alias": (Identifier("user_alias", "id", alias_label="crm"), dict(method="partner", id_column="tier")),
}


def _project(root: Path, name: str) -> Project:
    connection = ConnectionConfig(name="braze", endpoint="http://127.0.0.1:9",
                                  cohort_import=CohortImport(partner="acme"))
    return Project(root=root, name="x", warehouse=WarehouseConfig(path="wh.duckdb"),
                   state_path=root / f"state_{name}" / "state.duckdb", connections={"braze": connection})


def _sync(variant: str) -> SyncSpec:
    ident, cohort = VARIANTS[variant]
    column = cohort.get("id_column")
    return SyncSpec(name="members", model="members", primary_key=(ident.column, *([column] if column else [])),
                    destination=DestinationSpec(connection="braze", object=Object.COHORTS, identifier=ident,
                                                cohort=CohortSpec(**cohort)),
                    path="syncs/members.yml", raw={})


def _plan(root: Path, variant: str, fast: bool, calls: list[Any] | None = None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Plan rows by key (op, status, channel, item text, data points, invalid reason) and the plan's notes;
    the plan is then recorded as applied, so that the next plan diffs against it."""
    project = _project(root, "fast" if fast else "slow")
    dest = make_destination(project.connections["braze"], None, _sync(variant))
    if not fast:
        dest.sql_items = lambda columns, **_: None  # type: ignore[method-assign]
    if calls is not None:
        original = dest.prepare
        def counted(row: Any) -> Any:
            calls.append(row)
            return original(row)
        dest.prepare = counted  # type: ignore[method-assign]
    with State.open(project.state_path, command="test") as state:
        plan = build_plan(project, [_sync(variant)], state, DuckDBWarehouse(project), lambda s: dest)
        assert not plan.failed, plan.failed
        rows = rows_as_sent(state, plan)
        synced = state.sync("members")
        assert synced is not None
        state.con.execute(f"delete from {synced.table}")
        state.con.execute(f"insert into {synced.table} select key, new_hash, new_row from {DB}.plan_rows "
                          "where plan_id = ? and op <> 'removed'", [plan.plan_id])
        state.con.execute(f"update {DB}.syncs set version = version + 1")
    found = {r[0]: (r[1], r[2], r[3], r[4], r[5], r[6] if r[2] == "invalid" else None) for r in rows}
    return found, plan.syncs[0].notes

def _load(root: Path, rows: list[dict[str, Any]], variant: str) -> None:
    """The rows into the warehouse, the first of each key of the variant's sync (a member may be in
    several cohorts with cohort_column), each cohort named as its first row names it."""
    con = duckdb.connect(str(root / "wh.duckdb"))
    con.execute("drop table if exists members_raw")
    con.execute(TABLE)
    seen: set[tuple[Any, ...]] = set()
    names: dict[str, str | None] = {}       # one name per cohort (the planner refuses a model giving it two)
    for r in rows:
        r = dict(r, n=IDS.index(r["id"]) - 3 if r["id"] in IDS else len(r["id"]))   # an integer member
        r["tier_name"] = names.setdefault(r["tier"], r["tier_name"])
        key = tuple(r[c] for c in _sync(variant).primary_key)
        if key in seen:
            continue
        seen.add(key)
        con.execute("insert into members_raw values (?, ?, ?, ?, ?)",
                    [r["id"], r["n"], r["tier"], r["tier_num"], r["tier_name"]])
    con.close()


def _root(factory: pytest.TempPathFactory) -> Path:
    root = factory.mktemp("cohorts")
    (root / "models").mkdir()
    (root / "models" / "members.sql").write_text("select * from {{ ref('members_raw') }}")
    return root


@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(ROW, min_size=1, max_size=10), second=st.lists(ROW, min_size=1, max_size=10))
def test_fast_path_equals_python_path(tmp_path_factory: pytest.TempPathFactory, variant: str,
                                      first: list[dict[str, Any]], second: list[dict[str, Any]]) -> None:
    root = _root(tmp_path_factory)
    # the second plan: half the members leave, others enter, and some keep their key with a new name
    renamed = [dict(r, tier_name="Renamed") for r in first[:2]]
    for rows in (first, renamed + first[len(first) // 2:] + second):
        _load(root, rows, variant)
        assert _plan(root, variant, True) == _plan(root, variant, False)


MEMBERS = [{"id": f"c_{i:03d}", "tier": "gold" if i % 3 else "silver", "tier_num": i % 2,
            "tier_name": "Gold & co" if i % 3 else None} for i in range(30)]
BAD = [{"id": "", "tier": "gold", "tier_num": 1, "tier_name": None},           # empty
       {"id": "x" * 988, "tier": "gold", "tier_num": 1, "tier_name": None},    # too long for any identifier
       {"id": "--", "tier": "gold", "tier_num": 1, "tier_name": None}]         # no letter or digit


@pytest.mark.parametrize("variant", ["attribute-constant", "attribute-column-alias", "partner-constant-alias",
                                     "partner-column-named"])
def test_the_fast_path_covers_members_entering_and_leaving(tmp_path_factory: pytest.TempPathFactory,
                                                           variant: str) -> None:
    """Valid members never reach prepare(), entering or leaving; invalid identifiers do (empty or too
    long: invalid; one without a letter or digit: as the Python path says)."""
    root = _root(tmp_path_factory)
    field = VARIANTS[variant][0].kind
    bad: list[str] = sorted(str(r["id"]) for r in BAD)
    _load(root, MEMBERS + BAD, variant)
    calls: list[Any] = []
    first, notes = _plan(root, variant, True, calls)
    assert sorted(str(c.values[field]) for c in calls) == bad, variant
    statuses = [v[1] for v in first.values()]
    assert statuses.count("invalid") == 2 and statuses.count("send") >= len(MEMBERS)
    assert _plan(root, variant, False)[1] == notes          # the per-cohort notes count the fast path's rows
    _load(root, MEMBERS[:20] + [dict(m, id=f"n_{i}") for i, m in enumerate(MEMBERS[:5])], variant)
    calls.clear()
    second, notes = _plan(root, variant, True, calls)
    ops = [v[0] for v in second.values()]
    assert (ops.count("removed"), ops.count("added")) == (10 + len(BAD), 5)
    assert sorted(str(c.values[field]) for c in calls) == bad           # the bad ones leave through Python
    assert _plan(root, variant, False)[1] == notes
    counts = [tuple(map(int, m.groups())) for n in notes if (m := re.search(r"(\d+) entered, (\d+) left", n))]
    assert (sum(e for e, _ in counts), sum(left for _, left in counts)) == (5, 11), notes    # "--" left too
