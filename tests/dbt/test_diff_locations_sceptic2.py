"""A second sceptic's pass over `diff: warehouse` (and `hashes`) on a real PostgreSQL, after phase 1 became
one statement (LEFT JOIN + anti-join + count + digest) with key checks by counting and PostgreSQL's row hash
became hashtextextended (`postgres-hte/v3`). Each test here failed before its fix: it showed Braze and
Reflow disagreeing (or a plan wrong) without Reflow saying so. Helpers come from test_diff_locations_sceptic."""

from __future__ import annotations

import pytest
from dbtshop import ShopCli
from test_diff_locations import pg_rows
from test_diff_locations_sceptic import SYNC, attrs, plan, run, setup, src

pytestmark = [pytest.mark.dbt, pytest.mark.e2e, pytest.mark.postgres]


def plan_code(cli: ShopCli) -> tuple[int, str]:
    code, out, err = cli("plan", "--select", SYNC)
    return code, out + err


# ---------------------------------------------------------------- a key column with a nondeterministic collation

def test_key_with_a_case_insensitive_collation_changing_case_is_seen_on_the_warehouse(pg_shop, pg, braze_env, capsys):
    """The key column has an ICU nondeterministic (case-insensitive) collation, as PostgreSQL's docs advise
    instead of citext for emails and user names. Reflow's key text is `concat(id)`, which keeps the column's
    collation, so phase 1's LEFT JOIN and anti-join to the mirror compare keys case-insensitively, while the
    local snapshot (DuckDB) and every other location compare bytes.

    A key changing case ('Bob' -> 'bob', values unchanged): `local` and `hashes` plan 1 added, 1 removed.
    `warehouse` plans "No changes" (the row's hash matches the mirror row 'Bob', and 'Bob' is not an
    anti-join hit), the count equation balances (2 = 2 - 0 + 0), and the snapshot keeps 'Bob'. The next real
    change to that row then travels as key 'bob', which the snapshot lacks: the count no longer adds up, the
    full key checks (count(DISTINCT) under the same collation) find nothing, and every plan from then on
    stops with "the model's rows changed while this plan read them (2 rows, then 2) ... plan again": the
    sync is stuck on a false diagnosis until its diff location is changed."""
    pg_rows(pg["dsn"], "CREATE COLLATION IF NOT EXISTS public.reflow_ci "
                       "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    setup(pg_shop, pg, "id text COLLATE public.reflow_ci, ext text, v int",
          "INSERT INTO {src} VALUES ('Bob', 'u1', 1), ('al', 'u2', 2)", {"v": "v"}, location="warehouse")
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    src(pg, "UPDATE {src} SET id = 'bob' WHERE id = 'Bob'")
    p = plan(cli)
    assert p["read"]["diff"] == "warehouse", p["read"]
    # what `local` and `hashes` plan for the same change
    assert (p["added"], p["changed"], p["removed"]) == (1, 0, 1), (p["added"], p["changed"], p["removed"])
    run(cli)
    src(pg, "UPDATE {src} SET v = 5 WHERE id = 'bob'")
    code, out = plan_code(cli)
    assert code == 0 and "changed while this plan read them" not in out, out[-800:]
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 5


# ---------------------------------------------------------------- values the warehouse's normal form loses

@pytest.mark.parametrize("location", ["warehouse", "hashes"])
def test_a_date_turning_bc_is_not_planned_as_no_change(pg_shop, pg, braze_env, capsys, location):
    """The warehouse normalises dates and timestamps with to_char('YYYY-MM-DD...'), which drops the era:
    0044-03-15 and 0044-03-15 BC hash alike. The local diff refuses the BC value ("out of range for Reflow
    (year before 1)") and stops the sync; `hashes` and `warehouse` plan "No changes", so Braze keeps the AD
    date while the model says BC, and Reflow never says so."""
    setup(pg_shop, pg, "id int PRIMARY KEY, ext text, d date, ts timestamp",
          "INSERT INTO {src} VALUES (1, 'u1', '0044-03-15', '0044-03-15 10:00'), (2, 'u2', '2024-01-01', NULL)",
          {"d": "d", "ts": "ts"}, location=location)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    src(pg, "UPDATE {src} SET d = '0044-03-15 BC', ts = '0044-03-15 10:00 BC' WHERE id = 1")
    code, out, err = cli("plan", "--json", "--select", SYNC)
    if code == 0:            # planned: then the change must be in it
        import json
        p = next(s for s in json.loads(out)["syncs"] if s["name"] == SYNC)
        assert p["changed"] == 1, (p["added"], p["changed"], p["removed"])
    else:                    # or stopped, as the local diff stops, naming the value
        assert "year before 1" in out + err, out + err
