"""The destination contract.

The planner asks a destination to turn each plan row into one payload item (or to
reject it as invalid), and to estimate requests, data points and send time. The
runner groups stored items into batches by `channel` and hands batches to `send`,
which returns one outcome per row. A destination never touches state or diff.

    plan row ──prepare()──► Item(channel, item_json, data_points) | Invalid(reason)
    items ──(runner, by batch_limits())──► Batch(keys, items) ──send()──► [RowResult(key, outcome, reason)]

Before planning, `project(columns)` fixes what the sync's snapshot holds: the destination fields
(under the destination's own names, e.g. Braze attribute names) and the model column each reads.
The planner diffs the model through that projection, so rows reach `prepare` keyed by destination
field, a mapping change is a change of fields, and model columns no field reads never plan anything.
`identity()` names where the rows go (endpoint, object, catalog, identifier): a snapshot belongs to
one identity, and a change of it starts the sync over.

The runner reads stored items in plan order and cuts them into requests of
`batch_limits(channel)` (objects per request, bytes of the comma-joined items); a request over
the byte budget is split by `batches()`.
`send` returns one result per batch position; `AllAcknowledged(keys)` says "every row
acknowledged" without building a result object per row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, overload


class Op(StrEnum):
    """What the diff found for a row (a str: compares equal to the text the state stores)."""

    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


class Outcome(StrEnum):
    """What became of one row a destination was asked to send."""

    ACKNOWLEDGED = "acknowledged"      # a parsed answer of the destination accepted the row
    REJECTED = "rejected"              # a parsed answer refused the row, with a reason
    NOT_ATTEMPTED = "not_attempted"    # the row certainly did not reach the destination (never sent, refused
                                       # before processing: 429, connection refused, DNS, TLS)
    UNKNOWN = "unknown"                # the request may have been applied, but no usable answer came back
                                       # (timeout, 5xx, connection lost after sending, an answer that is not
                                       # the destination's): the snapshot must not trust its old values
    WAITING = "waiting"                # held back, not sent: what the row needs is not there yet (its user's
                                       # profile); it stays pending and is planned again


ADDED, CHANGED, REMOVED = Op.ADDED, Op.CHANGED, Op.REMOVED
ACKNOWLEDGED, REJECTED, NOT_ATTEMPTED = Outcome.ACKNOWLEDGED, Outcome.REJECTED, Outcome.NOT_ATTEMPTED
UNKNOWN, WAITING = Outcome.UNKNOWN, Outcome.WAITING


@dataclass(frozen=True)
class Capabilities:
    """What a destination needs from the planner and the runner, as data: neither names a destination's
    objects. Batch limits are per channel (`Destination.batch_limits`); rates are the destination's own."""

    default_concurrency: int
    append_only: bool = False           # events/purchases: a row is sent once, changes are reported
    sends_removed: bool = False         # whether removed rows produce items (on_removed unset/delete)
    apply_rank: int = 1                 # syncs of one apply go in rank order (Braze: user deletes last)
    # a row is a membership (cohorts): an added row sent without a usable answer may not be a member, so
    # every field of it, those naming its object too, becomes UNKNOWN (a changed row's changed fields only)
    membership: bool = False
    object_word: str = "destination object"     # what one row addresses, in messages ("Braze user")
    # identity keys that say where the objects live (not how rows name them): a sync restarted with these
    # unchanged takes over the objects its old snapshot addressed
    place: tuple[str, ...] = ()


@dataclass(frozen=True)
class Projection:
    """The fields a sync's snapshot holds for each row, and where each comes from.

    `fields` are (destination field, model column) pairs, in the order payloads name them; a model
    column may feed several fields. `identity` lists the fields whose values name the destination
    object a row addresses (a Braze user, a catalog item): two live rows must not share them, and a
    removed row and a live row that share them address the same object. Empty for append-only objects.
    `constants` are (field, text) pairs every row holds whatever the model returns: a setting of the spec
    the destination keeps per row (a partner cohort's name), so that changing it is a change of that field
    in every row, not a new destination."""

    fields: tuple[tuple[str, str], ...]
    identity: tuple[str, ...] = ()
    constants: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f for f, _ in self.fields) + tuple(f for f, _ in self.constants)

    def column_of(self, field: str) -> str | None:
        return next((c for f, c in self.fields if f == field), None)


@dataclass(frozen=True)
class PlanRow:
    """One row of a plan as the destination sees it.

    `values` are the new row's normalised values (JSON-ready: str/int/float/bool/None/list/dict),
    keyed by destination field (see Projection); for removed rows they are the last acknowledged values.
    `old_values` are the last acknowledged values for changed rows (None otherwise).
    `changed` lists the fields whose value changed (changed rows only), including `unmapped` ones.
    `unmapped` lists fields the snapshot holds that the mapping no longer names, to unset
    (`on_unmapped: unset`); they are not in `values`.
    `replaces` are the last acknowledged values of a removed row that addressed the same destination
    object (same identity fields) as this row: the row takes that object over, so fields the removed row
    set and this row leaves null are unset rather than left behind.
    `uncertain`: a changed row some of whose old values are unknown (an earlier send got no usable
    answer): the destination object may hold either value, or (for an addition) may not exist.
    `unknowns`: how many sends of this row so far ended that way (a budget for resending).
    `waiting_since`: the row has been held back (WAITING) since then, e.g. for its user's profile.
    `times`: the fields whose model column is a TIMESTAMP or DATE (normalised to ISO-8601 text, or to
    'infinity' / '-infinity'), so that times the destination cannot store are told from strings.
    """

    key: str
    op: Op
    values: Mapping[str, Any]
    old_values: Mapping[str, Any] | None = None
    changed: tuple[str, ...] = ()
    unmapped: tuple[str, ...] = ()
    replaces: Mapping[str, Any] | None = None
    uncertain: bool = False
    unknowns: int = 0                   # earlier sends of this row that ended without a usable answer
    waiting_since: datetime | None = None   # pending since then, held back waiting for what it needs (UTC)
    times: frozenset[str] = frozenset()  # fields read from TIMESTAMP or DATE columns (ISO text or 'infinity')


def is_time_type(type_text: str) -> bool:
    """A TIMESTAMP or DATE column (of any precision or time zone): the diff normalises its values to
    ISO-8601 text, or to 'infinity' / '-infinity'. `PlanRow.times` lists the fields read from one."""
    t = type_text.strip().upper()
    return (t.startswith("TIMESTAMP") or t == "DATE") and not t.endswith("]")    # a list of them is a list


@dataclass(frozen=True)
class Item:
    """The exact payload one plan row produces. `channel` names the request kind it batches
    into (e.g. "POST /users/track attributes"); rows of one channel may share a request."""

    channel: str
    item_json: str
    data_points: int = 0
    dropped: tuple[Reason, ...] = ()    # fields left out because the destination would refuse them (why;
                                        # a `Reason` names the field)
    kept: tuple[str, ...] = ()          # changed fields not sent by choice (nulls: skip): Braze keeps the old value
    note: str | None = None             # sent, with something the user should know (`reflow errors` lists it)


# kinds of values a destination would store otherwise than the model holds them (`Reason.kind`)
NON_FINITE = "non_finite"          # NaN, ±Infinity: JSON has no such number
TIME_RANGE = "time_range"          # an infinite timestamp or date, a year the destination cannot store
ARRAY_MAX = "array_max"            # an array longer than the destination keeps


class Reason(str):
    """A reason (its text) about one field's value: `field` names it (the top-level field, also for a
    problem deep inside a nested value); `kind` is set when the destination would mangle the value
    (NON_FINITE, TIME_RANGE, ARRAY_MAX): the planner counts those per field into the plan's warnings."""

    field: str
    kind: str | None

    def __new__(cls, text: str, field: str, kind: str | None = None) -> Reason:
        self = super().__new__(cls, text)
        self.field = field
        self.kind = kind
        return self


@dataclass(frozen=True)
class Invalid:
    reason: str
    problems: tuple[Reason, ...] = field(default=(), compare=False)   # each problem, when `reason` joins several


@dataclass(frozen=True)
class Skip:
    """A row that is part of the plan but sends nothing (e.g. a changed, already-sent event).
    `kept`: changed fields whose new value is not sent by choice, so the destination keeps the old one."""

    reason: str
    kept: tuple[str, ...] = ()


@dataclass(frozen=True)
class SqlItems:
    """Payloads a destination builds in DuckDB for the rows it can prove valid (the fast path).

    Each field is a SQL expression over the planner's delta rows, aliased `r`: the normalised model
    columns by name, `r.__op` ('added' | 'changed' | 'removed') and `r.__changed` (VARCHAR[]).
    Rows where `eligible` is true get `item` (VARCHAR JSON) and `data_points` (INTEGER) on `channel`;
    they must be exactly what prepare() would return for them. Every other row goes through prepare().

    `typed_times`: `eligible` and `data_points` read a TIMESTAMP or DATE column (`is_time_type`) as the
    model's typed value, not as its normalised text (`item` always reads the text): a first run's held
    rows are judged so (`diff.held_select`), without formatting millions of times only to check a year."""

    channel: str
    item: str
    data_points: str
    eligible: str
    channel_sql: str | None = None      # an SQL expression choosing the channel per row (default: `channel`)
    typed_times: bool = False


@dataclass(frozen=True)
class Batch:
    channel: str
    keys: tuple[str, ...]
    items: tuple[str, ...]              # item_json of each key, same order


@dataclass(frozen=True)
class RowResult:
    key: str
    outcome: Outcome
    reason: str | None = None


def cut_batches(channel: str, rows: Iterable[tuple[str, str]], limit: int, budget: int) -> Iterator[Batch]:
    """(key, item_json) rows in order → requests of at most `limit` items whose comma-joined UTF-8
    text fits `budget` bytes (a single item over the budget still gets a request of its own)."""
    keys: list[str] = []
    items: list[str] = []
    size = 0
    for key, item in rows:
        n = (len(item) if item.isascii() else len(item.encode("utf-8"))) + 1   # +1: the comma
        if keys and (len(keys) >= limit or size + n > budget):
            yield Batch(channel, tuple(keys), tuple(items))
            keys, items, size = [], [], 0
        keys.append(key)
        items.append(item)
        size += n
    if keys:
        yield Batch(channel, tuple(keys), tuple(items))


class AllAcknowledged(Sequence[RowResult]):
    """The results of a batch every row of which was acknowledged (the common case, kept cheap)."""

    __slots__ = ("keys",)

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> RowResult: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[RowResult]: ...

    def __getitem__(self, index: int | slice) -> RowResult | Sequence[RowResult]:
        if isinstance(index, slice):
            return [RowResult(k, ACKNOWLEDGED) for k in self.keys[index]]
        return RowResult(self.keys[index], ACKNOWLEDGED)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"AllAcknowledged({len(self.keys)} rows)"


@dataclass(frozen=True)
class Estimate:
    requests: Mapping[str, int] = field(default_factory=dict)   # endpoint -> requests
    data_points: int = 0
    seconds: float = 0.0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class Destination(ABC):
    """What the planner and the runner ask of a destination. Implementations subclass it: the abstract
    methods are required (a subclass missing one cannot be created), the others are defaults."""

    capabilities: Capabilities

    @abstractmethod
    def project(self, columns: Sequence[str]) -> Projection:
        """Fix the sync's projection for a model returning `columns` (in order); prepare() and
        sql_items() then read rows keyed by its fields. Raises SpecError when the columns cannot be
        mapped (e.g. an automatically mapped column whose name Braze reserves)."""

    @abstractmethod
    def identity(self) -> Mapping[str, str]:
        """Where this sync's rows go: a change of any value means a new destination."""

    @abstractmethod
    def prepare(self, row: PlanRow) -> Item | Invalid | Skip:
        """Build and validate the payload for one plan row (no network)."""

    def sql_items(self, columns: Sequence[Any], *, added_only: bool = False) -> SqlItems | None:
        """Payloads built in SQL for the rows SQL can prove valid (diff.Column list); None: every row
        goes through prepare(). `added_only`: every row is an added one (a first run): the SQL may take
        `r.__op = 'added'` as given (it is judged for millions of rows at once), and may read times
        typed (`SqlItems.typed_times`)."""
        return None

    def plan_notes(self, sent: int) -> list[str]:
        """What the plan should say about this sync's `sent` rows."""
        return []

    def check_unset(self, fields: Sequence[str]) -> None:
        """Stop the sync (PlanError) when fields it no longer maps must not be unset (on_unmapped: unset)."""
        return None

    group_field: str | None = None      # plan_totals() counts the model's rows per value of this field
    # fields the rows of one `group_field` value must agree on (a cohort's name), with what a second
    # value would do in the destination: the planner stops the sync when the model gives a group two
    group_constants: Mapping[str, str] = {}

    def plan_totals(self, totals: Mapping[Any, int]) -> None:
        """The model's rows per value of `group_field` (all rows under None when it is None), before
        prepare(), for plan_notes()."""
        return None

    def left_behind(self, old: Mapping[str, str], rows: int) -> str | None:
        """When a sync starts again at another destination: what the old one (`old`, its identity) keeps
        of the `rows` the snapshot held there and Reflow will not undo; None when nothing needs saying."""
        return None

    def plan_sql_rows(self, written: Mapping[tuple[str | None, str], tuple[int, int]]) -> None:
        """The rows sql_items() wrote to send, which prepare() never sees, for plan_notes(): per (value of
        `group_field` as text, None when it is None; op): (rows, data points)."""
        return None

    @abstractmethod
    def estimate(self, items: Mapping[str, tuple[int, int]]) -> Estimate:
        """Requests, data points and seconds for a plan, given per channel (item count, data points)."""

    @abstractmethod
    def batch_limits(self, channel: str) -> tuple[int, int]:
        """(objects per request, bytes of the items joined with commas) for one channel."""

    @abstractmethod
    def batches(self, channel: str, rows: Iterable[tuple[str, str]]) -> Iterator[Batch]:
        """Group (key, item_json) rows of one channel into requests within the limits."""

    @abstractmethod
    def send(self, batch: Batch) -> Sequence[RowResult]:
        """Send one batch; one result per position of `batch.keys` (`AllAcknowledged` when every
        row was). Raises DestinationError for fatal refusals."""

    def close(self) -> None:  # noqa: B027 - a default: most destinations hold nothing to release
        """Release what send() opened (connections, threads)."""
