"""The SQL a warehouse runs for the diff's first phase, one dialect per class, all in this module.

For `diff: hashes` and `diff: warehouse` (docs/diff-locations.md) the warehouse computes, for each row
of a sync's model, the key as Reflow spells it and a 64-bit hash of the mapped fields' normalised values:

    SELECT <key> AS __key, <hash> AS __hash FROM (<model>) AS m

* **The key** is the text the local diff gives the same row (`diff.key_expr`): a single column as its
  text, a composite key as a JSON array of the parts' texts. Only integer and text key columns spell the
  same on both sides; another key type keeps the sync's diff local (`key_kinds_supported`).
* **The hash** is 64 bits of the row's canonical text as 16 hex digits (`Dialect.digest16`: the first 16 of
  its MD5; PostgreSQL's own hashtextextended there): the field names, then
  each value normalised as the local diff normalises it — timestamps in UTC to the millisecond, numbers
  as the bytes of a double, booleans as t/f, JSON and arrays as the dialect's canonical JSON text — each
  prefixed by its length (so no two rows share a text), NULL as `-`; the field names and their kinds
  come first (`names_digest`: a value turning from 1 to '1' is a change). A hash is compared only with hashes
  of the same recipe (`Dialect.recipe`, recorded with the snapshot): a sync that moves to another
  location or dialect re-hashes once, field by field, and sends nothing for rows that did not change.

DuckDB keeps the local diff's own recipe (`diff.hash_expr`), so moving between `local` and `hashes` on
DuckDB re-hashes nothing. PostgreSQL runs in tests against a real server; Snowflake, BigQuery, Redshift
and Databricks are generated (unit-tested SQL, experimental until run against the real service).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from engine.sql import letter_escape_chars, uppercase_escapes

HEX_DIGITS = 16          # a 64-bit hash


@dataclass(frozen=True)
class Field:
    """One hashed value: the destination field's name, the model column it reads (None: a constant,
    `text`) and the column's type as the warehouse describes it in DuckDB's words."""

    name: str
    column: str | None
    type: str = "VARCHAR"
    text: str | None = None


def kind(duck_type: str) -> str:
    """The normalisation a value of this (DuckDB-named) type gets: timestamptz, timestamp, date, float,
    int, bool, json, list, text or other."""
    t = duck_type.upper()
    if t.endswith("]"):          # before the timestamps: TIMESTAMP WITH TIME ZONE[] is a list
        return "list"
    if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
        return "timestamptz"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    if t == "DATE":
        return "date"
    if t in ("FLOAT", "DOUBLE", "REAL", "HUGEINT", "UHUGEINT") or t.startswith(("DECIMAL", "NUMERIC")):
        return "float"
    if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "INT"):
        return "int"
    if t == "BOOLEAN":
        return "bool"
    if t == "JSON" or t.startswith(("STRUCT", "MAP", "UNION")):
        return "json"
    if t in ("VARCHAR", "TEXT", "STRING") or t.startswith(("VARCHAR", "CHAR")):
        return "text"
    return "other"


KEY_KINDS = ("int", "text")


def key_kinds_supported(key_types: Sequence[str]) -> str | None:
    """None when every key column spells the same in the warehouse and locally; else why not."""
    bad = [t for t in key_types if kind(t) not in KEY_KINDS]
    if bad:
        return (f"a primary key column of type {bad[0]} (only integer and text keys are spelled the same "
                "on the warehouse and in Reflow)")
    return None


def names_digest(fields: Sequence[Field]) -> str:
    """The field names, in name order, each with its value's kind, as the first part of every row's
    canonical text. The kind counts because two kinds can spell a value alike (1 and '1', ARRAY['x'] and
    '["x"]') while Braze holds a number or an array, not a string: a column that changes kind is a
    candidate in every row (phase 2 then compares the values, as the local diff's typed hash makes it do)."""
    ordered = sorted([f.name, kind(f.type)] for f in fields)
    return hashlib.sha256(json.dumps(ordered, ensure_ascii=False).encode()).hexdigest()[:16]


class Dialect:
    """SQL for one warehouse. Subclasses give the quoting, the normalisation per kind, MD5 and text
    functions; `hashed` and `key` are built from them the same way for every dialect."""

    name: ClassVar[str] = ""
    experimental: ClassVar[bool] = False
    hash_function: ClassVar[str] = "md5"      # the recipe's name for `digest16`
    recipe_version: ClassVar[int] = 2

    @property
    def recipe(self) -> str:
        """Names the hash function: snapshots hashed by another recipe are re-hashed once (v2: the
        fields' kinds enter the hash; PostgreSQL's v3: hashtextextended instead of MD5; its v4: dates and
        times by their binary form instead of to_char)."""
        return f"{self.name}-{self.hash_function}/v{self.recipe_version}"

    # ---------------------------------------------------------------- per dialect
    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def literal(self, text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def as_text(self, sql: str) -> str:
        return f"CAST({sql} AS VARCHAR)"

    def length(self, sql: str) -> str:
        return f"length({sql})"

    def concat(self, parts: Sequence[str]) -> str:
        return " || ".join(parts)

    def md5_hex(self, sql: str) -> str:
        return f"md5({sql})"

    def substr16(self, sql: str) -> str:
        return f"substr({sql}, 1, {HEX_DIGITS})"

    def digest16(self, text_sql: str) -> str:
        """A text's 64-bit hash as 16 hex digits: the first 16 of its MD5."""
        return self.substr16(self.md5_hex(text_sql))

    def json_string(self, text_sql: str) -> str:
        """A text as a JSON string literal (quoted, escaped), for composite keys."""
        raise NotImplementedError

    def key_text(self, sql: str) -> str:
        """A key column's value as the text Reflow lands it as (NULL stays NULL)."""
        return self.as_text(sql)

    def normalised(self, column: str, kind_: str) -> str:
        """The value of `column` (a SQL reference) as canonical text; NULL stays NULL."""
        raise NotImplementedError

    # ---------------------------------------------------------------- shared
    def column(self, name: str) -> str:
        return f"m.{self.quote(name)}"

    def key(self, primary_key: Sequence[str]) -> str:
        """The key's text, as `diff.key_expr` spells it (NULL when a part is NULL)."""
        if len(primary_key) == 1:
            return self.key_text(self.column(primary_key[0]))
        nulls = " OR ".join(f"{self.column(k)} IS NULL" for k in primary_key)
        parts = [self.json_string(self.key_text(self.column(k))) for k in primary_key]
        joined = self.concat([self.literal("[")] + _interleave(parts, self.literal(",")) + [self.literal("]")])
        return f"CASE WHEN {nulls} THEN NULL ELSE {joined} END"

    def piece(self, value: str) -> str:
        """A normalised value with its length in front (`5:hello`), or `-` for NULL."""
        return f"coalesce({self.concat([self.as_text(self.length(value)), self.literal(':'), value])}, '-')"

    def row_hash(self, fields: Sequence[Field]) -> str:
        """16 hex digits: the MD5 of the names' digest and every field's piece, in name order."""
        parts = [self.literal(names_digest(fields))]
        for f in sorted(fields, key=lambda f: f.name):
            value = (self.literal(f.text) if f.column is None and f.text is not None else
                     "NULL" if f.column is None else self.normalised(self.column(f.column), kind(f.type)))
            parts += [self.literal("|"), self.piece(value)]
        return self.digest16(self.concat(parts))

    def hashed(self, model_sql: str, primary_key: Sequence[str], fields: Sequence[Field],
               extra: Sequence[tuple[str, str]] = ()) -> str:
        """The query giving each model row's `__key` and `__hash` (16 hex digits), and the `extra` model
        columns under their field names ((field, column) pairs)."""
        more = "".join(f", {self.column(c)} AS {self.quote(f)}" for f, c in extra)
        return (f"SELECT {self.key(primary_key)} AS __key, {self.row_hash(fields)} AS __hash{more}\n"
                f"FROM (\n{_body(model_sql)}\n) AS m")

    def rows(self, model_sql: str, primary_key: Sequence[str], fields: Sequence[Field], keys: Sequence[str] | None) -> str:
        """The model's rows (each field's column under its own name, `__key`, `__hash`) whose key is in
        `keys` (literals; None: every row)."""
        cols = "".join(f", {self.column(c)} AS {self.quote(c)}" for c in sorted({f.column for f in fields if f.column}))
        inner = (f"SELECT {self.key(primary_key)} AS __key, {self.row_hash(fields)} AS __hash{cols}\n"
                 f"FROM (\n{_body(model_sql)}\n) AS m")
        if keys is None:
            return inner
        values = ", ".join(f"({self.literal(k)})" for k in keys)
        return f"SELECT * FROM ({inner}) AS k WHERE __key IN (SELECT v FROM (VALUES {values}) AS l(v))"

    def keyed(self, model_sql: str, primary_key: Sequence[str]) -> str:
        """Each model row's `__key`."""
        return f"SELECT {self.key(primary_key)} AS __key FROM (\n{_body(model_sql)}\n) AS m"

    def key_problems(self, model_sql: str, primary_key: Sequence[str]) -> str:
        """The keys that are NULL or appear more than once (normally no row)."""
        keyed = self.keyed(model_sql, primary_key)
        return (f"SELECT __key FROM ({keyed}) AS k WHERE __key IS NULL OR __key IN "
                f"(SELECT __key FROM ({keyed}) AS d GROUP BY __key HAVING count(*) > 1)")

    def key_stats(self, model_sql: str, primary_key: Sequence[str]) -> str:
        """One row: the model's rows, its NULL keys, its distinct keys."""
        keyed = self.keyed(model_sql, primary_key)
        return (f"SELECT count(*) AS total, count(*) - count(__key) AS nulls, count(DISTINCT __key) AS distinct_keys "
                f"FROM ({keyed}) AS k")

    def shared_identity(self, model_sql: str, primary_key: Sequence[str], identity: Sequence[tuple[str, str]]) -> str:
        """The rows whose identity ((field, column) pairs, all set) another row has too (normally none)."""
        body = _body(model_sql)
        cols = ", ".join(self.column(c) for _, c in identity)
        named = ", ".join(f"{self.column(c)} AS {self.quote(f)}" for f, c in identity)
        set_ = " AND ".join(f"{self.column(c)} IS NOT NULL" for _, c in identity)
        on = " AND ".join(f"k.{self.quote(f)} = d.{self.quote(f)}" for f, _ in identity)
        return (f"SELECT k.* FROM (SELECT {self.key(primary_key)} AS __key, {named} FROM (\n{body}\n) AS m "
                f"WHERE {set_}) AS k JOIN (SELECT {named} FROM (\n{body}\n) AS m WHERE {set_} GROUP BY {cols} "
                f"HAVING count(*) > 1) AS d ON {on}")

    def values_per_group(self, model_sql: str, group: tuple[str, str], field: tuple[str, str]) -> str:
        """The distinct (group, field) values of the groups (group set) with more than one value of the
        field (a null one counts): normally none. Pairs are (field, column)."""
        body = _body(model_sql)
        gc, fc = self.column(group[1]), self.column(field[1])
        pairs = f"SELECT DISTINCT {gc} AS g, {fc} AS v FROM (\n{body}\n) AS m WHERE {gc} IS NOT NULL"
        return (f"SELECT d.g AS {self.quote(group[0])}, d.v AS {self.quote(field[0])} FROM ({pairs}) AS d "
                f"WHERE d.g IN (SELECT e.g FROM ({pairs}) AS e GROUP BY e.g HAVING count(*) > 1)")


def _body(model_sql: str) -> str:
    return model_sql.rstrip().rstrip(";")


def _interleave(parts: Sequence[str], sep: str) -> list[str]:
    out: list[str] = []
    for i, p in enumerate(parts):
        if i:
            out.append(sep)
        out.append(p)
    return out


ISO_MS = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'


class Postgres(Dialect):
    name = "postgres"
    hash_function = "hte"
    recipe_version = 4

    def digest16(self, text_sql: str) -> str:
        """hashtextextended: PostgreSQL's own 64-bit text hash (the one hash partitioning keeps stable
        across releases), about a third of MD5's cost per row here (1M rows of 12 columns: the whole row
        hash 3.0 s → 2.1 s); over the bytes of the text (COLLATE "C": a nondeterministic collation would
        hash equal-comparing texts alike), as 16 hex digits (a negative value as its two's complement)."""
        return f"lpad(to_hex(hashtextextended(({text_sql}) COLLATE \"C\", 0)), {HEX_DIGITS}, '0')"

    def piece(self, value: str) -> str:
        """The value quoted as a literal (`'it''s'`, backslashes as E'…'), `NULL` for NULL: as unambiguous as
        a length prefix, and the value is computed once (a length prefix spells it twice, and PostgreSQL then
        normalised every value twice: to_char and float8send are most of the hash's cost)."""
        return f"quote_nullable({value})"

    def as_text(self, sql: str) -> str:
        return f"({sql})::text"

    def json_string(self, text_sql: str) -> str:
        """to_json's spelling, but for the nine control characters whose `\\u00XX` escape holds a letter,
        which PostgreSQL writes in lowercase and DuckDB (the local diff's key) in uppercase: a composite key
        holding one would be another key after a switch of diff location. Only the (rare) texts holding one
        are respelled."""
        plain = f"to_json({text_sql})::text"
        return f"CASE WHEN {text_sql} ~ '{letter_escape_chars()}' THEN {uppercase_escapes(plain)} ELSE {plain} END"

    def key_text(self, sql: str) -> str:
        # the type's output text, as COPY lands it for the local diff (concat() prints it so; format() would
        # put a '%' in SQL sent with parameters): a cast differs for some types (char(n) drops its padding,
        # inet gains a /32), and a key spelled otherwise than locally is another key
        # COLLATE "C": keys compare (mirror joins, key checks) byte for byte, as Reflow's snapshot compares
        # them, whatever the column's collation (a case-insensitive ICU key would join 'Bob' to 'bob')
        return f"(CASE WHEN {sql} IS NOT NULL THEN concat({sql}) END) COLLATE \"C\""

    def normalised(self, column: str, kind_: str) -> str:
        # dates and times by their binary form (timestamp_send: microseconds since 2000, date_send: days),
        # in hex: the instant itself, whatever the session's DateStyle or TimeZone, its era and infinity
        # included, cheaper than to_char (1M rows of 12 columns, serial: the whole row hash 2.4 s → 1.7 s);
        # cut to the millisecond first, as the local normal form is, so a change Braze cannot see is none
        return {
            "timestamptz": f"encode(timestamp_send(date_trunc('milliseconds', ({column}) AT TIME ZONE 'UTC')), 'hex')",
            "timestamp": f"encode(timestamp_send(date_trunc('milliseconds', ({column})::timestamp)), 'hex')",
            "date": f"encode(date_send(({column})::date), 'hex')",
            "float": f"encode(float8send(({column})::float8), 'hex')",
            "int": f"({column})::text",
            "bool": f"CASE WHEN {column} THEN 't' WHEN NOT {column} THEN 'f' END",
            "json": f"(({column})::jsonb)::text",
            "list": f"(to_jsonb({column}))::text",
        }.get(kind_, f"({column})::text")


class Redshift(Postgres):
    """Redshift: PostgreSQL 8's syntax, no float8send, JSON as SUPER."""

    name = "redshift"
    experimental = True
    hash_function = Dialect.hash_function        # no hashtextextended on Redshift: MD5
    recipe_version = Dialect.recipe_version
    digest16 = Dialect.digest16
    piece = Dialect.piece           # no quote_nullable on Redshift: the length prefix

    def as_text(self, sql: str) -> str:
        return f"CAST({sql} AS VARCHAR(65535))"

    def key_text(self, sql: str) -> str:
        return self.as_text(sql)          # Redshift's concat() takes two arguments

    def json_string(self, text_sql: str) -> str:
        escaped = f"replace(replace({text_sql}, '\\\\', '\\\\\\\\'), '\"', '\\\\\"')"
        return f"'\"' || {escaped} || '\"'"

    def normalised(self, column: str, kind_: str) -> str:
        return {
            "timestamptz": f"to_char(convert_timezone('UTC', {column}), '{ISO_MS}')",
            "timestamp": f"to_char({column}, '{ISO_MS}')",
            "date": f"to_char({column}, 'YYYY-MM-DD')",
            # 17 significant digits identify a double exactly
            "float": f"to_char(CAST({column} AS DOUBLE PRECISION), '9.9999999999999999EEEE')",
            "int": self.as_text(column),
            "bool": f"CASE WHEN {column} THEN 't' WHEN NOT {column} THEN 'f' END",
            "json": f"json_serialize({column})",
            "list": f"json_serialize({column})",
        }.get(kind_, self.as_text(column))


class Snowflake(Dialect):
    name = "snowflake"
    experimental = True

    def as_text(self, sql: str) -> str:
        return f"TO_VARCHAR({sql})"

    def json_string(self, text_sql: str) -> str:
        return f"TO_JSON(TO_VARIANT({text_sql}))"

    def normalised(self, column: str, kind_: str) -> str:
        return {
            "timestamptz": f"TO_VARCHAR(CONVERT_TIMEZONE('UTC', {column}), 'YYYY-MM-DD\"T\"HH24:MI:SS.FF3\"Z\"')",
            "timestamp": f"TO_VARCHAR({column}, 'YYYY-MM-DD\"T\"HH24:MI:SS.FF3\"Z\"')",
            "date": f"TO_VARCHAR({column}, 'YYYY-MM-DD')",
            "float": f"TO_VARCHAR(TO_DOUBLE({column}), 'TME')",
            "int": f"TO_VARCHAR({column})",
            "bool": f"IFF({column}, 't', 'f')",
            "json": f"TO_JSON({column})",          # TO_JSON sorts object keys: canonical
            "list": f"TO_JSON({column})",
        }.get(kind_, f"TO_VARCHAR({column})")


class BigQuery(Dialect):
    name = "bigquery"
    experimental = True

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "\\`") + "`"

    def literal(self, text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def as_text(self, sql: str) -> str:
        return f"CAST({sql} AS STRING)"

    def md5_hex(self, sql: str) -> str:
        return f"TO_HEX(MD5({sql}))"

    def concat(self, parts: Sequence[str]) -> str:
        return f"CONCAT({', '.join(parts)})"

    def json_string(self, text_sql: str) -> str:
        return f"TO_JSON_STRING({text_sql})"

    def normalised(self, column: str, kind_: str) -> str:
        return {
            "timestamptz": f"FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%E3SZ', {column}, 'UTC')",
            "timestamp": f"FORMAT_DATETIME('%Y-%m-%dT%H:%M:%E3SZ', CAST({column} AS DATETIME))",
            "date": f"FORMAT_DATE('%Y-%m-%d', {column})",
            "float": f"FORMAT('%.17g', CAST({column} AS FLOAT64))",
            "int": f"CAST({column} AS STRING)",
            "bool": f"IF({column}, 't', 'f')",
            "json": f"TO_JSON_STRING({column})",
            "list": f"TO_JSON_STRING({column})",
        }.get(kind_, f"CAST({column} AS STRING)")


class Databricks(Dialect):
    name = "databricks"
    experimental = True

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def as_text(self, sql: str) -> str:
        return f"CAST({sql} AS STRING)"

    def json_string(self, text_sql: str) -> str:
        return f"to_json(named_struct('k', {text_sql}))"

    def concat(self, parts: Sequence[str]) -> str:
        return f"concat({', '.join(parts)})"

    def key(self, primary_key: Sequence[str]) -> str:
        if len(primary_key) == 1:
            return self.as_text(self.column(primary_key[0]))
        nulls = " OR ".join(f"{self.column(k)} IS NULL" for k in primary_key)
        parts = ", ".join(self.as_text(self.column(k)) for k in primary_key)
        return f"CASE WHEN {nulls} THEN NULL ELSE to_json(array({parts})) END"

    def normalised(self, column: str, kind_: str) -> str:
        return {
            "timestamptz": f"date_format(to_utc_timestamp({column}, current_timezone()), \"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\")",
            "timestamp": f"date_format({column}, \"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\")",
            "date": f"date_format({column}, 'yyyy-MM-dd')",
            "float": f"format_string('%.17g', CAST({column} AS DOUBLE))",
            "int": f"CAST({column} AS STRING)",
            "bool": f"CASE WHEN {column} THEN 't' WHEN NOT {column} THEN 'f' END",
            "json": f"to_json({column})",
            "list": f"to_json({column})",
        }.get(kind_, f"CAST({column} AS STRING)")


DIALECTS: dict[str, type[Dialect]] = {d.name: d for d in (Postgres, Redshift, Snowflake, BigQuery, Databricks)}


def dialect_for(adapter_type: str) -> Dialect | None:
    """The dialect of a dbt adapter type (None: Reflow has no SQL for it; its syncs diff locally)."""
    cls = DIALECTS.get(adapter_type.lower())
    return cls() if cls else None
