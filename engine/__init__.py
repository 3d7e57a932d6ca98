"""Reflow: declarative reverse ETL from a warehouse into Braze."""

__version__ = "0.1.0"
