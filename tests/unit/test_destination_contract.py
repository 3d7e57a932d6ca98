"""The destination contract (engine/destinations/base.py): what a new destination must implement."""

from __future__ import annotations

import pytest

from engine.destinations.base import Capabilities, Destination
from engine.destinations.memory import MemoryDestination


def test_a_destination_missing_a_required_method_cannot_be_created() -> None:
    class Half(Destination):
        capabilities = Capabilities(default_concurrency=1)

        def project(self, columns):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]


def test_the_optional_methods_have_defaults() -> None:
    dest = MemoryDestination()
    assert dest.sql_items([]) is None and dest.plan_notes(3) == [] and dest.group_field is None
    assert dest.plan_totals({None: 3}) is None
    caps = dest.capabilities
    assert (caps.apply_rank, caps.object_word, caps.place) == (1, "destination object", ())
