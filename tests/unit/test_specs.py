"""Sync specs: every kind of mistake gives one exact, located message, all at once."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from engine.errors import SpecError, UserError
from engine.project import load_project
from engine.specs import (
    EventSpec,
    Identifier,
    PurchaseSpec,
    SubscriptionSpec,
    SyncSpec,
    check_columns,
    column_refs,
    load_syncs,
)
from engine.yamlfile import schema_path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BAD = FIXTURES / "bad_specs"
MINIMAL = FIXTURES / "projects" / "minimal"

PROJECT_YML = """\
name: t
connections:
  braze:
    type: braze
    instance: iad-01
    api_key: "{{ env_var('BRAZE_API_KEY') }}"
"""

# Each broken file in tests/fixtures/bad_specs/syncs and the exact messages it must give.
EXPECTED: dict[str, list[str]] = {
    "syncs/alias_bomb.yml": [
        "syncs/alias_bomb.yml:6:11: aliases expand the document to more than 200000 values; "
        "refusing a possible alias bomb",
    ],
    "syncs/bad name.yml": [
        "syncs/bad name.yml:1:1: name: the file name 'bad name' is not a valid sync name "
        "(use letters, digits, '_', '.' and '-'); add a name: key",
        "syncs/bad name.yml:5:11: destination.object: user_deletes requires guards.max_removed "
        "so a bad model cannot delete your users",
    ],
    "syncs/bad_enums.yml": [
        "syncs/bad_enums.yml:6:9: destination.mode: 'upsrt' is not one of 'upsert', 'update' (did you mean 'upsert'?)",
        "syncs/bad_enums.yml:7:15: destination.on_removed: 'delet' is not one of 'ignore', 'unset', 'delete' "
        "(did you mean 'delete'?)",
        "syncs/bad_enums.yml:9:12: first_run: 'basline' is not one of 'send_all', 'baseline' (did you mean 'baseline'?)",
    ],
    "syncs/catalog_wrong.yml": [
        "syncs/catalog_wrong.yml:3:1: destination: missing required key 'catalog' for object 'catalog_items'",
        "syncs/catalog_wrong.yml:6:3: destination.identifier: not allowed for object 'catalog_items'",
    ],
    "syncs/cohorts_wrong.yml": [
        "syncs/cohorts_wrong.yml:3:1: destination: give exactly one of cohort, cohort_column for object 'cohorts'",
        "syncs/cohorts_wrong.yml:5:11: destination.object: cohorts require guards.max_removed or "
        "guards.max_removed_pct, so a model that suddenly returns no rows cannot empty the cohort",
        "syncs/cohorts_wrong.yml:6:11: destination.method: 'partnr' is not one of 'attribute', 'partner' "
        "(did you mean 'partner'?)",
        "syncs/cohorts_wrong.yml:7:16: destination.identifier.email: not allowed for object 'cohorts'",
        "syncs/cohorts_wrong.yml:8:16: destination.cohort.id: 'high value' is not valid: must match "
        "^[A-Za-z0-9_-]{1,250}$",
        "syncs/cohorts_wrong.yml:8:36: destination.cohort.name: must not be empty",
        "syncs/cohorts_wrong.yml:9:18: destination.cohort_column: column 'tier' must be part of primary_key for "
        "cohorts (one row per member and cohort): e.g. primary_key: [customer_id, tier]",
        "syncs/cohorts_wrong.yml:11:3: destination.attribute: not allowed for object 'cohorts'",
    ],
    "syncs/custom_tag.yaml": [
        "syncs/custom_tag.yaml:1:8: unsupported YAML tag '!!python/object/apply:os.system'",
    ],
    "syncs/delete_without_guard.yml": [
        "syncs/delete_without_guard.yml:7:15: destination.on_removed: 'delete' requires guards.max_removed "
        "so a model wipe cannot delete your users",
    ],
    "syncs/empty.yml": ["syncs/empty.yml:1:1: empty sync file"],
    "syncs/events_wrong.yml": [
        "syncs/events_wrong.yml:1:7: name: duplicate sync name 'order_events' (also in syncs/nested/order_events.yml:1:1)",
        "syncs/events_wrong.yml:7:15: destination.on_removed: 'unset' is not possible for events: "
        "they are append-only; use on_removed: ignore",
        "syncs/events_wrong.yml:9:3: destination.fields: not allowed for object 'events'",
        "syncs/events_wrong.yml:10:3: destination.event: give exactly one of name, name_column",
    ],
    "syncs/missing_keys.yml": [
        "syncs/missing_keys.yml:1:1: missing required key 'model'",
        "syncs/missing_keys.yml:2:1: destination: missing required key 'object'",
    ],
    "syncs/nested/order_events.yml": [
        "syncs/nested/order_events.yml:1:1: name: duplicate sync name 'order_events' (also in syncs/events_wrong.yml:1:7)",
    ],
    "syncs/subscriptions_wrong.yml": [
        "syncs/subscriptions_wrong.yml:3:1: destination: give exactly one of subscription_group_id, "
        "subscription_group_id_column for object 'subscription_groups'",
        "syncs/subscriptions_wrong.yml:6:16: destination.identifier.user_alias: not allowed for object "
        "'subscription_groups'",
    ],
    "syncs/syntax_error.yml": [
        "syncs/syntax_error.yml:5:11: YAML syntax error: mapping values are not allowed here",
    ],
    "syncs/two_identifiers.yml": [
        "syncs/two_identifiers.yml:6:3: destination.identifier: give exactly one of external_id, user_alias, "
        "braze_id, email, phone",
    ],
    "syncs/unknown_keys.yml": [
        "syncs/unknown_keys.yml:1:1: descripton: unknown key (did you mean 'description'?)",
        "syncs/unknown_keys.yml:7:3: destination.colour: unknown key (did you mean 'cohort'?)",
        "syncs/unknown_keys.yml:9:5: destination.identifier.user_alias: missing required key 'alias_label'",
        "syncs/unknown_keys.yml:9:18: destination.identifier.user_alias.alias_lable: unknown key "
        "(did you mean 'alias_label'?)",
        "syncs/unknown_keys.yml:11:3: guards.max_remove: unknown key (did you mean 'max_removed'?)",
    ],
    "syncs/unknown_model_and_connection.yml": [
        "syncs/unknown_model_and_connection.yml:1:8: model: no model 'braze_user': models/braze_user.sql "
        "does not exist (did you mean 'braze_users'?)",
        "syncs/unknown_model_and_connection.yml:4:15: destination.connection: unknown connection 'brze' "
        "(did you mean 'braze'?)",
    ],
    "syncs/wrong_types.yml": [
        "syncs/wrong_types.yml:2:28: primary_key[1]: expected string, got integer 7",
        "syncs/wrong_types.yml:3:7: tags: expected list, got string 'daily'",
        "syncs/wrong_types.yml:7:15: destination.identifier: expected mapping, got string 'customer_id'",
        "syncs/wrong_types.yml:9:16: guards.max_changed: expected integer, got string 'lots'",
        "syncs/wrong_types.yml:10:20: guards.max_removed_pct: must be <= 100, got 150",
    ],
}


def make_project(root: Path, syncs: dict[str, str], models: dict[str, str] | None = None) -> Path:
    (root / "reflow_project.yml").write_text(PROJECT_YML)
    for name, sql in (models or {"braze_users": "select 1 as customer_id", "orders": "select 1 as order_id"}).items():
        path = root / "models" / f"{name}.sql"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
    for rel, text in syncs.items():
        path = root / "syncs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def problems_of(root: Path, **kwargs: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_syncs(load_project(root), **kwargs)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------- the bad_specs fixture


def test_every_broken_file_gives_its_exact_messages_all_at_once() -> None:
    got = problems_of(BAD)
    by_file: dict[str, list[str]] = defaultdict(list)
    for line in got:
        file = next(f for f in EXPECTED if line.startswith(f + ":"))
        by_file[file].append(line)
    assert dict(by_file) == EXPECTED
    assert len(got) == sum(len(v) for v in EXPECTED.values())


def test_every_fixture_file_is_covered_by_the_table() -> None:
    files = {
        p.relative_to(BAD).as_posix() for p in (BAD / "syncs").rglob("*") if p.suffix in (".yml", ".yaml")
    }
    assert files == set(EXPECTED)


def test_spec_error_message_lists_problems_sorted_with_a_count() -> None:
    with pytest.raises(SpecError) as info:
        load_syncs(load_project(BAD))
    text = info.value.message
    assert text.endswith(f"\n{sum(len(v) for v in EXPECTED.values())} problems found")
    lines = text.splitlines()[:-1]
    assert lines == [str(p) for p in info.value.problems]
    assert "Traceback" not in text


# ---------------------------------------------------------------- valid specs map into values


def test_minimal_fixture_loads() -> None:
    [spec] = load_syncs(load_project(MINIMAL))
    assert spec.name == "braze_users"
    assert spec.model == "braze_users"
    assert spec.primary_key == ("customer_id",)
    assert spec.destination.identifier == Identifier("external_id", "customer_id")
    assert spec.destination.fields == {
        "email": "email", "first_name": "first_name", "lifetime_value": "lifetime_value"
    }
    assert spec.destination.mode == "upsert"
    assert spec.destination.on_removed == "ignore"
    assert spec.destination.nulls == "unset"
    assert spec.guards.max_removed == 10
    assert spec.first_run == "send_all"
    assert spec.path == "syncs/braze_users.yml"


def test_users_spec_with_everything(tmp_path: Path) -> None:
    make_project(tmp_path, {"users.yaml": """\
        name: braze_users_daily
        description: Customers to Braze
        tags: [daily, crm]
        model: braze_users
        primary_key: [customer_id, region]
        destination:
          connection: braze
          object: users
          mode: update
          identifier:
            user_alias: {alias_label: crm_id, alias_name: customer_id}
          fields: {email: email, lifetime_value: ltv}
          on_removed: delete
          nulls: skip
        guards:
          max_added: 1000000
          max_changed: 100000
          max_removed: 1000
          max_changed_pct: 50
          max_removed_pct: 2.5
          max_data_points: 10000000
        first_run: baseline
    """})
    [spec] = load_syncs(load_project(tmp_path))
    assert spec.name == "braze_users_daily"
    assert spec.tags == ("daily", "crm")
    assert spec.description == "Customers to Braze"
    assert spec.primary_key == ("customer_id", "region")
    d = spec.destination
    assert (d.mode, d.on_removed, d.nulls) == ("update", "delete", "skip")
    assert d.identifier == Identifier("user_alias", "customer_id", "crm_id")
    assert spec.guards.max_removed == 1000 and spec.guards.max_removed_pct == 2.5
    assert isinstance(spec.guards.max_changed_pct, float)
    assert spec.first_run == "baseline"
    assert spec.where("destination.mode").line == 9
    assert spec.where("destination.identifier.user_alias.alias_name").line == 11
    assert spec.where("primary_key[1]").line == 5
    assert spec.where("destination.fields.nope").line == 12  # falls back to the parent
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]


def test_events_purchases_catalog_subscriptions_deletes(tmp_path: Path) -> None:
    make_project(tmp_path, {
        "events.yml": """\
            model: orders
            primary_key: order_id
            destination:
              connection: braze
              object: events
              identifier: {external_id: customer_id}
              event:
                name_column: event_name
                time: placed_at
                properties: {total: total, items: item_count}
                app_id: my-app
        """,
        "purchases.yml": """\
            model: orders
            primary_key: [order_id, line]
            destination:
              connection: braze
              object: purchases
              identifier: {email: email}
              purchase: {product_id: sku, currency: currency, price: price, quantity: qty, time: placed_at,
                         properties: {color: color}}
        """,
        "catalog.yml": """\
            model: orders
            primary_key: sku
            destination:
              connection: braze
              object: catalog_items
              catalog: products
              item_id: sku
              fields: {title: title}
              on_removed: delete
        """,
        "subs.yml": """\
            model: braze_users
            primary_key: customer_id
            destination:
              connection: braze
              object: subscription_groups
              identifier: {phone: phone}
              subscription_group_id: 0f6e0a4c-1c1a-4a3c-9a52-5d1c2d3e4f50
              state: sms_opt_in
        """,
        "subs_by_column.yml": """\
            model: braze_users
            primary_key: customer_id
            destination:
              connection: braze
              object: subscription_groups
              identifier: {external_id: customer_id}
              subscription_group_id_column: group_id
              state: subscribed
        """,
        "deletes.yml": """\
            model: braze_users
            primary_key: customer_id
            destination:
              connection: braze
              object: user_deletes
              identifier: {braze_id: braze_id}
            guards: {max_removed: 100}
        """,
    })
    specs = {s.name: s for s in load_syncs(load_project(tmp_path))}
    assert list(specs) == ["catalog", "deletes", "events", "purchases", "subs", "subs_by_column"]
    assert specs["events"].destination.event == EventSpec(
        time="placed_at", name_column="event_name", properties={"total": "total", "items": "item_count"}, app_id="my-app"
    )
    assert specs["purchases"].destination.purchase == PurchaseSpec(
        product_id="sku", currency="currency", price="price", time="placed_at", quantity="qty",
        properties={"color": "color"},
    )
    assert specs["purchases"].destination.identifier == Identifier("email", "email")
    cat = specs["catalog"].destination
    assert (cat.catalog, cat.item_id, cat.identifier, cat.on_removed) == ("products", "sku", None, "delete")
    assert specs["subs"].destination.subscription == SubscriptionSpec(
        state="sms_opt_in", group_id="0f6e0a4c-1c1a-4a3c-9a52-5d1c2d3e4f50"
    )
    assert specs["subs_by_column"].destination.subscription == SubscriptionSpec(
        state="subscribed", group_id_column="group_id"
    )
    assert specs["deletes"].destination.identifier == Identifier("braze_id", "braze_id")


def test_no_syncs_folder_is_an_empty_list(tmp_path: Path) -> None:
    make_project(tmp_path, {})
    assert load_syncs(load_project(tmp_path)) == []


def test_models_in_subfolders_are_found(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {"a.yml": "model: deep\nprimary_key: id\ndestination: {connection: braze, object: users, identifier: {external_id: id}}\n"},
        models={"marts/crm/deep": "select 1 as id"},
    )
    assert [s.model for s in load_syncs(load_project(tmp_path))] == ["deep"]


# ---------------------------------------------------------------- single mistakes


USERS = """\
model: braze_users
primary_key: customer_id
destination:
  connection: braze
  object: users
  identifier: {external_id: customer_id}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (USERS + "  mode: 3\n", "syncs/s.yml:7:9: destination.mode: expected string, got integer 3"),
        (USERS + "guards: {max_changed_pct: -1}\n", "syncs/s.yml:7:27: guards.max_changed_pct: must be >= 0, got -1"),
        (USERS + "guards: []\n", "syncs/s.yml:7:9: guards: expected mapping, got list"),
        (USERS + "name: 'has space'\n", "syncs/s.yml:7:7: name: 'has space' is not valid: use letters, digits, "
         "'_', '.' and '-', starting with a letter, digit or '_'"),
        (USERS + "tags: [a, a]\n", "syncs/s.yml:7:7: tags: 'a' is listed more than once"),
        (USERS.replace("customer_id\ndest", "''\ndest"), "syncs/s.yml:2:14: primary_key: must not be empty"),
        (USERS.replace("customer_id\ndest", "[]\ndest"), "syncs/s.yml:2:14: primary_key: must not be empty"),
        (USERS.replace("object: users", "object: user"),
         "syncs/s.yml:5:11: destination.object: 'user' is not one of 'users', 'events', 'purchases', "
         "'catalog_items', 'subscription_groups', 'user_deletes', 'cohorts' (did you mean 'users'?)"),
        (USERS.replace("  identifier: {external_id: customer_id}\n", ""),
         "syncs/s.yml:3:1: destination: missing required key 'identifier' for object 'users'"),
        (USERS.replace("{external_id: customer_id}", "{}"),
         "syncs/s.yml:6:3: destination.identifier: give exactly one of external_id, user_alias, braze_id, email, phone"),
        (USERS + "  event: {name: x, time: t}\n", "syncs/s.yml:7:3: destination.event: not allowed for object 'users'"),
        (USERS + "  fields: {}\n", "syncs/s.yml:7:3: destination.fields: must not be empty"),
        (USERS + "  fields: {email: 5}\n", "syncs/s.yml:7:19: destination.fields.email: expected string, got integer 5"),
        ("- a\n- b\n", "syncs/s.yml:1:1: expected mapping, got list"),
        ("just text\n", "syncs/s.yml:1:1: expected mapping, got string 'just text'"),
        ("# only a comment\n", "syncs/s.yml:1:1: empty sync file"),
        (USERS + "model: again\n", "syncs/s.yml:7:1: model: duplicate key (first on line 1)"),
        (USERS.replace("events", "x") + "destination2: {}\n",
         "syncs/s.yml:7:1: destination2: unknown key (did you mean 'destination'?)"),
        (USERS + "zzz: 1\n", "syncs/s.yml:7:1: zzz: unknown key; expected one of: name, description, tags, model, "
         "primary_key, destination, guards, first_run, diff"),
    ],
)
def test_single_mistake_message(tmp_path: Path, text: str, expected: str) -> None:
    make_project(tmp_path, {"s.yml": text})
    assert problems_of(tmp_path) == [expected]


def test_subscription_group_uuid_and_unknown_model_name_pattern(tmp_path: Path) -> None:
    make_project(tmp_path, {"s.yml": """\
        model: ../etc/passwd
        primary_key: id
        destination:
          connection: braze
          object: subscription_groups
          identifier: {email: email}
          subscription_group_id: not-a-uuid
          state: s
    """})
    assert problems_of(tmp_path) == [
        "syncs/s.yml:1:8: model: '../etc/passwd' is not valid: use letters, digits, '_' and '-', "
        "starting with a letter, digit or '_'",
        "syncs/s.yml:7:26: destination.subscription_group_id: 'not-a-uuid' is not valid: expected a UUID like "
        "0f6e0a4c-1c1a-4a3c-9a52-5d1c2d3e4f50",
    ]


def test_problems_from_several_files_are_reported_together(tmp_path: Path) -> None:
    make_project(tmp_path, {
        "a.yml": USERS.replace("upsert", "x").replace("object: users", "object: usrs"),
        "b/c.yml": USERS.replace("connection: braze", "connection: brazee"),
        "d.yml": "a: [",
    })
    assert problems_of(tmp_path) == [
        "syncs/a.yml:5:11: destination.object: 'usrs' is not one of 'users', 'events', 'purchases', "
        "'catalog_items', 'subscription_groups', 'user_deletes', 'cohorts' (did you mean 'users'?)",
        "syncs/b/c.yml:4:15: destination.connection: unknown connection 'brazee' (did you mean 'braze'?)",
        "syncs/d.yml:1:5: YAML syntax error: expected the node content, but found '<stream end>'",
    ]


def test_unknown_connection_without_close_match_lists_known_ones(tmp_path: Path) -> None:
    make_project(tmp_path, {"s.yml": USERS.replace("connection: braze", "connection: warehouse")})
    assert problems_of(tmp_path) == [
        "syncs/s.yml:4:15: destination.connection: unknown connection 'warehouse'; reflow_project.yml defines: braze"
    ]


def test_duplicate_names_by_file_stem(tmp_path: Path) -> None:
    make_project(tmp_path, {"a/users.yml": USERS, "b/users.yaml": USERS})
    assert problems_of(tmp_path) == [
        "syncs/a/users.yml:1:1: name: duplicate sync name 'users' (also in syncs/b/users.yaml:1:1)",
        "syncs/b/users.yaml:1:1: name: duplicate sync name 'users' (also in syncs/a/users.yml:1:1)",
    ]


def test_two_models_with_one_name(tmp_path: Path) -> None:
    make_project(tmp_path, {"s.yml": USERS}, models={"a/braze_users": "select 1", "b/braze_users": "select 2"})
    assert problems_of(tmp_path) == [
        "syncs/s.yml:1:8: model: two models are named 'braze_users': models/a/braze_users.sql and "
        "models/b/braze_users.sql; model names must be unique"
    ]


def test_hidden_folders_and_other_files_are_ignored(tmp_path: Path) -> None:
    make_project(tmp_path, {"ok.yml": USERS, ".hidden/bad.yml": "a: [", "notes.txt": "a: ["})
    assert [s.name for s in load_syncs(load_project(tmp_path))] == ["ok"]


# ---------------------------------------------------------------- selection


def test_select_by_name_glob_tag_and_path(tmp_path: Path) -> None:
    make_project(tmp_path, {
        "users.yml": USERS + "tags: [daily]\n",
        "crm/users_weekly.yml": USERS + "tags: [weekly]\n",
        "crm/other.yml": USERS,
    })
    project = load_project(tmp_path)

    def names(*select: str) -> list[str]:
        return [s.name for s in load_syncs(project, select=list(select))]

    assert names() == ["other", "users_weekly", "users"]
    assert names("users") == ["users"]
    assert names("users*") == ["users_weekly", "users"]
    assert names("tag:weekly") == ["users_weekly"]
    assert names("syncs/crm") == ["other", "users_weekly"]
    assert names("syncs/users.yml", "other") == ["other", "users"]
    with pytest.raises(UserError, match=r"--select 'user' matches no sync \(did you mean 'users'\?\)"):
        names("user")


def test_select_still_validates_every_file(tmp_path: Path) -> None:
    make_project(tmp_path, {"users.yml": USERS, "broken.yml": "a: ["})
    assert len(problems_of(tmp_path, select=["users"])) == 1


# ---------------------------------------------------------------- columns


def test_check_columns_lists_every_missing_column_with_did_you_mean(tmp_path: Path) -> None:
    make_project(tmp_path, {
        "users.yml": """\
            model: braze_users
            primary_key: [customer_id, regoin]
            destination:
              connection: braze
              object: users
              identifier: {external_id: customer_id}
              fields:
                email: emial
                first_name: first_name
            """,
        "events.yml": """\
            model: orders
            primary_key: order_id
            destination:
              connection: braze
              object: events
              identifier: {user_alias: {alias_label: crm, alias_name: crm_id}}
              event: {name_column: kind, time: placed, properties: {total: Total}}
            """,
    })
    specs = load_syncs(load_project(tmp_path))
    columns = {
        "braze_users": ["customer_id", "region", "email", "first_name"],
        "orders": ["order_id", "crm_id", "kind", "placed_at", "total"],
    }
    with pytest.raises(SpecError) as info:
        check_columns(specs, lambda spec: columns[spec.model])
    assert [str(p) for p in info.value.problems] == [
        "syncs/events.yml:7:30: destination.event.time: column 'placed' is not returned by model 'orders' "
        "(did you mean 'placed_at'?)",
        "syncs/events.yml:7:57: destination.event.properties.total: column 'Total' is not returned by model "
        "'orders' (did you mean 'total'?)",
        "syncs/users.yml:2:28: primary_key[1]: column 'regoin' is not returned by model 'braze_users' "
        "(did you mean 'region'?)",
        "syncs/users.yml:8:5: destination.fields.email: column 'emial' is not returned by model 'braze_users' "
        "(did you mean 'email'?)",
    ]
    columns["braze_users"].append("regoin")
    columns["braze_users"].append("emial")
    columns["orders"] += ["placed", "Total"]
    check_columns(specs, lambda spec: columns[spec.model])


def test_check_columns_lets_warehouse_errors_through(tmp_path: Path) -> None:
    from engine.errors import WarehouseError

    make_project(tmp_path, {"users.yml": USERS})
    specs = load_syncs(load_project(tmp_path))

    def boom(spec: SyncSpec) -> list[str]:
        raise WarehouseError("table not found")

    with pytest.raises(WarehouseError):
        check_columns(specs, boom)


def test_column_refs_cover_every_column_field(tmp_path: Path) -> None:
    make_project(tmp_path, {
        "p.yml": """\
            model: orders
            primary_key: order_id
            destination:
              connection: braze
              object: purchases
              identifier: {phone: phone}
              purchase: {product_id: sku, currency: cur, price: price, quantity: qty, time: t, properties: {a: b}}
        """,
        "s.yml": """\
            model: orders
            primary_key: id
            destination:
              connection: braze
              object: subscription_groups
              identifier: {external_id: id}
              subscription_group_id_column: gid
              state: st
        """,
        "c.yml": """\
            model: orders
            primary_key: sku
            destination: {connection: braze, object: catalog_items, catalog: products, item_id: sku}
        """,
    })
    refs = {s.name: column_refs(s) for s in load_syncs(load_project(tmp_path))}
    assert refs["p"] == [
        ("primary_key", "order_id"), ("destination.identifier.phone", "phone"),
        ("destination.purchase.product_id", "sku"), ("destination.purchase.currency", "cur"),
        ("destination.purchase.price", "price"), ("destination.purchase.quantity", "qty"),
        ("destination.purchase.time", "t"), ("destination.purchase.properties.a", "b"),
    ]
    assert refs["s"] == [
        ("primary_key", "id"), ("destination.identifier.external_id", "id"),
        ("destination.state", "st"), ("destination.subscription_group_id_column", "gid"),
    ]
    assert refs["c"] == [("primary_key", "sku"), ("destination.item_id", "sku")]


# ---------------------------------------------------------------- the schema itself


def _walk_properties(schema: object, path: str = "") -> list[tuple[str, dict]]:
    found: list[tuple[str, dict]] = []
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            if isinstance(sub, dict) and set(sub) - {"properties"}:  # skip `false` and if/then stubs
                found.append((f"{path}.{name}".lstrip("."), sub))
            found += _walk_properties(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties", "propertyNames"):
            if isinstance(schema.get(key), dict):
                found.append((f"{path}.<{key}>", schema[key]))
                found += _walk_properties(schema[key], f"{path}.<{key}>")
    return found


@pytest.mark.parametrize("name", ["sync.schema.json", "project.schema.json"])
def test_schema_is_valid_and_every_property_is_described(name: str) -> None:
    schema = json.loads(schema_path(name).read_text())
    Draft202012Validator.check_schema(schema)
    props = _walk_properties(schema)
    assert len(props) > 20
    undescribed = [p for p, sub in props if "description" not in sub and "const" not in sub]
    assert undescribed == []


def test_closed_sets_are_enums() -> None:
    schema = json.loads(schema_path("sync.schema.json").read_text())
    dest = schema["properties"]["destination"]["properties"]
    for key in ("object", "mode", "on_removed", "nulls"):
        assert "enum" in dest[key]
    assert schema["properties"]["first_run"]["enum"] == ["send_all", "baseline"]


def test_scaffold_copy_of_minimal_is_independent(tmp_path: Path) -> None:
    shutil.copytree(MINIMAL, tmp_path / "p")
    (tmp_path / "p" / "syncs" / "braze_users.yml").write_text(USERS.replace("braze\n", "nope\n", 1))
    assert problems_of(tmp_path / "p") == [
        "syncs/braze_users.yml:4:15: destination.connection: unknown connection 'nope'; "
        "reflow_project.yml defines: braze"
    ]


def test_check_columns_locates_dotted_attribute_names(tmp_path: Path) -> None:
    make_project(tmp_path, {"users.yml": USERS + "  fields: {'a.b': ab, Favorite Color: colour}\n"})
    specs = load_syncs(load_project(tmp_path))
    with pytest.raises(SpecError) as info:
        check_columns(specs, lambda spec: ["customer_id", "color"])
    assert [str(p) for p in info.value.problems] == [
        "syncs/users.yml:7:12: destination.fields['a.b']: column 'ab' is not returned by model 'braze_users'",
        "syncs/users.yml:7:23: destination.fields.Favorite Color: column 'colour' is not returned by model "
        "'braze_users' (did you mean 'color'?)",
    ]


def test_prioritization_only_where_deletes_go_by_email_or_phone(tmp_path: Path) -> None:
    make_project(tmp_path, {"users.yml": USERS + "  prioritization: [unidentified]\n"})
    assert problems_of(tmp_path) == [
        "syncs/users.yml:7:19: destination.prioritization: prioritization applies to deleting by email or phone "
        "(user_deletes, or users with on_removed: delete)"]


def test_a_cohort_member_and_its_cohort_are_part_of_the_primary_key(tmp_path: Path) -> None:
    """A member is a row: with the user's column outside the key, a row whose user changed would add the
    new user and leave the old one in the cohort."""
    sync = """\
        model: braze_users
        primary_key: customer_id
        destination:
          connection: braze
          object: cohorts
          method: {method}
          identifier: {ident}
          {cohort}
          attribute: warehouse_cohorts
        guards: {{max_removed_pct: 20}}
        """
    root = make_project(tmp_path, {
        "by_user_id.yml": sync.format(method="attribute", ident="{external_id: user_id}",
                                      cohort="cohort: {id: vip}"),
        "by_column.yml": sync.format(method="attribute", ident="{external_id: customer_id}",
                                     cohort="cohort_column: tier"),
        "fine.yml": sync.format(method="attribute", ident="{external_id: customer_id}", cohort="cohort: {id: vip}"),
    })
    assert problems_of(root) == [
        "syncs/by_column.yml:8:18: destination.cohort_column: column 'tier' must be part of primary_key for "
        "cohorts (one row per member and cohort): e.g. primary_key: [customer_id, tier]",
        "syncs/by_user_id.yml:7:29: destination.identifier.external_id: column 'user_id' must be part of "
        "primary_key for cohorts (a member is a row): e.g. primary_key: [customer_id, user_id]",
    ]


def test_syncs_that_would_undo_each_others_cohorts_are_refused(tmp_path: Path) -> None:
    cohort = """\
        model: braze_users
        primary_key: customer_id
        destination:
          connection: braze
          object: cohorts
          method: attribute
          identifier: {external_id: customer_id}
          cohort: {id: vip}
          attribute: warehouse_cohorts
        guards: {max_removed_pct: 20}
        """
    users = """\
        model: braze_users
        primary_key: customer_id
        destination:
          connection: braze
          object: users
          identifier: {external_id: customer_id}
          fields: {first_name: customer_id, warehouse_cohorts: customer_id}
        """
    root = make_project(tmp_path, {"a.yml": cohort, "b.yml": cohort, "users.yml": users})
    got = problems_of(root)
    assert any(p.startswith("syncs/b.yml:8:") and "cohort 'vip' (attribute warehouse_cohorts) is also kept by sync 'a'"
               in p for p in got), got
    assert any(p.startswith("syncs/users.yml:7:") and "'warehouse_cohorts' holds the cohort ids of sync 'a'" in p
               for p in got), got
    assert len(got) == 2, got
