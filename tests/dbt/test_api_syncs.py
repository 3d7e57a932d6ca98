"""`engine.api.syncs` on a dbt project: each sync with the dbt nodes its SQL reads (the upstream asset keys
of engine/integrations/dagster.py), through the same manifest as `reflow dbt exposures`."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import api

pytestmark = pytest.mark.dbt


def test_a_sync_reads_the_dbt_models_its_sql_names(shop: Path) -> None:
    found = {s.name: s for s in api.syncs(shop)}
    customers = found["braze_customers"]
    assert customers.model == "dim_braze_customers"
    assert api.Upstream("dim_braze_customers", "model") in customers.reads, customers.reads
    assert all(u.resource_type in ("model", "seed", "snapshot", "source") for s in found.values() for u in s.reads)
    assert all(u.source_name for s in found.values() for u in s.reads if u.resource_type == "source")
