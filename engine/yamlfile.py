"""YAML input files: safe loading with line marks, and JSON Schema validation into located Problems.

`read_yaml` parses one file with a hardened `yaml.SafeLoader` (no custom tags, no timestamps,
bounded aliases, depth and size) and remembers where every key and value sits.
`validate` checks the parsed document against a schema from `schemas/` and turns every
`jsonschema` error into a `Problem` a person can act on (`file:line:col: path: message`); a document
found valid before is not checked again (engine/known_valid.py), and jsonschema is imported only to check.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engine import known_valid
from engine.errors import Problem

if TYPE_CHECKING:
    from jsonschema import ValidationError

MAX_BYTES = 1_000_000
MAX_DEPTH = 50
MAX_ALIASES = 100
MAX_NODES = 200_000

Key = str | int
YamlPath = tuple[Key, ...]

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("null", "bool", "int", "float", "str")}


# ---------------------------------------------------------------- schemas


def schema_path(name: str) -> Path:
    """Path of `schemas/<name>`: next to the package in a checkout, else packaged data."""
    repo = Path(__file__).resolve().parent.parent / "schemas" / name
    if repo.is_file():
        return repo
    packaged = importlib.resources.files("engine") / "_schemas" / name
    if packaged.is_file():
        return Path(str(packaged))
    raise FileNotFoundError(f"schema {name} not found at {repo}")


@functools.cache
def load_schema(name: str) -> Mapping[str, Any]:
    with schema_path(name).open(encoding="utf-8") as fh:
        schema: Mapping[str, Any] = json.load(fh)
    return schema


# ---------------------------------------------------------------- parsed document


@dataclass(frozen=True)
class Document:
    """A parsed YAML file: its data and the 1-based (line, col) of every key and value."""

    file: str
    data: Any
    keys: Mapping[YamlPath, tuple[int, int]] = field(default_factory=dict)
    values: Mapping[YamlPath, tuple[int, int]] = field(default_factory=dict)

    def value_mark(self, path: YamlPath) -> tuple[int, int]:
        """Where the value at `path` starts (falling back to its nearest parent)."""
        p = tuple(path)
        while p:
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))

    def key_mark(self, path: YamlPath) -> tuple[int, int]:
        """Where the key naming `path` sits (the value for list items and the root)."""
        p = tuple(path)
        if p in self.keys:
            return self.keys[p]
        return self.value_mark(p)

    def problem(self, path: YamlPath, message: str, *, at: str = "value") -> Problem:
        line, col = self.key_mark(path) if at == "key" else self.value_mark(path)
        return Problem(self.file, line, col, dotted(path), message)


def dotted(path: Iterable[Key]) -> str:
    """('destination', 'mode') -> 'destination.mode'; ('primary_key', 1) -> 'primary_key[1]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part or part != part.strip() or any(c in part for c in ".[]'\n"):
            out += "[" + show(part) + "]"  # keys that would read ambiguously
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    if not isinstance(word, str):
        return ""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return f" (did you mean '{lowered[word.lower()]}'?)"
    import difflib  # imported for messages only

    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def show(value: object) -> str:
    """A short, readable rendering of a YAML value for messages."""
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return "'" + text.replace("'", "\\'") + "'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return ""


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


# ---------------------------------------------------------------- loading


class _Refused(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds nesting and aliases, and leaves dates as strings."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}

    def _size(self, node: yaml.Node) -> int:
        """Values in `node` with aliases expanded (memoised; a node still being built counts 1)."""
        key = id(node)
        if key in self._sizes:
            return self._sizes[key]
        self._sizes[key] = 1  # guards recursive aliases
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(self._size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(self._size(k) + self._size(v) for k, v in node.value)
        self._sizes[key] = total
        return total

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(
                    f"more than {MAX_ALIASES} YAML aliases; refusing a possible alias bomb", event.start_mark
                )
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:
                self._expanded += self._size(anchored)
                if self._expanded > MAX_NODES:
                    raise _Refused(
                        f"aliases expand the document to more than {MAX_NODES} values; refusing a possible alias bomb",
                        event.start_mark,
                    )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _TAG + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


def _mark(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


class _Builder:
    """Turns a composed node tree into plain data, recording marks; bounds expanded size."""

    def __init__(self, loader: _Loader, doc_file: str) -> None:
        self.loader = loader
        self.file = doc_file
        self.keys: dict[YamlPath, tuple[int, int]] = {}
        self.values: dict[YamlPath, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.count = 0
        self.stack: set[int] = set()

    def build(self, node: yaml.Node, path: YamlPath, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _Refused(
                f"document has more than {MAX_NODES} values after expanding aliases; refusing it", node.start_mark
            )
        if depth > MAX_DEPTH:
            raise _Refused(f"nesting deeper than {MAX_DEPTH} levels (recursive alias?)", node.start_mark)
        self.values.setdefault(path, _mark(node.start_mark))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if id(node) in self.stack:
            raise _Refused("recursive YAML alias", node.start_mark)
        self.stack.add(id(node))
        try:
            return self._collection(node, path, depth)
        finally:
            self.stack.discard(id(node))

    def _collection(self, node: yaml.Node, path: YamlPath, depth: int) -> Any:
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _TAG + "seq":
                raise _Refused(f"unsupported YAML tag '{_tag(node.tag)}'", node.start_mark)
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _TAG + "map":
                raise _Refused(f"unsupported YAML tag '{_tag(node.tag)}'", node.start_mark)
            return self._mapping(node, path, depth)
        raise _Refused("unsupported YAML node", node.start_mark)  # pragma: no cover

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise _Refused(f"unsupported YAML tag '{_tag(node.tag)}'", node.start_mark)
        try:
            return self.loader.construct_object(node, deep=True)
        except Exception as exc:  # e.g. `!!int abc`
            raise _Refused(f"cannot read {node.value!r} as {node.tag.removeprefix(_TAG)}", node.start_mark) from exc

    def _mapping(self, node: yaml.MappingNode, path: YamlPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _TAG + "merge":
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                raise _Refused("mapping keys must be plain text", key_node.start_mark)
            key = str(key_node.value)
            child = (*path, key)
            if key in out:
                line, col = _mark(key_node.start_mark)
                first = self.keys.get(child, (line, col))[0]
                self.problems.append(Problem(self.file, line, col, dotted(child), f"duplicate key (first on line {first})"))
                continue
            self.keys[child] = _mark(key_node.start_mark)
            out[key] = self.build(value_node, child, depth + 1)
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise _Refused("a merge key (<<) takes a mapping or a list of mappings", source.start_mark)
                merged = self._mapping(source, path, depth)
                for key, value in merged.items():
                    out.setdefault(key, value)
        return out


def read_yaml(path: Path, display: str, *, kind: str = "YAML") -> tuple[Document | None, list[Problem]]:
    """Parse one YAML file. Returns (document, problems); document is None if unreadable.

    `display` is the file name used in messages (relative to the project root);
    `kind` names the file in the empty-file message ("empty sync file")."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return None, [Problem(display, None, None, "", f"file is larger than 1 MB ({size:,} bytes); refusing to read it")]
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Problem(display, None, None, "", f"cannot read file: {exc.strerror or exc}")]
    if len(raw) > MAX_BYTES:
        return None, [Problem(display, None, None, "", f"file is larger than 1 MB ({len(raw):,} bytes); refusing to read it")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [Problem(display, line, col, "", f"not valid UTF-8 text (byte 0x{raw[exc.start]:02x})")]
    return parse_yaml(text, display, kind=kind)


def parse_yaml(text: str, display: str, *, kind: str = "YAML") -> tuple[Document | None, list[Problem]]:
    """Parse YAML text (see `read_yaml`)."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None, [Problem(display, 1, 1, "", f"empty {kind} file")]
        builder = _Builder(loader, display)
        data = builder.build(node, (), 0)
        if data is None:
            return None, [Problem(display, 1, 1, "", f"empty {kind} file")]
    except _Refused as exc:
        line, col = _mark(exc.mark)
        return None, [Problem(display, line, col, "", exc.message)]
    except yaml.MarkedYAMLError as exc:
        line, col = _mark(exc.problem_mark or exc.context_mark)
        problem = exc.problem or exc.context or "unreadable YAML"
        if exc.context and problem.startswith("but "):
            problem = f"{exc.context}, {problem}"
        return None, [Problem(display, line, col, "", f"YAML syntax error: {problem}")]
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line = before.count("\n") + 1
        col = exc.position - (before.rfind("\n") + 1) + 1
        return None, [Problem(display, line, col, "", f"YAML syntax error: unacceptable character #x{exc.character:04x}: {exc.reason}")]
    except yaml.YAMLError as exc:
        return None, [Problem(display, 1, 1, "", f"YAML syntax error: {exc}")]
    except RecursionError:
        return None, [Problem(display, 1, 1, "", f"nesting deeper than {MAX_DEPTH} levels")]
    finally:
        if loader is not None:
            loader.dispose()
    return Document(display, data, builder.keys, builder.values), builder.problems


# ---------------------------------------------------------------- validation

_PATTERN_HINTS = {
    "^[A-Za-z0-9_][A-Za-z0-9_.-]*$": "use letters, digits, '_', '.' and '-', starting with a letter, digit or '_'",
    "^[A-Za-z0-9_][A-Za-z0-9_-]*$": "use letters, digits, '_' and '-', starting with a letter, digit or '_'",
    "^[A-Za-z_][A-Za-z0-9_]*$": "use letters, digits and '_', not starting with a digit",
    "^[A-Za-z0-9_-]+$": "use letters, digits, '_' and '-'",
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$": (
        "expected a UUID like 0f6e0a4c-1c1a-4a3c-9a52-5d1c2d3e4f50"
    ),
    "^https?://[^\\s/]+(/[^\\s]*)?$": "expected a URL like https://rest.iad-01.braze.com",
    "^[0-9]+(\\.[0-9]+)?\\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$": "expected a size like 1GB or 512MB",
}

_TYPE_WORDS = {"object": "mapping", "array": "list"}


def validate(doc: Document, schema: Mapping[str, Any]) -> list[Problem]:
    """Every schema problem in `doc`, located and worded for people. Data found valid against the same
    schema before (engine/known_valid.py) is not checked again; data found valid now is recorded."""
    if known_valid.seen(schema, doc.data):
        return []
    errors = schema_errors(schema, doc.data)
    if not errors:
        known_valid.remember(schema, doc.data)
        return []
    typed = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    problems: set[Problem] = set()
    for err in errors:
        path = tuple(err.absolute_path)
        if path in typed and err.validator != "type":
            continue  # "expected integer" says it all
        problems.update(_explain(doc, err, schema))
    return sorted(problems, key=lambda p: (p.line or 0, p.col or 0, p.path, p.message))


def schema_errors(schema: Mapping[str, Any], data: Any) -> list[ValidationError]:
    """jsonschema's errors for `data` (Draft 2020-12, formats not checked): the one place that imports it."""
    from jsonschema import Draft202012Validator

    return list(Draft202012Validator(schema).iter_errors(data))


def _condition(schema: Mapping[str, Any], schema_path: Sequence[Key]) -> str:
    """' for object 'users'' when the error comes from an if/then branch, else ''."""
    parts = list(schema_path)
    if "then" not in parts:
        return ""
    cut = len(parts) - 1 - parts[::-1].index("then")
    node: Any = schema
    for part in parts[:cut]:
        node = node[part]
    conditions = node.get("if", {}).get("properties", {})
    words = [f"{k} '{v['const']}'" for k, v in conditions.items() if isinstance(v, dict) and "const" in v]
    return f" for {' and '.join(words)}" if words else ""


def _schema_at(schema: Mapping[str, Any], schema_path: Sequence[Key]) -> Any:
    node: Any = schema
    for part in schema_path:
        node = node[part]
    return node


def _false_paths(doc: Document, err: ValidationError, root: Mapping[str, Any]) -> list[YamlPath]:
    """Paths of keys a `false` subschema forbids (jsonschema leaves the key out of the error path)."""
    path: YamlPath = tuple(err.absolute_path)
    schema_path = list(err.absolute_schema_path)
    if not schema_path or schema_path[-1] != "properties":
        return [path]
    props = _schema_at(root, schema_path)
    parent: Any = doc.data
    for part in path:
        parent = parent[part]
    keys = [
        k for k, sub in props.items()
        if sub is False and isinstance(parent, dict) and k in parent and parent[k] == err.instance
    ]
    return [(*path, k) for k in keys] or [path]


def _hidden(value: object) -> str:
    return "(value not shown: a secret's setting)"


_SECRET_KEY = re.compile(r"(^|_)(api_key|key|secret|password|passwd|token)$", re.IGNORECASE)


def _explain(doc: Document, err: ValidationError, root: Mapping[str, Any]) -> list[Problem]:
    path: YamlPath = tuple(err.absolute_path)
    kind = err.validator
    value = err.instance
    # a secret's setting: its value is never echoed (an unquoted key is a number, not a string)
    secret = bool(path) and isinstance(path[-1], str) and bool(_SECRET_KEY.search(path[-1]))
    shown_as = _hidden if secret else show
    cond = _condition(root, list(err.absolute_schema_path))
    sub = err.schema if isinstance(err.schema, dict) else {}

    if "propertyNames" in list(err.relative_schema_path) and isinstance(value, str):
        key_path = (*path, value)
        hint = _PATTERN_HINTS.get(str(err.validator_value), "") if kind == "pattern" else err.message
        return [doc.problem(key_path, f"{shown_as(value)} is not a valid name: {hint}", at="key")]
    if err.schema is False or kind is None:
        return [doc.problem(p, f"not allowed{cond or ' here'}", at="key") for p in _false_paths(doc, err, root)]
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = list(sub.get("properties", {}))
        out = []
        for key in value:
            if key in allowed:
                continue
            hint = did_you_mean(key, allowed) or (f"; expected one of: {', '.join(allowed)}" if allowed else "")
            out.append(doc.problem((*path, key), f"unknown key{hint}", at="key"))
        return out
    if kind == "required" and isinstance(value, dict):
        return [
            doc.problem(path, f"missing required key '{key}'{cond}", at="key")
            for key in err.validator_value
            if key not in value
        ]
    if kind == "type":
        expected = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in expected)
        shown = shown_as(value) if value is not None else ""
        return [doc.problem(path, f"expected {words}, got {type_name(value)}{' ' + shown if shown else ''}")]
    if kind == "enum":
        options = ", ".join(shown_as(v) for v in err.validator_value)
        hint = did_you_mean(value, [v for v in err.validator_value if isinstance(v, str)])
        return [doc.problem(path, f"{shown_as(value)} is not one of {options}{hint}")]
    if kind == "const":
        return [doc.problem(path, f"expected {shown_as(err.validator_value)}, got {shown_as(value)}")]
    if kind == "pattern":
        hint = _PATTERN_HINTS.get(str(err.validator_value), f"must match {err.validator_value}")
        return [doc.problem(path, f"{shown_as(value)} is not valid: {hint}")]
    if kind == "minLength":
        n = err.validator_value
        return [doc.problem(path, "must not be empty" if n == 1 else f"must be at least {n} characters")]
    if kind == "maxLength":
        return [doc.problem(path, f"must be at most {err.validator_value} characters")]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return [doc.problem(path, f"must be {op} {err.validator_value}, got {shown_as(value)}")]
    if kind == "minItems":
        n = err.validator_value
        return [doc.problem(path, "must not be empty" if n == 1 else f"needs at least {n} items")]
    if kind == "uniqueItems" and isinstance(value, list):
        seen: list[Any] = []
        dupes = [v for v in value if v in seen or seen.append(v)]  # type: ignore[func-returns-value]
        return [doc.problem(path, f"{shown_as(dupes[0]) or 'an item'} is listed more than once")]
    if kind in ("minProperties", "maxProperties"):
        props = list(sub.get("properties", {}))
        if props and sub.get("minProperties") == 1 and sub.get("maxProperties") == 1:
            return [doc.problem(path, f"give exactly one of {', '.join(props)}", at="key")]
        if kind == "minProperties":
            return [doc.problem(path, "must not be empty", at="key")]
        return [doc.problem(path, f"at most {err.validator_value} keys allowed", at="key")]
    if kind in ("oneOf", "anyOf"):
        options = err.validator_value
        if all(isinstance(o, dict) and set(o) == {"required"} and len(o["required"]) == 1 for o in options):
            names = [o["required"][0] for o in options]
            return [doc.problem(path, f"give exactly one of {', '.join(names)}{cond}", at="key")]
        from jsonschema.exceptions import best_match

        best = best_match(err.context) if err.context else None
        if best is not None:
            return _explain(doc, best, root)
    return [doc.problem(path, err.message)]
