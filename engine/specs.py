"""Sync specs: frozen values, and loading `syncs/**/*.yml` with located, all-at-once errors.

The value classes below are the contract the rest of the engine reads. Loading
(`load_syncs`) validates every file against `schemas/sync.schema.json` and reports
every problem at once as `file:line:col: path: message`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from engine.dbt_project import dbt_model_files, dbt_yaml_files
from engine.errors import Problem, RenderError, SpecError, UserError
from engine.models import find_model, list_models
from engine.project import PROJECT_FILE, Project
from engine.yamlfile import Document, did_you_mean, dotted, load_schema, read_yaml, validate


class Object(StrEnum):
    """The Braze object a sync writes (`destination.object`)."""

    USERS = "users"
    EVENTS = "events"
    PURCHASES = "purchases"
    CATALOG_ITEMS = "catalog_items"
    SUBSCRIPTION_GROUPS = "subscription_groups"
    USER_DELETES = "user_deletes"
    COHORTS = "cohorts"


class Mode(StrEnum):
    UPSERT = "upsert"           # create what is missing
    UPDATE = "update"           # only update what exists


class OnRemoved(StrEnum):
    IGNORE = "ignore"
    UNSET = "unset"
    DELETE = "delete"


class Nulls(StrEnum):
    UNSET = "unset"             # a null unsets the field in Braze
    SKIP = "skip"               # a null is not sent (Braze keeps its value)


class OnUnmapped(StrEnum):
    KEEP = "keep"               # Braze keeps the values of a field no longer mapped
    UNSET = "unset"             # they are unset, once


class MissingUsers(StrEnum):
    WAIT = "wait"               # update-only rows wait for their user's profile
    SKIP = "skip"               # they are sent unchecked


class FirstRun(StrEnum):
    SEND_ALL = "send_all"
    BASELINE = "baseline"       # record every row as sent, send nothing


class DiffLocation(StrEnum):
    """Where a sync's diff runs its first phase (docs/diff-locations.md)."""

    LOCAL = "local"             # every model row travels to Reflow's DuckDB
    HASHES = "hashes"           # the warehouse sends (key, hash); only the delta's rows travel in full
    WAREHOUSE = "warehouse"     # phase 1 on the warehouse against a mirror of the snapshot's hashes


class CohortMethod(StrEnum):
    ATTRIBUTE = "attribute"     # an array custom attribute holds cohort ids (every Braze account)
    PARTNER = "partner"         # Braze's partner cohort import API


OBJECTS = tuple(Object)
COHORT_METHODS = tuple(CohortMethod)
IDENTIFIER_KINDS = ("external_id", "user_alias", "braze_id", "email", "phone")


@dataclass(frozen=True)
class Location:
    file: str
    line: int | None = None
    col: int | None = None


@dataclass(frozen=True)
class Identifier:
    """How a row names its Braze user. `column` is the model column holding the id
    (for `user_alias`, the column holding `alias_name`; `alias_label` is a constant)."""

    kind: str
    column: str
    alias_label: str | None = None


@dataclass(frozen=True)
class EventSpec:
    time: str                                   # column
    name: str | None = None                     # constant event name ...
    name_column: str | None = None              # ... or a column holding it
    properties: Mapping[str, str] = field(default_factory=dict)   # property -> column
    app_id: str | None = None                   # constant


@dataclass(frozen=True)
class PurchaseSpec:
    product_id: str                             # column
    currency: str                               # column
    price: str                                  # column
    time: str                                   # column
    quantity: str | None = None                 # column
    properties: Mapping[str, str] = field(default_factory=dict)
    app_id: str | None = None


@dataclass(frozen=True)
class SubscriptionSpec:
    state: str                                  # column: boolean or 'subscribed'/'unsubscribed'
    group_id: str | None = None                 # constant UUID ...
    group_id_column: str | None = None          # ... or a column holding it


@dataclass(frozen=True)
class CohortSpec:
    """A cohort sync's cohorts: one constant cohort (`id`, `name`) or one per value of `id_column`
    (named by `name_column`, else by its id). `attribute`: the array attribute of method attribute."""

    method: CohortMethod
    id: str | None = None                       # constant cohort id ...
    name: str | None = None                     # ... and its name (partner: shown in Braze)
    id_column: str | None = None                # ... or a column holding the cohort id
    name_column: str | None = None              # column holding the cohort name (partner, with id_column)
    attribute: str | None = None                # method attribute: the array custom attribute


@dataclass(frozen=True)
class DestinationSpec:
    connection: str
    object: Object
    mode: Mode = Mode.UPSERT
    identifier: Identifier | None = None        # required except for catalog_items
    fields: Mapping[str, str] | None = None     # Braze attribute -> model column; None: every non-key column
    on_removed: OnRemoved = OnRemoved.IGNORE
    nulls: Nulls = Nulls.UNSET
    on_unmapped: OnUnmapped = OnUnmapped.KEEP   # a field no longer mapped
    prioritization: tuple[str, ...] | None = None   # deleting by email/phone: which profile (Braze's rules)
    missing_users: MissingUsers = MissingUsers.WAIT     # update-only rows of users Braze does not have
    missing_users_max_wait: float = 7 * 86400.0     # seconds a row may wait for its user's profile
    event: EventSpec | None = None
    purchase: PurchaseSpec | None = None
    catalog: str | None = None
    item_id: str | None = None                  # column
    subscription: SubscriptionSpec | None = None
    cohort: CohortSpec | None = None


@dataclass(frozen=True)
class Guards:
    max_added: int | None = None
    max_changed: int | None = None
    max_removed: int | None = None
    max_changed_pct: float | None = None
    max_removed_pct: float | None = None
    max_data_points: int | None = None


@dataclass(frozen=True)
class SyncSpec:
    name: str
    model: str
    primary_key: tuple[str, ...]
    destination: DestinationSpec
    guards: Guards = field(default_factory=Guards)
    first_run: FirstRun = FirstRun.SEND_ALL
    diff: DiffLocation | None = None            # None: the project's warehouse.diff
    tags: tuple[str, ...] = ()
    description: str | None = None
    path: str = ""                              # file it was declared in, relative to the project
    raw: Mapping[str, object] = field(default_factory=dict, compare=False)  # the parsed document
    locations: Mapping[str, Location] = field(default_factory=dict, compare=False)  # "destination.mode" -> where

    def where(self, path: str) -> Location:
        """Best location for a dotted field path, falling back to its parents, then the file."""
        parts = path.split(".")
        while parts:
            loc = self.locations.get(".".join(parts))
            if loc is not None:
                return loc
            parts.pop()
        return Location(self.path, 1, 1)


# ---------------------------------------------------------------- loading

SCHEMA = "sync.schema.json"
SYNCS_DIR = "syncs"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def sync_files(root: Path) -> list[Path]:
    """Every syncs/**/*.yml and *.yaml under `root` (hidden folders skipped), sorted."""
    base = root / SYNCS_DIR
    if not base.is_dir():
        return []
    found = [
        p for pattern in ("*.yml", "*.yaml") for p in base.rglob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def load_syncs(project: Project, *, select: Sequence[str] | None = None) -> list[SyncSpec]:
    """Load, validate and cross-check every sync spec; raise SpecError with every problem at once.

    `select` keeps matching syncs: a name (shell-style wildcards allowed), `tag:<tag>`,
    or a file/folder path such as `syncs/users.yml`. A selector matching nothing is a UserError."""
    schema = load_schema(SCHEMA)
    problems: list[Problem] = []
    docs: list[Document] = []
    specs: list[SyncSpec] = []
    files = [read_yaml(f, f.relative_to(project.root).as_posix(), kind="sync") for f in sync_files(project.root)]
    for doc, found in files + dbt_meta_syncs(project):     # syncs/*.yml, then `config: meta: reflow:`
        problems += found
        if doc is None:
            continue
        docs.append(doc)
        invalid = validate(doc, schema)
        problems += invalid + _rules(doc)
        if not found and not invalid:
            specs.append(_build(doc))
    problems += _cross_checks(project, docs)
    if not problems:
        problems += _shared_cohorts(specs)
    if problems:
        raise SpecError(problems)
    return select_syncs(specs, select) if select else specs


def cohort_attributes(specs: Sequence[SyncSpec], connections: Collection[str]) -> dict[str, str]:
    """The array attributes that cohort syncs (method attribute) keep their ids in on `connections` (the
    connections to one Braze workspace, as far as Reflow can tell): attribute -> the first such sync's
    name. A users sync must not write them (`_shared_cohorts` for the fields a spec names on the same
    connection; the destination, at plan time, for fields mapped from the model's columns, fields of
    another connection to the workspace, and fields it would unset)."""
    kept: dict[str, str] = {}
    for s in specs:
        c, d = s.destination.cohort, s.destination
        if d.object == Object.COHORTS and c is not None and c.method == CohortMethod.ATTRIBUTE and c.attribute \
                and d.connection in connections:
            kept.setdefault(c.attribute, s.name)
    return kept


def cohort_place(sync: SyncSpec) -> tuple[str, str] | None:
    """Where a cohort sync's cohort ids live: (connection, "attribute <name>" or "partner"); None when
    the sync keeps no cohort."""
    c, d = sync.destination.cohort, sync.destination
    if d.object != Object.COHORTS or c is None:
        return None
    return d.connection, f"attribute {c.attribute}" if c.method == CohortMethod.ATTRIBUTE else "partner"


def kept_cohorts(specs: Sequence[SyncSpec], sync: SyncSpec, connections: Collection[str]) -> dict[str, str]:
    """The cohort ids other syncs keep as a constant `cohort.id` where `sync` keeps its cohorts (its
    attribute or partner, on `connections`: those to its Braze workspace): id -> that sync's name. The
    sync must not keep them too (checked at plan time: a `cohort_column` sync on the model's values)."""
    place = cohort_place(sync)
    kept: dict[str, str] = {}
    for s in specs:
        c, other = s.destination.cohort, cohort_place(s)
        if s.name != sync.name and place is not None and other is not None and other[1] == place[1] \
                and other[0] in connections and c is not None and c.id:
            kept.setdefault(c.id, s.name)
    return kept


def _shared_cohorts(specs: Sequence[SyncSpec]) -> list[Problem]:
    """Syncs that would undo each other's cohort memberships on one connection: two cohort syncs keeping
    the same cohort (one's removal takes the other's member out), or a users sync whose fields write the
    array attribute cohorts keep their ids in (its values replace the ids)."""
    problems: list[Problem] = []
    owners: dict[tuple[str, str, str], SyncSpec] = {}
    attributes: dict[tuple[str, str], SyncSpec] = {}
    by_column: dict[tuple[str, str], SyncSpec] = {}
    for s in specs:
        c, d = s.destination.cohort, s.destination
        if d.object != Object.COHORTS or c is None:
            continue
        place = cohort_place(s)
        if c.id_column and place is not None:
            other = by_column.setdefault(place, s)
            if other is not s:
                loc = s.where("destination.cohort_column")
                problems.append(Problem(
                    loc.file, loc.line, loc.col, "destination.cohort_column",
                    f"sync '{other.name}' ({other.path}) also takes its cohort ids from a column ({place[1]}): two "
                    "models could both produce one id, and a member leaving one would leave the cohort the other "
                    "still holds it in; use one sync whose model returns every (member, cohort) row"))
        if c.method == CohortMethod.ATTRIBUTE and c.attribute:
            attributes.setdefault((d.connection, c.attribute), s)
        if c.id is None:
            continue
        where = (d.connection, f"attribute {c.attribute}" if c.method == CohortMethod.ATTRIBUTE else "partner", c.id)
        other = owners.setdefault(where, s)
        if other is not s:
            loc = s.where("destination.cohort.id")
            problems.append(Problem(loc.file, loc.line, loc.col, "destination.cohort.id",
                                    f"cohort '{c.id}' ({where[1]}) is also kept by sync '{other.name}' ({other.path}): "
                                    "a member leaving one sync's model would leave the cohort although the other's "
                                    "still holds it; use another cohort id, or one sync with cohort_column"))
    for s in specs:
        d = s.destination
        if d.object != Object.USERS or not d.fields:
            continue
        for name in d.fields:
            owner = attributes.get((d.connection, name))
            if owner is not None:
                loc = s.where(f"destination.fields.{name}")
                problems.append(Problem(loc.file, loc.line, loc.col, f"destination.fields.{name}",
                                        f"'{name}' holds the cohort ids of sync '{owner.name}' ({owner.path}): "
                                        "this sync's values would replace them; map another attribute"))
    return problems


META_KEY = "reflow"


def dbt_meta_syncs(project: Project) -> list[tuple[Document | None, list[Problem]]]:
    """Syncs declared in dbt YAML as `models: [{name: m, config: {meta: {reflow: {...}}}}]`.

    Each becomes a Document of its own (model: m and name: m filled in), located in the dbt file."""
    out: list[tuple[Document | None, list[Problem]]] = []
    for file in dbt_yaml_files(project):
        display = Path(os.path.relpath(file, project.root)).as_posix()
        text = file.read_text(encoding="utf-8", errors="replace") if file.stat().st_size < 1_000_000 else ""
        if META_KEY not in text:
            continue                      # most dbt YAML files declare no sync: skip the careful parse
        doc, problems = read_yaml(file, display, kind="dbt properties")
        if doc is None or not isinstance(doc.data, dict) or not isinstance(doc.data.get("models"), list):
            out += [(None, problems)] if problems else []
            continue
        for i, model in enumerate(doc.data["models"]):
            config = model.get("config") if isinstance(model, dict) else None
            meta = config.get("meta") if isinstance(config, dict) else None
            if not isinstance(meta, dict) or META_KEY not in meta:
                continue
            out.append(_meta_document(doc, ("models", i, "config", "meta", META_KEY), str(model.get("name", "")),
                                      problems))
            problems = []
    return out


def _meta_document(doc: Document, prefix: tuple[str | int, ...], model: str,
                   problems: list[Problem]) -> tuple[Document | None, list[Problem]]:
    block = doc.data
    for part in prefix:
        block = block[part]
    if not isinstance(block, dict):
        return None, [*problems, doc.problem(prefix, "the reflow sync must be a mapping (the same keys as syncs/*.yml)")]
    n = len(prefix)
    keys = {path[n:]: mark for path, mark in doc.keys.items() if path[:n] == prefix}
    values = {path[n:]: mark for path, mark in doc.values.items() if path[:n] == prefix}
    data = dict(block)
    if "model" in data and data["model"] != model:
        problems = [*problems, Problem(doc.file, *doc.value_mark((*prefix, "model")), "model",
                                       f"a sync declared on dbt model '{model}' reads that model; remove model:")]
    data["model"] = model
    data.setdefault("name", model)
    where = doc.key_mark(prefix)
    for key in ("model", "name"):
        keys.setdefault((key,), where)
        values.setdefault((key,), where)
    return Document(doc.file, data, keys, values), problems


def _name_of(doc: Document) -> tuple[str, Location]:
    data = doc.data
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        line, col = doc.value_mark(("name",))
        return data["name"], Location(doc.file, line, col)
    return PurePosixPath(doc.file).stem, Location(doc.file, 1, 1)


def _cross_checks(project: Project, docs: Sequence[Document]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, list[Location]] = {}
    connections = list(project.connections)
    model_names: list[str] | None = None
    for doc in docs:
        data = doc.data if isinstance(doc.data, dict) else {}
        name, where = _name_of(doc)
        seen.setdefault(name, []).append(where)
        if "name" not in data and not _NAME.match(name):
            problems.append(Problem(
                doc.file, 1, 1, "name",
                f"the file name '{name}' is not a valid sync name (use letters, digits, '_', '.' and '-'); add a name: key",
            ))
        model = data.get("model")
        if isinstance(model, str) and _NAME.match(model):
            try:
                path = find_model(project, model) or dbt_model_files(project).get(model)
            except RenderError as exc:
                problems.append(doc.problem(("model",), exc.message))
                path = Path()
            if path is None:
                if model_names is None:
                    try:
                        model_names = [*list_models(project), *dbt_model_files(project)]
                    except RenderError:
                        model_names = []
                problems.append(doc.problem(
                    ("model",), f"no model '{model}': models/{model}.sql does not exist{did_you_mean(model, model_names)}"
                ))
        destination = data.get("destination")
        connection = destination.get("connection") if isinstance(destination, dict) else None
        if isinstance(connection, str) and connection and connection not in project.connections:
            hint = did_you_mean(connection, connections) or (
                f"; {PROJECT_FILE} defines: {', '.join(connections)}" if connections else f"; {PROJECT_FILE} defines none"
            )
            problems.append(doc.problem(("destination", "connection"), f"unknown connection '{connection}'{hint}"))
    for name, places in seen.items():
        if len(places) < 2:
            continue
        for here in places:
            others = ", ".join(f"{o.file}:{o.line}:{o.col}" for o in places if o is not here)
            problems.append(Problem(here.file, here.line, here.col, "name", f"duplicate sync name '{name}' (also in {others})"))
    return problems


def _rules(doc: Document) -> list[Problem]:
    """Rules the schema cannot say; checked on any document whose fields involved are valid."""
    data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
    dest: dict[str, Any] = data["destination"] if isinstance(data.get("destination"), dict) else {}
    guards: dict[str, Any] = data["guards"] if isinstance(data.get("guards"), dict) else {}
    obj, on_removed = dest.get("object"), dest.get("on_removed", "ignore")
    has_max_removed = "max_removed" in guards
    problems: list[Problem] = []
    if obj == "users" and on_removed == "delete" and not has_max_removed:
        problems.append(doc.problem(
            ("destination", "on_removed"),
            "'delete' requires guards.max_removed so a model wipe cannot delete your users",
        ))
    if obj == "user_deletes" and not has_max_removed:
        problems.append(doc.problem(
            ("destination", "object"),
            "user_deletes requires guards.max_removed so a bad model cannot delete your users",
        ))
    ident: dict[str, Any] = dest["identifier"] if isinstance(dest.get("identifier"), dict) else {}
    if "prioritization" in dest and not ({"email", "phone"} & set(ident) and (
            obj == "user_deletes" or (obj == "users" and on_removed == "delete"))):
        problems.append(doc.problem(
            ("destination", "prioritization"),
            "prioritization applies to deleting by email or phone (user_deletes, or users with on_removed: delete)",
        ))
    if obj == "cohorts" and not ({"max_removed", "max_removed_pct"} & set(guards)):
        problems.append(doc.problem(
            ("destination", "object"),
            "cohorts require guards.max_removed or guards.max_removed_pct, so a model that suddenly returns "
            "no rows cannot empty the cohort",
        ))
    if obj == "cohorts":
        problems += _cohort_member_in_key(doc, data, dest, ident)
    if obj == "cohorts" and dest.get("method") == "attribute" and "name_column" in dest:
        problems.append(doc.problem(
            ("destination", "name_column"),
            "name_column is for method: partner; method attribute stores cohort ids only",
        ))
    if obj in ("events", "purchases") and on_removed in ("unset", "delete"):
        problems.append(doc.problem(
            ("destination", "on_removed"),
            f"'{on_removed}' is not possible for {obj}: they are append-only; use on_removed: ignore",
        ))
    return problems


def _cohort_member_in_key(doc: Document, data: dict[str, Any], dest: dict[str, Any],
                          ident: dict[str, Any]) -> list[Problem]:
    """Membership is of a member: the column naming the user (and the cohort column) must be part of the
    primary key, so a new member is always a new row (it enters) and the old one a removed row (it
    leaves); a row whose user changed under the same key would leave the old user in the cohort."""
    key = data.get("primary_key")
    keys = {key} if isinstance(key, str) else {k for k in key if isinstance(k, str)} if isinstance(key, list) else set()
    if not keys:
        return []
    found = []
    for kind, value in ident.items():
        if kind not in ("external_id", "user_alias"):       # the schema refuses the others for cohorts
            continue
        column = value.get("alias_name") if isinstance(value, dict) else value
        if isinstance(column, str) and column not in keys:
            found.append(doc.problem(("destination", "identifier", kind),
                                     f"column '{column}' must be part of primary_key for cohorts (a member is a "
                                     f"row): e.g. primary_key: [{', '.join([*sorted(keys), column])}]"))
    cohort_column = dest.get("cohort_column")
    if isinstance(cohort_column, str) and cohort_column not in keys:
        found.append(doc.problem(("destination", "cohort_column"),
                                 f"column '{cohort_column}' must be part of primary_key for cohorts (one row per "
                                 f"member and cohort): e.g. primary_key: [{', '.join([*sorted(keys), cohort_column])}]"))
    return found


def _locations(doc: Document) -> dict[str, Location]:
    out: dict[str, Location] = {}
    for path in doc.values:
        if not path:
            continue
        line, col = doc.key_mark(path)
        out[dotted(path)] = Location(doc.file, line, col)
    return out


def _build(doc: Document) -> SyncSpec:
    """A SyncSpec from a schema-valid document."""
    data: dict[str, Any] = doc.data
    d: dict[str, Any] = data["destination"]
    identifier = None
    if "identifier" in d:
        kind, value = next(iter(d["identifier"].items()))
        if kind == "user_alias":
            identifier = Identifier(kind, value["alias_name"], value["alias_label"])
        else:
            identifier = Identifier(kind, value)
    event = None
    if "event" in d:
        e = d["event"]
        event = EventSpec(
            time=e["time"], name=e.get("name"), name_column=e.get("name_column"),
            properties=dict(e.get("properties", {})), app_id=e.get("app_id"),
        )
    purchase = None
    if "purchase" in d:
        p = d["purchase"]
        purchase = PurchaseSpec(
            product_id=p["product_id"], currency=p["currency"], price=p["price"], time=p["time"],
            quantity=p.get("quantity"), properties=dict(p.get("properties", {})), app_id=p.get("app_id"),
        )
    subscription = None
    if d["object"] == "subscription_groups":
        subscription = SubscriptionSpec(
            state=d["state"], group_id=d.get("subscription_group_id"),
            group_id_column=d.get("subscription_group_id_column"),
        )
    cohort = None
    if d["object"] == "cohorts":
        constant = d.get("cohort", {})
        cohort = CohortSpec(
            method=CohortMethod(d["method"]), id=constant.get("id"), name=constant.get("name"),
            id_column=d.get("cohort_column"), name_column=d.get("name_column"), attribute=d.get("attribute"),
        )
    destination = DestinationSpec(
        connection=d["connection"],
        object=Object(d["object"]),
        mode=Mode(d.get("mode", "upsert")),
        identifier=identifier,
        fields=dict(d["fields"]) if "fields" in d else None,
        on_removed=OnRemoved(d.get("on_removed", "ignore")),
        nulls=Nulls(d.get("nulls", "unset")),
        on_unmapped=OnUnmapped(d.get("on_unmapped", "keep")),
        prioritization=tuple(d["prioritization"]) if "prioritization" in d else None,
        missing_users=MissingUsers(d.get("missing_users", "wait")),
        missing_users_max_wait=seconds(d.get("missing_users_max_wait", "7d")),
        event=event,
        purchase=purchase,
        catalog=d.get("catalog"),
        item_id=d.get("item_id"),
        subscription=subscription,
        cohort=cohort,
    )
    g = data.get("guards", {})
    guards = Guards(
        max_added=_int(g.get("max_added")),
        max_changed=_int(g.get("max_changed")),
        max_removed=_int(g.get("max_removed")),
        max_changed_pct=_float(g.get("max_changed_pct")),
        max_removed_pct=_float(g.get("max_removed_pct")),
        max_data_points=_int(g.get("max_data_points")),
    )
    pk = data["primary_key"]
    name, _ = _name_of(doc)
    return SyncSpec(
        name=name,
        model=data["model"],
        primary_key=(pk,) if isinstance(pk, str) else tuple(pk),
        destination=destination,
        guards=guards,
        first_run=FirstRun(data.get("first_run", "send_all")),
        diff=DiffLocation(data["diff"]) if "diff" in data else None,
        tags=tuple(data.get("tags", ())),
        description=data.get("description"),
        path=doc.file,
        raw=data,
        locations=_locations(doc),
    )


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> float:
    """A duration the schema checked ("30m", "12h", "7d") in seconds."""
    return float(int(duration[:-1]) * _UNITS[duration[-1]])


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


ReadsFrom = Callable[[SyncSpec, str], bool]


def select_syncs(specs: Sequence[SyncSpec], select: Sequence[str] | None, *,
                 reads_from: ReadsFrom | None = None) -> list[SyncSpec]:
    """The syncs matching any selector (all of them when `select` is empty):

        name / glob       sync names (shell-style wildcards)
        tag:TAG           syncs tagged TAG
        model:NAME        syncs whose model is NAME (wildcards allowed)
        MODEL+            syncs reading MODEL or anything built from it; `reads_from(spec, model)`
                          decides (a dbt warehouse walks dbt's graph), else the sync's own model
        syncs/x.yml, dir  syncs declared in that file or folder
    """
    if not select:
        return list(specs)
    chosen: set[str] = set()
    for selector in select:
        matched = [s for s in specs if _matches(s, selector, reads_from)]
        if not matched:
            hint = did_you_mean(selector, [s.name for s in specs])
            known = ", ".join(s.name for s in specs) or "none"
            raise UserError(f"--select {selector!r} matches no sync{hint}; syncs: {known}")
        chosen.update(s.name for s in matched)
    return [s for s in specs if s.name in chosen]


_select = select_syncs


def is_graph_selector(selector: str) -> bool:
    return selector.endswith("+") and ":" not in selector and len(selector) > 1


def _matches(spec: SyncSpec, selector: str, reads_from: ReadsFrom | None = None) -> bool:
    if selector.startswith("tag:"):
        return selector[4:] in spec.tags
    if selector.startswith("model:"):
        return fnmatch.fnmatchcase(spec.model, selector[6:])
    if is_graph_selector(selector):
        model = selector[:-1]
        return reads_from(spec, model) if reads_from is not None else spec.model == model
    if "/" in selector or selector.endswith((".yml", ".yaml")):
        wanted = selector.removeprefix("./").rstrip("/")
        return spec.path == wanted or spec.path.startswith(wanted + "/")
    return fnmatch.fnmatchcase(spec.name, selector)


# ---------------------------------------------------------------- columns


def column_refs(spec: SyncSpec) -> list[tuple[str, str]]:
    """Every (dotted spec path, model column) the spec reads."""
    refs: list[tuple[str, str]] = []
    if isinstance(spec.raw.get("primary_key"), list):
        refs += [(f"primary_key[{i}]", c) for i, c in enumerate(spec.primary_key)]
    else:
        refs += [("primary_key", c) for c in spec.primary_key]
    d = spec.destination
    if d.identifier is not None:
        sub = "user_alias.alias_name" if d.identifier.kind == "user_alias" else d.identifier.kind
        refs.append((f"destination.identifier.{sub}", d.identifier.column))
    for attr, column in (d.fields or {}).items():
        refs.append((dotted(("destination", "fields", attr)), column))
    if d.event is not None:
        refs.append(("destination.event.time", d.event.time))
        if d.event.name_column:
            refs.append(("destination.event.name_column", d.event.name_column))
        refs += [(dotted(("destination", "event", "properties", k)), v) for k, v in d.event.properties.items()]
    if d.purchase is not None:
        p = d.purchase
        for key in ("product_id", "currency", "price", "quantity", "time"):
            column = getattr(p, key)
            if column:
                refs.append((f"destination.purchase.{key}", column))
        refs += [(dotted(("destination", "purchase", "properties", k)), v) for k, v in p.properties.items()]
    if d.item_id:
        refs.append(("destination.item_id", d.item_id))
    if d.cohort is not None:
        if d.cohort.id_column:
            refs.append(("destination.cohort_column", d.cohort.id_column))
        if d.cohort.name_column:
            refs.append(("destination.name_column", d.cohort.name_column))
    if d.subscription is not None:
        refs.append(("destination.state", d.subscription.state))
        if d.subscription.group_id_column:
            refs.append(("destination.subscription_group_id_column", d.subscription.group_id_column))
    return refs


def check_columns(syncs: Sequence[SyncSpec], columns_of: Callable[[SyncSpec], Sequence[str]]) -> None:
    """SpecError listing every column a spec names that its model does not return."""
    problems: list[Problem] = []
    for spec in syncs:
        columns = list(columns_of(spec))
        present = set(columns)
        for path, column in column_refs(spec):
            if column in present:
                continue
            where = spec.where(path)
            problems.append(Problem(
                where.file, where.line, where.col, path,
                f"column '{column}' is not returned by model '{spec.model}'{did_you_mean(column, columns)}",
            ))
    if problems:
        raise SpecError(problems)
