"""The HTML report as a file: self-contained, bounded, escaped, numbers from the plan."""

from __future__ import annotations

import json
import re

from test_show import synthetic_plan

from engine.report_html import _share, render_report


def test_report_is_self_contained_and_bounded(tmp_path):
    with synthetic_plan(tmp_path / "s.duckdb", 20_000) as (state, plan):
        page, info = render_report(state, plan, max_rows=1000)
    assert info == {"embedded": 1000, "matching": 20_000}
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "@import" not in page
    assert 'id="embedded">1,000<' in page and 'id="matching">20,000<' in page
    data = json.loads(re.search(r'<script type="application/json" id="reflow-data">(.*?)</script>', page,
                                re.S).group(1))
    assert len(data["rows"]) == 1000 and data["rows"][0]["k"] == "u_0000000"
    assert data["rows"][0]["p"] == {"external_id": "u_0000000", "score": 1}
    assert 'data-sync="big_users"' in page and '<b data-count="changed">20,000</b>' in page
    assert 'class="hist" data-sync="big_users" data-field="score"' in page


def test_values_cannot_break_out_of_the_page(tmp_path):
    with synthetic_plan(tmp_path / "s.duckdb", 10) as (state, plan):
        state.con.execute("UPDATE rstate.main.plan_rows SET key = '</script><script>alert(1)</script>' "
                          "WHERE seq = (SELECT min(seq) FROM rstate.main.plan_rows)")
        page, _ = render_report(state, plan)
    assert "<script>alert(1)" not in page
    blob = re.search(r'id="reflow-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(blob)["rows"][0]["k"] == "</script><script>alert(1)</script>"


def test_rows_are_shared_fairly_between_syncs():
    assert _share({"a": 10, "b": 100_000, "c": 100_000}, 5000) == {"a": 10, "b": 2495, "c": 2495}
    assert _share({"a": 10, "b": 20}, 5000) == {"a": 10, "b": 20}
    assert _share({}, 5000) == {}
