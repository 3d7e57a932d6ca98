"""`diff: warehouse`: Reflow's mirror of a sync's snapshot hashes, kept on the warehouse.

    <mirror_schema>.reflow_mirror_syncs        sync, digest, version, recipe, rows, updated_at
    <mirror_schema>."reflow_mirror__<sync>"    key, hash (16 hex digits; NULL: unknown, always a candidate),
                                               checksum (generated: 60 bits of the MD5 of `key,hash`)
                                               (a name over PostgreSQL's 63 bytes: cut, with a digest of the sync)

The local snapshot stays the source of truth. The mirror is current when its recorded `digest` equals
the snapshot's (`State.snapshot_digest`: row count and an order-free checksum of every (key, hash)), so
a mirror left behind by a crash, a restored or copied state file, another state sharing the schema, or a
table dropped by hand is rebuilt from the snapshot before phase 1 reads it. After a sync's send its
changed keys are written (only those), conditionally on the mirror still holding the digest it had.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import WarehouseError
from engine.warehouse.base import Warehouse
from engine.warehouse.dialects import Dialect

SYNCS = "reflow_mirror_syncs"
# each row's share of the digest, kept by PostgreSQL as a stored generated column: written with the row (an
# UPDATE by hand recomputes it; it cannot be written itself), so checking the digest on every plan sums one
# column (10M rows: 0.6 s) instead of hashing every row again (5.6 s)
CHECKSUM = "('x' || substr(md5(key || ',' || coalesce(hash, '')), 1, 15))::bit(60)::bigint"


class Mirror:
    def __init__(self, warehouse: Warehouse, dialect: Dialect, schema: str, sync: str) -> None:
        self.warehouse, self.dialect, self.sync = warehouse, dialect, sync
        q = dialect.quote
        self.schema = q(schema)
        self.syncs = f"{self.schema}.{q(SYNCS)}"
        self.table = f"{self.schema}.{q(table_name(sync))}"

    def recorded(self) -> tuple[str, int, str] | None:
        """(digest, version, recipe) the mirror records; None when it has none (never built, dropped)."""
        # a mirror without its generated checksum (made by an older Reflow, or its expression dropped by
        # hand), or whose checksum is generated from other columns than `key` and `hash` (a column renamed
        # and replaced by hand: the expression follows the old one, so the checksums would not see a new
        # hash), is as good as none: rebuilt
        exists = self.warehouse.query(
            "SELECT to_regclass(%s) IS NOT NULL AND coalesce((SELECT array_agg(c.attname::text ORDER BY "
            "c.attname::text COLLATE \"C\") FROM pg_attribute AS a JOIN pg_attrdef AS d ON d.adrelid = "
            "a.attrelid AND d.adnum = a.attnum JOIN pg_depend AS dep ON dep.classid = 'pg_attrdef'::regclass "
            "AND dep.objid = d.oid AND dep.refobjid = a.attrelid AND dep.refobjsubid > 0 JOIN pg_attribute AS c "
            "ON c.attrelid = a.attrelid AND c.attnum = dep.refobjsubid WHERE a.attrelid = to_regclass(%s) AND "
            "a.attname = 'checksum' AND a.attgenerated = 's' AND NOT a.attisdropped), '{}') "
            "= ARRAY['checksum', 'hash', 'key']",
            [self.syncs, self.table])
        if not exists or not exists[0][0]:
            return None
        rows = self.warehouse.query(f"SELECT digest, version, recipe FROM {self.syncs} WHERE sync = %s", [self.sync])
        return (str(rows[0][0]), int(rows[0][1]), str(rows[0][2])) if rows else None

    def digest(self) -> str:
        """The digest of the (key, hash) rows the mirror holds, computed as State.snapshot_digest computes
        the snapshot's: what phase 1 will read, whatever the bookkeeping row says (each row's checksum is
        generated from its key and hash)."""
        rows = self.warehouse.query(f"SELECT count(*), coalesce(sum(checksum), 0) FROM {self.table}")
        return f"{int(rows[0][0])}:{int(rows[0][1])}"

    def _bookkeeping(self) -> list[tuple[str, Any]]:
        return [("sql", (f"CREATE SCHEMA IF NOT EXISTS {self.schema}", [])),
                ("sql", (f"CREATE TABLE IF NOT EXISTS {self.syncs} (sync text PRIMARY KEY, digest text NOT NULL, "
                         "version bigint NOT NULL, recipe text NOT NULL, rows bigint NOT NULL, "
                         "updated_at timestamptz NOT NULL DEFAULT now())", []))]

    def rebuild(self, csv: Path, *, digest: str, version: int, recipe: str, rows: int) -> None:
        """Replace the mirror with the snapshot's (key, hash) lines in `csv`, in one transaction."""
        with csv.open("rb") as data:
            self.warehouse.write([
                *self._bookkeeping(),
                ("sql", (f"DROP TABLE IF EXISTS {self.table}", [])),
                ("sql", (f"CREATE TABLE {self.table} (key text NOT NULL, hash text, "
                         f"checksum bigint GENERATED ALWAYS AS ({CHECKSUM}) STORED)", [])),
                ("copy", (f"COPY {self.table} (key, hash) FROM STDIN WITH (FORMAT csv)", data)),
                ("sql", (f"ALTER TABLE {self.table} ADD PRIMARY KEY (key)", [])),
                ("sql", (f"ANALYZE {self.table}", [])),
                ("sql", (f"INSERT INTO {self.syncs} (sync, digest, version, recipe, rows) VALUES (%s, %s, %s, %s, %s) "
                         "ON CONFLICT (sync) DO UPDATE SET digest = excluded.digest, version = excluded.version, "
                         "recipe = excluded.recipe, rows = excluded.rows, updated_at = now()",
                         [self.sync, digest, version, recipe, rows])),
            ])

    def update(self, csv: Path, *, was: str, digest: str, version: int, rows: int) -> None:
        """Write the changed keys in `csv` (key, hash, y|n: still in the snapshot) if the mirror still
        records digest `was`; else leave it (the next plan finds it stale and rebuilds it)."""
        current = f"EXISTS (SELECT 1 FROM {self.syncs} WHERE sync = %s AND digest = %s)"
        with csv.open("rb") as data:
            self.warehouse.write([
                ("sql", ("CREATE TEMP TABLE reflow_mirror_stage (key text NOT NULL, hash text, present text) "
                         "ON COMMIT DROP", [])),
                ("copy", ("COPY reflow_mirror_stage FROM STDIN WITH (FORMAT csv)", data)),
                ("sql", (f"DELETE FROM {self.table} AS m USING reflow_mirror_stage AS s WHERE m.key = s.key "
                         f"AND {current}", [self.sync, was])),
                ("sql", (f"INSERT INTO {self.table} (key, hash) SELECT key, hash FROM reflow_mirror_stage "
                         f"WHERE present = 'y' AND {current}", [self.sync, was])),
                ("sql", (f"UPDATE {self.syncs} SET digest = %s, version = %s, rows = %s, updated_at = now() "
                         "WHERE sync = %s AND digest = %s", [digest, version, rows, self.sync, was])),
            ])


def table_name(sync: str, limit: int = 63) -> str:
    """The mirror table of `sync`: `reflow_mirror__<sync>`, or, past PostgreSQL's identifier limit (63 bytes,
    where it silently cuts names, so two long sync names would share one table and rebuild it in turn), the
    name cut with a digest of the whole sync name."""
    name = "reflow_mirror__" + sync
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha256(sync.encode()).hexdigest()[:12]
    return name.encode()[:limit - len(digest) - 1].decode(errors="ignore") + "_" + digest


def scratch_csv() -> Path:
    """A private file for the mirror's CSV (the caller removes it)."""
    handle = tempfile.NamedTemporaryFile(prefix="reflow-mirror-", suffix=".csv", delete=False)
    handle.close()
    return Path(handle.name)


def require(warehouse: Warehouse) -> None:
    if not warehouse.mirror_writable:
        raise WarehouseError("this warehouse keeps no mirror of the snapshot (diff: warehouse)")
