"""The state file and everything that reads or writes its tables.

No module outside this package names a state table (`tests/test_layers.py` checks it):
    store.py      `State`: opening, the schema and its migrations, the snapshot per sync, folding
                  acknowledgements, recovery after a crash, `transaction()`
    plans.py      saving and loading plans (`plans`, `plan_syncs`)
    plan_rows.py  one sync's plan rows: written by the planner, read by `apply`, `show` and reports
    runs.py       what an apply records: outcomes, pending rows, row errors, the crash frontier
    lock.py, backup.py, live.py   the writer's lock, backups, the live status file
    remote.py, remote_lock.py, objects.py   a state kept in an object store (s3://…): the working copy and
                  its uploads, the lock across machines, the store itself (obstore)
"""

from engine.state.store import (
    DB,
    SCHEMA_VERSION,
    UNKNOWN,
    State,
    SyncState,
    default_backup_path,
    new_id,
    now,
)

__all__ = ["DB", "SCHEMA_VERSION", "UNKNOWN", "State", "SyncState", "default_backup_path", "new_id", "now"]
