"""What an apply records: per run, the outcome of each row (`acks`, `uncertain`, `pending`, `row_errors`),
its counters (`runs`), and the crash frontier (`frontier`).

The runner decides what each answer means; these functions write it, each group of outcomes in one
transaction. `State.fold_acks` then advances the snapshot from `acks` and `uncertain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.plan import REJECTED_REASON, SEND, SKIP, UNKNOWN_REASON
from engine.state.plan_rows import LOCAL, TABLE, SyncRows
from engine.state.store import DB, State, now


@dataclass(frozen=True)
class LocalRecord:
    """What `record_local` did for a sync before sending."""

    recorded: int                         # rows that advanced the snapshot without sending
    invalid: list[tuple[str, str]]        # (key, reason) of rows the plan will not send
    dropped: int                          # rows sent without a field Braze would refuse
    noted: int                            # rows sent with a note


def record_local(state: State, rows: SyncRows, run_id: str, *, append_only: bool) -> LocalRecord:
    """Before sending (one transaction): rows that send nothing (skip, rehash, baseline) advance the
    snapshot; invalid rows stay pending with their reason; rows sent without a field or with a note, and
    events the plan stops resending, are listed for `reflow errors`."""
    st = state.ensure_sync(rows.sync)
    where, params = rows.where()
    local = f"{where} AND status IN {LOCAL}"
    n = rows.recorded_locally()
    invalid = [(k, r) for k, r, _ in rows.invalid()]
    dropped, _, noted, _ = rows.with_reasons()
    keep_removed = "AND op <> 'removed'" if append_only else ""
    # (the statements over every plan row run only where they can find something: a first run's baseline
    # of millions of rows has an empty snapshot and, mostly, no pending row)
    pending = state.pending_count(rows.sync) > 0
    with state.transaction() as con:
        # a pending row still in the model, or still in the snapshot, is in every plan (as a retry); one this
        # plan does not hold left the model before it ever landed (or came back to what Braze holds): not
        # pending any more, and a row that returns later starts afresh (e.g. its wait for a profile)
        if pending:
            con.execute(f"DELETE FROM {DB}.pending WHERE sync = ? AND key NOT IN (SELECT key FROM {rows.rows} "
                        f"WHERE {where})", [rows.sync, *params])
        if n:
            if (con.execute(f"SELECT EXISTS (SELECT 1 FROM {st.table})").fetchone() or (False,))[0]:
                con.execute(f"DELETE FROM {st.table} WHERE key IN (SELECT key FROM {rows.rows} WHERE {local} "
                            f"{keep_removed})", params)
            con.execute(f"INSERT INTO {st.table} SELECT key, new_hash, new_row FROM {rows.rows} "
                        f"WHERE {local} AND op <> 'removed'", params)
            if pending:
                con.execute(f"DELETE FROM {DB}.pending WHERE sync = ? AND key IN (SELECT key FROM {rows.rows} "
                            f"WHERE {local})", [rows.sync, *params])
            bump_version(con, rows.sync)
            con.execute(f"UPDATE {DB}.runs SET skipped = skipped + ? WHERE run_id = ?", [n, run_id])
        if invalid:         # not attempted either: history's pending counts them, as apply's summary does
            con.execute(f"UPDATE {DB}.runs SET not_attempted = not_attempted + ? WHERE run_id = ?",
                        [len(invalid), run_id])
            mark_pending(con, rows.sync, [(k, f"invalid: {r}") for k, r in invalid], run_id)
        if append_only:      # an event the plan stops resending (its sends never got an answer): listed
            con.execute(f"INSERT INTO {DB}.row_errors SELECT ?, sync, key, reason, item, ? FROM {TABLE} "
                        f"WHERE {where} AND status = '{SKIP}' AND retry", [run_id, now(), *params])
        if dropped or noted:     # `reflow errors` lists them
            con.execute(f"INSERT INTO {DB}.row_errors SELECT ?, sync, key, reason, item, ? FROM {TABLE} "
                        f"WHERE {where} AND status = '{SEND}' AND reason IS NOT NULL", [run_id, now(), *params])
    return LocalRecord(n, invalid, int(dropped), int(noted))


def bump_version(con: Any, sync: str) -> None:
    """The snapshot of `sync` moves (or is about to): plans made before are stale from now on."""
    con.execute(f"UPDATE {DB}.syncs SET version = version + 1, updated_at = ? WHERE name = ?", [now(), sync])


def mark_pending(con: Any, sync: str, rows: Sequence[tuple[str, str]], run_id: str, *, waiting: bool = False) -> None:
    """Rows left undelivered, with why: shown by `status`, planned again (as retries) by the next plan.
    `unknowns` counts, per row, the sends that ended without a usable answer (reasons UNKNOWN_REASON…);
    `waiting_since` is when a row held back (`waiting`) first was, kept while it stays held back."""
    if not rows:
        return
    keys = [k for k, _ in rows]
    reasons = [r for _, r in rows]
    unknown = [r.startswith(UNKNOWN_REASON) for r in reasons]
    at = now()
    con.execute(f"""UPDATE {DB}.pending AS p SET reason = n.r, run_id = ?, at_time = ?,
                        unknowns = p.unknowns + n.u::INTEGER,
                        waiting_since = CASE WHEN ? THEN coalesce(p.waiting_since, ?::TIMESTAMP) END
                    FROM (SELECT unnest(?) AS k, unnest(?) AS r, unnest(?) AS u) AS n
                    WHERE p.sync = ? AND p.key = n.k""", [run_id, at, waiting, at, keys, reasons, unknown, sync])
    con.execute(f"""INSERT INTO {DB}.pending (sync, key, reason, run_id, at_time, unknowns, waiting_since)
                    SELECT ?, n.k, n.r, ?, ?, n.u::INTEGER, CASE WHEN ? THEN ?::TIMESTAMP END
                    FROM (SELECT unnest(?) AS k, unnest(?) AS r, unnest(?) AS u) AS n
                    WHERE n.k NOT IN (SELECT key FROM {DB}.pending WHERE sync = ?)""",
                [sync, run_id, at, waiting, at, keys, reasons, unknown, sync])


def move_frontier(con: Any, run_id: str, plan_id: str, sync: str, seq: int) -> None:
    """Before requests go out: the highest plan row they carry (see `State.recover`)."""
    con.execute(f"INSERT INTO {DB}.frontier VALUES (?, ?, ?, ?)", [run_id, plan_id, sync, seq])


@dataclass
class Outcomes:
    """One group of answered requests of a sync, sorted by what Braze's answers mean."""

    acked: list[int] = field(default_factory=list)                    # plan-row numbers
    uncertain: list[int] = field(default_factory=list)                # plan-row numbers
    rejected: list[tuple[str, str, str]] = field(default_factory=list)    # (key, reason, item)
    left: list[tuple[str, str]] = field(default_factory=list)         # (key, reason): not delivered
    held: list[tuple[str, str]] = field(default_factory=list)         # (key, reason): held back (waiting)
    notes: list[tuple[str, str, str]] = field(default_factory=list)   # (key, note, item): acknowledged
    not_attempted: int = 0          # rows counted as not attempted in the run (unknown and waiting too)
    data_points: int = 0


def record_outcomes(state: State, plan_id: str, sync: str, run_id: str, found: Outcomes, requests: int) -> None:
    """One transaction: acknowledged rows go to `acks`; rows sent without a usable answer to `uncertain`;
    rejected rows to `pending` and `row_errors`; rows not delivered to `pending` with the reason; the
    run's counters move (`requests` is the run's total so far)."""
    with state.transaction() as con:
        if found.acked:
            con.execute(f"INSERT INTO {DB}.acks SELECT ?, ?, unnest(?)", [plan_id, sync, found.acked])
        if found.uncertain:
            con.execute(f"INSERT INTO {DB}.uncertain SELECT ?, ?, unnest(?)", [plan_id, sync, found.uncertain])
        if found.rejected:
            keys, reasons, items = (list(c) for c in zip(*found.rejected, strict=True))
            mark_pending(con, sync, [(k, REJECTED_REASON + r) for k, r in zip(keys, reasons, strict=True)], run_id)
            con.execute(f"INSERT INTO {DB}.row_errors SELECT ?, ?, unnest(?), unnest(?), unnest(?), ?",
                        [run_id, sync, keys, reasons, items, now()])
        mark_pending(con, sync, found.left, run_id)
        mark_pending(con, sync, found.held, run_id, waiting=True)
        if found.notes:
            keys, notes, items = (list(c) for c in zip(*found.notes, strict=True))
            con.execute(f"INSERT INTO {DB}.row_errors SELECT ?, ?, unnest(?), unnest(?), unnest(?), ?",
                        [run_id, sync, keys, notes, items, now()])
        con.execute(
            f"UPDATE {DB}.runs SET acknowledged = acknowledged + ?, rejected = rejected + ?, "
            "not_attempted = not_attempted + ?, requests = ?, data_points = data_points + ? WHERE run_id = ?",
            [len(found.acked), len(found.rejected), found.not_attempted, requests, found.data_points, run_id])


def row_errors(state: State, sync: str | None = None, run_id: str | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
    """Rejections and notes, newest first (what `reflow errors` lists)."""
    if state.empty:
        return []
    clauses, params = [], []
    if sync:
        clauses.append("sync = ?")
        params.append(sync)
    if run_id:
        clauses.append("run_id = ?")
        params.append(run_id)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    cur = state.con.execute(
        f"SELECT run_id, sync, key, reason, item, at_time AS at FROM {DB}.row_errors {where} "
        f"ORDER BY at_time DESC, key LIMIT {int(limit)}", params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

