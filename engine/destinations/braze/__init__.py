"""The Braze destination: `destination.make_destination` is the one entry point the CLI uses.

    instances.py    Braze instances and endpoint URL rules (imports only errors: the project loader uses it)
    endpoints.py    channels, limits, rate-limit groups, permissions (data)
    profiles.py     profiles before objects: created first, or looked up (/users/export/ids)
    validate.py     Braze's per-object rules (reasons name the field and the value problem)
    payloads.py     plan row → one Braze object per destination object
    datapoints.py   data points (billing) per object
    client.py       sessions, rate limiting, retries, response sorting
    destination.py  BrazeDestination (the contract in destinations/base.py)
"""
