"""Command-line entry point (wiring only; filled in by the core)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    print("reflow: under construction")
    return 0
