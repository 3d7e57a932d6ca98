"""The HTML report in a real headless browser (Debian's chromium): the numbers on the page are the
plan's, filtering by a field works, and a screenshot is saved under artifacts/ for a person to look at.

Skips only when chromium is missing outside CI; in CI (CI=true) a missing chromium fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "artifacts"


def load_bench() -> Any:
    """benchmarks/show_latency.py builds big plans with SQL; the tests reuse its builder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("show_latency", ROOT / "benchmarks" / "show_latency.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is required in CI (.ci/run installs it with apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


class Browser:
    def __init__(self, binary: str, profile: Path) -> None:
        self.binary = binary
        self.profile = profile

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={self.profile}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    def dom(self, url: str) -> str:
        return self._run("--dump-dom", url).stdout

    def screenshot(self, url: str, png: Path, size: str = "1400,1000") -> None:
        png.parent.mkdir(parents=True, exist_ok=True)
        png.unlink(missing_ok=True)
        self._run(f"--screenshot={png}", f"--window-size={size}", "--hide-scrollbars", url)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


def card_counts(dom: str) -> dict[str, dict[str, int]]:
    """{sync: {count name: value}} from the summary cards of the rendered page."""
    out: dict[str, dict[str, int]] = {}
    for m in re.finditer(r'<section class="card[^"]*"\s+data-sync="([^"]+)">(.*?)</section>', dom, re.S):
        out[m.group(1)] = {k: number(v) for k, v in re.findall(r'data-count="(\w+)">([\d,]+)<', m.group(2))}
    return out


def rendered_rows(dom: str) -> list[dict[str, str]]:
    """The rows the page's script drew into the table (its current page)."""
    body = re.search(r'<tbody id="rows">(.*?)</tbody>', dom, re.S)
    assert body, "the table body is missing"
    return [dict(re.findall(r'data-(\w+)="([^"]*)"', m.group(1)))
            for m in re.finditer(r'<tr class="row" ([^>]*)>', body.group(1))]


def test_report_in_headless_chromium(cli, braze_env, tmp_path):
    chromium = find_chromium()
    browser = Browser(chromium, tmp_path / "chromium-profile")
    assert cli("plan")[0] == 0 and cli("apply", "--yes")[0] == 0
    assert cli("example", "mutate")[0] == 0
    report = tmp_path / "report.html"
    code, out, err = cli("plan", "--json", "--html", str(report))
    assert code == 0, err
    plan = json.loads(out)
    page = report.read_text(encoding="utf-8")
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page, "no network fetches"
    assert "<script src" not in page and "<link" not in page

    url = report.as_uri()
    dom = browser.dom(url)
    assert plan["plan_id"] in dom
    cards = card_counts(dom)
    assert set(cards) == {s["name"] for s in plan["syncs"]}
    for s in plan["syncs"]:
        for name in ("added", "changed", "removed", "unchanged", "retry", "invalid", "requests", "data_points"):
            assert cards[s["name"]][name] == s[name], (s["name"], name)
    total_rows = sum(s["added"] + s["changed"] + s["removed"] + s["retry"] + s["invalid"] for s in plan["syncs"])
    assert number(re.search(r'id="matching">([\d,]+)<', dom).group(1)) == total_rows
    assert number(re.search(r'id="match-count">([\d,]+)<', dom).group(1)) == total_rows
    assert len(rendered_rows(dom)) == min(50, total_rows), "the table paginates client-side"
    users = next(s for s in plan["syncs"] if s["name"] == "braze_users")
    for f in users["fields"]:
        assert re.search(rf'class="bar" data-field="{f["field"]}" data-rows="{f["rows"]}"', dom), f
    assert 'class="hist" data-sync="braze_users" data-field="lifetime_value"' in dom

    tier = next(f for f in users["fields"] if f["field"] == "loyalty_tier")
    filtered = browser.dom(url + "#filter=field:loyalty_tier")
    assert number(re.search(r'id="match-count">([\d,]+)<', filtered).group(1)) == tier["rows"]
    rows = rendered_rows(filtered)
    assert len(rows) == tier["rows"] > 0
    assert all("loyalty_tier" in r["fields"].split() and r["sync"] == "braze_users" for r in rows)
    code, out, _ = cli("show", "--field", "loyalty_tier", "--format", "json", "--limit", "0")
    assert sorted(r["key"] for r in rows) == sorted(r["key"] for r in json.loads(out))

    search = browser.dom(url + "#filter=sync:purchases,q:" + rows[0]["key"])
    assert all(r["sync"] == "purchases" for r in rendered_rows(search))

    overview = ARTIFACTS / "review-report.png"
    browser.screenshot(url, overview)
    assert png_size(overview) == (1400, 1000) and overview.stat().st_size > 30_000
    detail = ARTIFACTS / "review-report-filtered.png"
    browser.screenshot(url + "#filter=field:loyalty_tier", detail, size="1400,2200")
    assert png_size(detail) == (1400, 2200)


def test_report_of_a_large_plan_embeds_a_bounded_sample(tmp_path):
    """100,000 changed rows: the page embeds 5,000, says so, and stays small and quick to load."""
    chromium = find_chromium()
    from engine.report_html import write_report

    synthetic_plan = load_bench().synthetic_plan

    state_path = tmp_path / "state.duckdb"
    with synthetic_plan(state_path, rows=100_000) as (state, plan):
        info = write_report(tmp_path / "big.html", state, plan)
    assert info == {"embedded": 5000, "matching": 100_000}
    page = (tmp_path / "big.html").read_text()
    assert len(page) < 5_000_000
    dom = Browser(chromium, tmp_path / "profile").dom((tmp_path / "big.html").as_uri() + "#filter=field:score")
    assert re.search(r'id="embedded">5,000<', dom) and re.search(r'id="matching">100,000<', dom)
    assert "first rows of each sync" in dom
    assert number(re.search(r'id="match-count">([\d,]+)<', dom).group(1)) == 2500   # every other row
    assert len(rendered_rows(dom)) == 50
