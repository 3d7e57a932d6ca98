"""Syncs declared in dbt YAML (`config: meta: reflow:`) load, validate, locate errors and plan
exactly like syncs/*.yml."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from dbtshop import ShopCli

from engine.errors import SpecError
from engine.project import load_project
from engine.specs import load_syncs

pytestmark = pytest.mark.dbt

FILE_TWIN = """\
name: order_events_file
description: An order_placed Braze event for every order that was not cancelled.
model: fct_order_events
primary_key: order_id
destination:
  connection: braze
  object: events
  identifier: {external_id: customer_id}
  event:
    name: order_placed
    time: ordered_at
    properties:
      order_id: order_id
      total: total
      channel: channel
      item_count: item_count
guards:
  max_added: 100000
tags: [braze, events]
"""


def test_meta_declared_sync_equals_its_file_declared_twin(shop: Path, capsys) -> None:
    (shop / "syncs" / "order_events_file.yml").write_text(FILE_TWIN)
    specs = {s.name: s for s in load_syncs(load_project(shop))}
    meta, twin = specs["order_events"], specs["order_events_file"]
    assert meta.path == "models/marts/_marts.yml" and twin.path == "syncs/order_events_file.yml"
    assert meta.model == "fct_order_events"
    assert dataclasses.replace(twin, name=meta.name, path=meta.path) == meta

    cli = ShopCli(shop, capsys)
    code, out, _ = cli("ls")
    assert code == 0
    assert any("order_events " in line and "models/marts/_marts.yml" in line for line in out.splitlines())
    assert any("order_events_file" in line and "syncs/order_events_file.yml" in line for line in out.splitlines())

    code, out, err = cli("plan", "--json", "--dbt-build", "--select", "order_events", "order_events_file")
    assert code == 0, err
    plans = {s["name"]: s for s in json.loads(out)["syncs"]}
    same = ("added", "changed", "removed", "total", "invalid", "requests", "data_points", "samples", "guards")
    assert plans["order_events"]["added"] > 0
    assert {k: plans["order_events"][k] for k in same} == {k: plans["order_events_file"][k] for k in same}


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_meta_sync_errors_point_into_the_dbt_yaml(shop: Path, capsys) -> None:
    marts = shop / "models" / "marts" / "_marts.yml"
    marts.write_text(marts.read_text().replace("object: events", "object: event")
                     .replace("max_added: 100000", "max_added: lots"))
    with pytest.raises(SpecError) as caught:
        load_syncs(load_project(shop))
    message = caught.value.message
    assert f"models/marts/_marts.yml:{_line_of(marts, 'object: event')}:21: destination.object:" in message
    assert f"models/marts/_marts.yml:{_line_of(marts, 'max_added: lots')}:24: guards.max_added:" in message
    code, _, err = ShopCli(shop, capsys)("validate")
    assert code == 1 and "models/marts/_marts.yml:" in err and "Traceback" not in err


def test_meta_sync_cannot_name_another_model(shop: Path) -> None:
    marts = shop / "models" / "marts" / "_marts.yml"
    marts.write_text(marts.read_text().replace("name: order_events\n", "name: order_events\n          model: dim_braze_customers\n"))
    with pytest.raises(SpecError, match=r"_marts.yml:\d+:\d+: model: a sync declared on dbt model 'fct_order_events'"):
        load_syncs(load_project(shop))


def test_selection_walks_the_dbt_graph(shop: Path, capsys) -> None:
    cli = ShopCli(shop, capsys)

    def selected(*select: str) -> list[str]:
        code, out, err = cli("ls", "--select", *select)
        assert code == 0, err
        return sorted(line.split()[0] for line in out.splitlines()[1:] if line.strip())

    assert selected("stg_shop__gdpr_requests+") == ["braze_customers", "order_events"]
    assert selected("fct_order_events+") == ["order_events"]
    assert selected("model:dim_braze_customers") == ["braze_customers"]
    assert selected("tag:events") == ["order_events"]
    assert selected("braze_customers") == ["braze_customers"]
    code, _, err = cli("ls", "--select", "stg_shop__nothing+")
    assert code == 1 and "no dbt model named 'stg_shop__nothing'" in err
