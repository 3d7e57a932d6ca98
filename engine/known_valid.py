"""Documents already found valid against a JSON Schema, so that a command whose project and sync files
did not change neither imports jsonschema nor compiles a schema (about 50 ms of every command).

A document is known valid when its digest is in the cache file: SHA-256 over this Reflow's version,
the schema and the parsed data (the values after parsing and rendering, with their types: `1`, `"1"`
and `true` differ). Only a verdict jsonschema gave is recorded, and only "valid": an invalid document
is checked (and explained) every time. Any change to the data, the schema or Reflow's version is
another digest, so nothing is ever invalidated by hand. A document holding a registered secret
(engine/errors.py) is never recorded (not even as a digest).

The cache is one small text file of hex digests, newest last, at most `KEEP` of them:
`$REFLOW_CACHE_DIR/known-valid` (an empty REFLOW_CACHE_DIR: no cache), else
`$XDG_CACHE_HOME/reflow/known-valid`, else `~/.cache/reflow/known-valid`. It is written by a
rename (a reader never sees half a file); a lost update or an unwritable folder only means checking
again. Nothing in it is read as anything but digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import contains_secret

CACHE_ENV = "REFLOW_CACHE_DIR"
FILE = "known-valid"
KEEP = 512

_SCALARS = (str, int, float, bool, type(None))
_seen: dict[Path, list[str]] = {}        # the file's digests, read once per process


def cache_file() -> Path | None:
    """Where the digests are kept; None when REFLOW_CACHE_DIR is set and empty (no cache)."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return Path(chosen) / FILE if chosen else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reflow" / FILE


def digest(schema: Mapping[str, Any], data: Any) -> str | None:
    """The document's digest; None when it cannot be recorded: a value of another type than YAML's
    scalars, mappings and lists, or a registered secret in it."""
    shown = _canonical(data)
    if shown is None or contains_secret(shown):
        return None
    text = "\0".join((__version__, repr(schema), shown))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _canonical(value: Any) -> str | None:
    """`repr` of plain data (its types kept), or None if anything else is in it."""
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            key, item = _canonical(k), _canonical(v)
            if key is None or item is None:
                return None
            parts.append(f"{key}: {item}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return None if any(i is None for i in items) else "[" + ", ".join(items) + "]"   # type: ignore[arg-type]
    return repr(value) if type(value) in _SCALARS else None


def seen(schema: Mapping[str, Any], data: Any) -> bool:
    """True when `data` was found valid against `schema` before (by this Reflow version)."""
    path = cache_file()
    key = digest(schema, data)
    return path is not None and key is not None and key in _read(path)


def remember(schema: Mapping[str, Any], data: Any) -> None:
    """Record that jsonschema found `data` valid against `schema` (best effort: errors are ignored). The
    file is read again first, so that what other processes recorded meanwhile is kept."""
    path = cache_file()
    key = digest(schema, data)
    if path is None or key is None or key in _read(path):
        return
    known = _seen[path] = [k for k in _read(path, again=True) if k != key] + [key]
    del known[:-KEEP]
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("".join(k + "\n" for k in known), encoding="ascii")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _read(path: Path, *, again: bool = False) -> list[str]:
    """The digests in the file (kept for the process; `again`: read the file anew)."""
    known = None if again else _seen.get(path)
    if known is None:
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            text = ""
        known = _seen[path] = [k for k in text.split() if len(k) == 64][-KEEP:]
    return known
