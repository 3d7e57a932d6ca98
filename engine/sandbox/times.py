"""Parsing the time formats Braze accepts, and the formats it answers with."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

_COLON_MILLIS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}):(\d{3})(Z|[+-]\d{2}:?\d{2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_time(value: object) -> datetime | None:
    """ISO-8601 (date, date-time, with or without offset) or `yyyy-MM-ddTHH:mm:ss:SSSZ`; UTC when naive."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    match = _COLON_MILLIS.match(text)
    if match:
        text = f"{match.group(1)}.{match.group(2)}{match.group(3) or ''}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def is_date(value: object) -> bool:
    """`YYYY-MM-DD` and a real calendar date."""
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def iso_utc(moment: datetime) -> str:
    """`2021-06-28T17:02:43.032Z`, the export format of event summaries."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def export_created_at(epoch: float) -> str:
    """`2020-07-10 15:00:00.000 UTC`, the export format of `created_at`."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def now_utc() -> datetime:
    return datetime.now(UTC)
