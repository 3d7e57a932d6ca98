"""How numbers, durations and values read in every output: the terminal (console.py), the markdown
summary (report_markdown.py) and the HTML report (report_html.py) all format through here."""

from __future__ import annotations

from typing import Any

from engine import strict_json


def n(value: int | float) -> str:
    """1234567 → 1,234,567; a float to one decimal."""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def trimmed(value: float) -> str:
    """A number with thousands separators and at most two decimals, trailing zeros dropped."""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}".rstrip("0").rstrip(".")


def whole_or_one(value: float) -> str:
    """3.0 → 3, 2.25 → 2.2: a count, or a measure to one decimal."""
    return f"{value:,.1f}" if not float(value).is_integer() else f"{int(value):,}"


def signed(value: float | None) -> str:
    """A difference: +3, -1.25, +1.23e+07 (large ones in three significant digits); None → '-'."""
    if value is None:
        return "-"
    return f"{value:+,.2f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:+,.3g}"


def compact(value: float) -> str:
    """1234 → 1.2k, 9_600_000 → 9.6M: for one-line summaries."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            text = f"{value / size:.1f}".removesuffix(".0")
            return text + unit
    return f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds else "0 s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def size(nbytes: int) -> str:
    """Bytes for people: 812 B, 4.2 KB, 91.3 MB, 1.4 GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def plural(count: int, word: str) -> str:
    return f"{n(count)} {word}" + ("" if count == 1 else "s")


def truncated(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def short(value: Any, width: int = 40, *, strings_as_json: bool = False) -> str:
    """A value in at most `width` characters: JSON (strings as Python literals unless `strings_as_json`)."""
    if isinstance(value, str) and not strings_as_json:
        return truncated(repr(value), width)
    return truncated(strict_json.dumps(value, ensure_ascii=False), width)
