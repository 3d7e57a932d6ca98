"""Documents found valid are not validated again (engine/known_valid.py): what is recorded, what is not,
and that any change to the data, the schema or Reflow's version is checked by jsonschema again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import errors, known_valid, project, yamlfile
from engine.yamlfile import Document

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}},
          "additionalProperties": False}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(known_valid.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(known_valid, "_seen", {})
    return tmp_path / "cache" / known_valid.FILE


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every document jsonschema is asked about (by validation, and by the project file's coercion)."""
    asked: list[Any] = []
    real = yamlfile.schema_errors

    def counted(schema: Any, data: Any) -> Any:
        asked.append(data)
        return real(schema, data)

    monkeypatch.setattr(yamlfile, "schema_errors", counted)
    monkeypatch.setattr(project, "schema_errors", counted)
    return asked


def doc(data: Any) -> Document:
    return Document("x.yml", data, {(): (1, 1)}, {(): (1, 1)})


def test_a_valid_document_is_checked_once(cache: Path, checks: list[Any]) -> None:
    assert yamlfile.validate(doc({"n": 1}), SCHEMA) == []
    assert yamlfile.validate(doc({"n": 1}), SCHEMA) == []
    assert checks == [{"n": 1}]
    assert len(cache.read_text().split()) == 1
    known_valid._seen.clear()                   # another process: reads the file
    assert known_valid.seen(SCHEMA, {"n": 1})


def test_an_invalid_document_is_never_recorded_and_always_explained(cache: Path, checks: list[Any]) -> None:
    for _ in range(2):
        [problem] = yamlfile.validate(doc({"n": "1"}), SCHEMA)
        assert "expected integer" in problem.message
    assert len(checks) == 2
    assert not cache.exists()


@pytest.mark.parametrize("other", [{"n": "1"}, {"n": 1.0}, {"n": True}, {"s": "1"}, {"n": 1, "s": "x"}])
def test_types_and_keys_make_another_digest(cache: Path, other: dict[str, Any]) -> None:
    known_valid.remember(SCHEMA, {"n": 1})
    assert known_valid.seen(SCHEMA, {"n": 1})
    assert not known_valid.seen(SCHEMA, other)


def test_another_schema_or_version_is_checked_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    known_valid.remember(SCHEMA, {"n": 1})
    assert not known_valid.seen({**SCHEMA, "required": ["s"]}, {"n": 1})
    monkeypatch.setattr(known_valid, "__version__", "99.0.0")
    assert not known_valid.seen(SCHEMA, {"n": 1})


def test_a_document_holding_a_secret_is_not_recorded(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_secrets", ())
    errors.register_secret("s3cr3t-value-123")
    assert known_valid.digest(SCHEMA, {"s": "token s3cr3t-value-123"}) is None
    known_valid.remember(SCHEMA, {"s": "token s3cr3t-value-123"})
    assert not cache.exists()


def test_values_of_other_types_are_not_recorded(cache: Path) -> None:
    assert known_valid.digest(SCHEMA, {"n": object()}) is None
    assert known_valid.digest(SCHEMA, {"n": (1, 2)}) is None


def test_an_empty_cache_dir_setting_turns_the_cache_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        checks: list[Any]) -> None:
    monkeypatch.setenv(known_valid.CACHE_ENV, "")
    monkeypatch.setattr(known_valid, "_seen", {})
    for _ in range(2):
        assert yamlfile.validate(doc({"n": 1}), SCHEMA) == []
    assert len(checks) == 2


def test_the_default_folder_is_the_users_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(known_valid.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert known_valid.cache_file() == tmp_path / "reflow" / "known-valid"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert known_valid.cache_file() == Path.home() / ".cache" / "reflow" / "known-valid"


def test_the_file_keeps_the_newest_digests_and_other_processes_records(cache: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_valid, "KEEP", 3)
    for n in range(5):
        known_valid.remember(SCHEMA, {"n": n})
    kept = cache.read_text().split()
    assert len(kept) == 3 and kept[-1] == known_valid.digest(SCHEMA, {"n": 4})
    other = known_valid.digest(SCHEMA, {"n": 99})
    cache.write_text(cache.read_text() + f"{other}\n")      # recorded by another process meanwhile
    known_valid.remember(SCHEMA, {"n": 5})
    assert other in cache.read_text().split()


def test_an_unwritable_cache_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(known_valid.CACHE_ENV, str(blocker / "below"))
    monkeypatch.setattr(known_valid, "_seen", {})
    known_valid.remember(SCHEMA, {"n": 1})         # no error
    known_valid._seen.clear()                       # the next process checks again
    assert not known_valid.seen(SCHEMA, {"n": 1})


def test_a_garbled_cache_file_is_ignored(cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"\xff\xfe not digests\n" + b"z" * 64 + b"\n")
    assert not known_valid.seen(SCHEMA, {"n": 1})
    known_valid.remember(SCHEMA, {"n": 1})
    known_valid._seen.clear()
    assert known_valid.seen(SCHEMA, {"n": 1})


def test_the_project_file_with_templates_is_checked_once(cache: Path, checks: list[Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """reflow_project.yml: templates coerced where the schema wants a number; the rendered, coerced data
    is what is recorded, and an environment that renders another value is checked again."""
    (tmp_path / "reflow_project.yml").write_text(
        "name: p\nconnections:\n  braze:\n    type: braze\n    instance: iad-01\n"
        "    api_key: \"{{ env_var('BRAZE_API_KEY', 'k') }}\"\n"
        "    timeout: \"{{ env_var('T', '30') }}\"\n")
    first = project.load_project(tmp_path)
    asked = len(checks)
    again = project.load_project(tmp_path)
    assert again.connections["braze"].timeout == first.connections["braze"].timeout == 30.0
    assert len(checks) == asked + 1           # coercion asks about the uncoerced data; the result is known
    monkeypatch.setenv("T", "not a number")
    with pytest.raises(errors.ProjectError, match="timeout"):
        project.load_project(tmp_path)
