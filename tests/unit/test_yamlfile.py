"""YAML loading: line marks, and hostile input refused with a located message."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.yamlfile import (
    MAX_ALIASES,
    MAX_BYTES,
    MAX_DEPTH,
    did_you_mean,
    dotted,
    load_schema,
    parse_yaml,
    read_yaml,
    schema_path,
    validate,
)


def problems(text: str) -> list[str]:
    doc, found = parse_yaml(text, "f.yml", kind="sync")
    return [str(p) for p in found]


def test_marks_for_keys_and_values() -> None:
    doc, found = parse_yaml("a: 1\nb:\n  c: [x, {d: y}]\n  'e f': z\n", "f.yml")
    assert found == [] and doc is not None
    assert doc.data == {"a": 1, "b": {"c": ["x", {"d": "y"}], "e f": "z"}}
    assert doc.keys[("b", "c")] == (3, 3)
    assert doc.values[("b", "c")] == (3, 6)
    assert doc.values[("b", "c", 1, "d")] == (3, 14)
    assert doc.key_mark(("b", "c", 0)) == (3, 7)  # list items: their own position
    assert doc.value_mark(("b", "missing", "deeper")) == (3, 3)  # nearest parent
    assert doc.problem(("b", "e f"), "m", at="key").line == 4


def test_plain_keys_stay_text_and_dates_stay_strings() -> None:
    doc, _ = parse_yaml("yes: on\n1: 2024-01-01\nnull: ~\n", "f.yml")
    assert doc is not None
    assert doc.data == {"yes": True, "1": "2024-01-01", "null": None}


def test_merge_keys() -> None:
    doc, found = parse_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", "f.yml")
    assert found == [] and doc is not None
    assert doc.data["other"] == {"x": 1, "y": 3}


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "f.yml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    doc, found = read_yaml(path, "f.yml")
    assert found == [] and doc is not None and doc.data == {"a": 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1", "f.yml:1:6: YAML syntax error: expected ',' or ']', but got '<stream end>'"),
        ("a: b: c", "f.yml:1:5: YAML syntax error: mapping values are not allowed here"),
        ("a: 1\n---\nb: 2", "f.yml:2:1: YAML syntax error: expected a single document in the stream, "
         "but found another document"),
        ("a: *nope", "f.yml:1:4: YAML syntax error: found undefined alias 'nope'"),
        ("a: 1\nb:\t2\n\x07", "f.yml:3:1: YAML syntax error: unacceptable character #x0007: "
         "special characters are not allowed"),
        ("a: !!python/object/apply:os.system [ls]", "f.yml:1:4: unsupported YAML tag '!!python/object/apply:os.system'"),
        ("a: !!python/name:os.system", "f.yml:1:4: unsupported YAML tag '!!python/name:os.system'"),
        ("a: !custom x", "f.yml:1:4: unsupported YAML tag '!custom'"),
        ("a: !!binary aGVsbG8=", "f.yml:1:4: unsupported YAML tag '!!binary'"),
        ("a: !!set {x, y}", "f.yml:1:4: unsupported YAML tag '!!set'"),
        ("a: !!int nope", "f.yml:1:4: cannot read 'nope' as int"),
        ("? [a, b]\n: 1", "f.yml:1:3: mapping keys must be plain text"),
        ("a: &x [1, *x]", "f.yml:1:4: recursive YAML alias"),
        ("a: 1\nb: 2\na: 3", "f.yml:3:1: a: duplicate key (first on line 1)"),
        ("", "f.yml:1:1: empty sync file"),
        ("---\n...\n", "f.yml:1:1: empty sync file"),
    ],
)
def test_refused_or_broken_yaml(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_nesting_deeper_than_the_limit() -> None:
    ok = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert problems(ok) == []
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert problems(deep) == [f"f.yml:1:{MAX_DEPTH + 1}: nesting deeper than {MAX_DEPTH} levels"]
    very_deep = "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 5000))
    [message] = problems(very_deep)
    assert message.endswith(f"nesting deeper than {MAX_DEPTH} levels")


def test_too_many_aliases() -> None:
    text = "a: &a x\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    [message] = problems(text)
    assert message.startswith("f.yml:2:")
    assert message.endswith(f"more than {MAX_ALIASES} YAML aliases; refusing a possible alias bomb")


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 10)}]")
    [message] = problems("\n".join(lines))
    assert "refusing a possible alias bomb" in message


def test_file_larger_than_1mb_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    path.write_text("a: " + "x" * MAX_BYTES + "\n")
    doc, found = read_yaml(path, "syncs/big.yml")
    assert doc is None
    assert [str(p) for p in found] == [
        f"syncs/big.yml: file is larger than 1 MB ({MAX_BYTES + 4:,} bytes); refusing to read it"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "f.yml"
    path.write_bytes(b"a: 1\nb: \xff\xfe\n")
    _, found = read_yaml(path, "f.yml")
    assert [str(p) for p in found] == ["f.yml:2:4: not valid UTF-8 text (byte 0xff)"]


def test_unreadable_file(tmp_path: Path) -> None:
    _, found = read_yaml(tmp_path / "missing.yml", "missing.yml")
    assert [str(p) for p in found] == ["missing.yml: cannot read file: No such file or directory"]


def test_validate_against_a_small_schema() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["mode"],
        "properties": {
            "mode": {"description": "m", "type": "string", "enum": ["upsert", "update"]},
            "n": {"description": "n", "type": ["integer", "null"]},
            "rate": {"description": "r", "type": "number", "exclusiveMinimum": 0},
        },
    }
    doc, _ = parse_yaml("mode: Upsert\nn: 1.5\nrate: 0\ncolour: x\n", "f.yml")
    assert doc is not None
    assert [str(p) for p in validate(doc, schema)] == [
        "f.yml:1:7: mode: 'Upsert' is not one of 'upsert', 'update' (did you mean 'upsert'?)",
        "f.yml:2:4: n: expected integer or null, got number 1.5",
        "f.yml:3:7: rate: must be > 0, got 0",
        "f.yml:4:1: colour: unknown key; expected one of: mode, n, rate",
    ]


def test_helpers() -> None:
    assert dotted(("destination", "identifier", "user_alias")) == "destination.identifier.user_alias"
    assert dotted(("primary_key", 1)) == "primary_key[1]"
    assert dotted(()) == ""
    assert did_you_mean("upsrt", ["upsert", "update"]) == " (did you mean 'upsert'?)"
    assert did_you_mean("zzzz", ["upsert", "update"]) == ""
    assert did_you_mean(3, ["upsert"]) == ""
    assert schema_path("sync.schema.json").name == "sync.schema.json"
    assert schema_path("sync.schema.json").parent.name == "schemas"
    assert load_schema("project.schema.json")["title"].startswith("Reflow project file")


def test_null_and_boolean_values_in_type_errors() -> None:
    schema = {"type": "object", "properties": {"a": {"description": "a", "type": "string"},
                                               "b": {"description": "b", "type": "integer"}}}
    doc, _ = parse_yaml("a:\nb: yes\n", "f.yml")
    assert doc is not None
    assert [str(p) for p in validate(doc, schema)] == [
        "f.yml:1:3: a: expected string, got null",
        "f.yml:2:4: b: expected integer, got boolean true",
    ]


def test_dotted_quotes_ambiguous_keys() -> None:
    assert dotted(("fields", "")) == "fields['']"
    assert dotted(("fields", "a.b")) == "fields['a.b']"
    assert dotted(("fields", "Favorite Color")) == "fields.Favorite Color"
    assert dotted(("x", " y")) == "x[' y']"
