"""Destinations: where plan rows are sent. `base` is the contract; `braze` and `memory` implement it."""
