"""The topic catalogue's producers and consumers agree with the services' code, and the
least-privilege ACLs derived from them (events.acls) grant each principal its part only.

No broker: the services are built as descriptions (no client exists until they are served).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from events.acls import (
    ADMIN,
    FIXED_GROUPS,
    OPERATOR,
    OPERATOR_GROUP,
    Acl,
    consumer_group,
    desired_acls,
    in_environment,
    parties,
)
from events.catalogue import SCHEMAS_ROOT, Catalogue, CatalogueError, TopicSpec, load_topics
from events.projection import ProjectionRunner
from events.routing import Router
from events.service import Service, ServiceSettings, build_context
from schemas.models import ALL_EVENTS
from services.analytics.app import Settings as AnalyticsSettings
from services.analytics.pipeline import app_id, build, source_topics
from services.inventory.app import SERVICE as INVENTORY
from services.notifications.app import SERVICE as NOTIFICATIONS
from services.orders.app import Settings as OrdersSettings
from services.orders.app import build_service as build_orders
from services.payments.app import SERVICE as PAYMENTS
from services.query.projections import TOPICS as QUERY_TOPICS
from services.query.projections import build_projection
from services.shipping.app import Settings as ShippingSettings
from services.shipping.app import build_service as build_shipping

SERVICES_ROOT = Path(__file__).resolve().parents[2] / "services"
CATALOGUE = Catalogue.load()
TOPICS = list(CATALOGUE.topics.values())


def handler_services() -> dict[str, Service]:
    """The services whose consumer runs a router, as their entrypoints build them."""
    services = [
        build_orders(OrdersSettings.model_construct()),
        INVENTORY,
        PAYMENTS,
        build_shipping(ShippingSettings.model_construct()),
        NOTIFICATIONS,
    ]
    return {s.name: s for s in services}


def manifest_services() -> set[str]:
    """The manifest's Kafka clients (its third-party stand-ins, ``stand_in: true``, are none)."""
    doc = yaml.safe_load((SERVICES_ROOT / "manifest.yaml").read_text())
    return {name for name, body in doc["services"].items() if not body.get("stand_in")}


def consumed_by(name: str) -> set[str]:
    return {t.name for t in TOPICS if name in t.consumers}


def produced_by(name: str) -> set[str]:
    return {t.name for t in TOPICS if name in t.producers}


def constructed_events(service: str) -> set[str]:
    """Event types whose model the service's package constructs (``Model(...)``)."""
    found = set()
    for path in (SERVICES_ROOT / service).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ALL_EVENTS
            ):
                found.add(node.func.id)
    return found


def handled(router: Router) -> set[str]:
    return set(router.handlers)


# -- the catalogue agrees with the code -----------------------------------------------------


def test_everyone_the_catalogue_names_is_a_service_or_the_operator() -> None:
    assert set(parties(TOPICS)) <= manifest_services() | {OPERATOR}
    assert all(t.producers for t in TOPICS), "every topic has a producer"


@pytest.mark.parametrize("name", sorted(handler_services()))
def test_a_services_consumed_topics_are_its_subscriptions(name: str) -> None:
    service = handler_services()[name]
    assert consumed_by(name) == set(service.topics)
    # and each event type it handles travels on one of them
    assert {CATALOGUE.topic_for(t) for t in handled(service.router)} <= set(service.topics)


@pytest.mark.parametrize("name", sorted(handler_services()))
def test_a_service_produces_exactly_the_topics_of_the_events_it_emits(name: str) -> None:
    emitted = constructed_events(name) - handled(handler_services()[name].router)
    on_its_topics = {e for t in produced_by(name) for e in CATALOGUE.topics[t].event_types}
    assert emitted == on_its_topics


def test_the_query_projection_reads_what_the_catalogue_says() -> None:
    assert consumed_by("query") == set(QUERY_TOPICS)
    projection = build_projection()
    assert {CATALOGUE.topic_for(t) for t in projection.handlers} <= set(QUERY_TOPICS)
    assert not produced_by("query")


def test_analytics_reads_what_the_catalogue_says() -> None:
    topics, _ = source_topics(CATALOGUE)
    assert consumed_by("analytics") == set(topics)
    assert not produced_by("analytics")


def test_requests_topics_are_written_by_the_operator_alone() -> None:
    for spec in TOPICS:
        assert (spec.producers == (OPERATOR,)) == spec.name.endswith(".requests"), spec.name


# -- the groups the ACLs name are the groups the code joins ---------------------------------


@pytest.mark.parametrize("name", sorted(handler_services()))
def test_a_services_consumer_group_is_its_prefixed_name(name: str, tmp_path: Path) -> None:
    settings = ServiceSettings.model_construct(var_dir=tmp_path, topic_prefix="env1-")
    ctx = build_context(handler_services()[name], settings)
    assert ctx.consumer is not None
    assert ctx.consumer.name == consumer_group(name, "env1-") == f"env1-{name}"


def test_the_query_projections_group_is_its_readers() -> None:
    runner = ProjectionRunner(build_projection("env1-"), None, None, None)  # type: ignore[arg-type]
    # events.reading.reader names the group "<consumer name>-reader"
    assert f"{runner.consumer_name}-reader" == consumer_group("query", "env1-")
    assert FIXED_GROUPS == {"query": "projection-query-reader"}


def test_analytics_group_and_changelogs_are_under_its_app_id(tmp_path: Path) -> None:
    settings = AnalyticsSettings.model_construct(var_dir=tmp_path, topic_prefix="env1-")
    analytics = build(settings.analytics_config())
    assert analytics.app.conf.id == app_id("env1-") == consumer_group("analytics", "env1-")
    changelogs = [t.changelog_topic.get_topic_name() for t in analytics.app.tables.values()]
    assert changelogs
    assert all(name.startswith("env1-analytics-") for name in changelogs)


# -- the bindings ------------------------------------------------------------------------


def topic_ops(acls: list[Acl], name: str, topic: str) -> set[str]:
    return {
        a.operation
        for a in acls
        if a.principal == f"User:{name}"
        and a.resource_type == "TOPIC"
        and a.pattern_type == "LITERAL"
        and a.resource == topic
    }


def groups_of(acls: list[Acl], name: str, operation: str = "READ") -> set[str]:
    return {
        a.resource
        for a in acls
        if a.principal == f"User:{name}" and a.resource_type == "GROUP" and a.operation == operation
    }


ACLS = desired_acls(TOPICS, "")


def test_orders_may_write_its_events_and_not_payments_events() -> None:
    assert topic_ops(ACLS, "orders", "orders.events") == {"WRITE", "DESCRIBE"}
    assert topic_ops(ACLS, "orders", "payments.events") == {"READ", "DESCRIBE"}
    assert "WRITE" not in topic_ops(ACLS, "orders", "orders.requests")
    assert topic_ops(ACLS, "orders", "notifications.events") == set()


def test_inventory_reads_orders_events_and_dead_letters_to_its_twin() -> None:
    assert topic_ops(ACLS, "inventory", "orders.events") == {"READ", "DESCRIBE"}
    assert topic_ops(ACLS, "inventory", "orders.events.dlq") == {"WRITE", "DESCRIBE"}
    # its own events' dead letters are written by their consumers, not by inventory
    assert topic_ops(ACLS, "inventory", "inventory.events.dlq") == set()
    assert topic_ops(ACLS, "query", "inventory.events.dlq") == {"WRITE", "DESCRIBE"}


def test_each_service_writes_only_its_topics_and_the_twins_of_what_it_reads() -> None:
    for name in manifest_services():
        written = {
            a.resource for a in ACLS if a.principal == f"User:{name}" and a.operation == "WRITE"
        }
        twins = {f"{t}.dlq" for t in consumed_by(name)} if name != "analytics" else set()
        prefixed = {"analytics-"} if name == "analytics" else set()
        assert written == produced_by(name) | twins | prefixed, name
        assert groups_of(ACLS, name) == ({consumer_group(name, "")} if consumed_by(name) else set())


def test_the_prefix_names_topics_and_groups() -> None:
    prefixed = Catalogue.load().prefixed("env1-")
    acls = desired_acls(list(prefixed.topics.values()), "env1-")
    assert topic_ops(acls, "orders", "env1-orders.events") == {"WRITE", "DESCRIBE"}
    assert topic_ops(acls, "orders", "orders.events") == set()
    assert groups_of(acls, "orders") == {"env1-orders"}
    assert groups_of(acls, "query") == {"projection-query-reader"}
    assert groups_of(acls, "analytics") == {"env1-analytics"}
    resources = {a.resource for a in acls if a.resource_type == "TOPIC"}
    assert all(r.startswith("env1-") for r in resources)


def test_analytics_may_create_and_use_its_changelogs_only() -> None:
    prefixed = [a for a in ACLS if a.pattern_type == "PREFIXED" and a.resource_type == "TOPIC"]
    assert {(a.principal, a.resource, a.operation) for a in prefixed} == {
        ("User:analytics", "analytics-", op) for op in ("CREATE", "READ", "WRITE", "DESCRIBE")
    }
    assert topic_ops(ACLS, "analytics", "orders.events") == {"READ", "DESCRIBE"}
    assert topic_ops(ACLS, "analytics", "orders.events.dlq") == set()  # faust skips, logs


def test_the_operator_writes_requests_reads_everything_and_redrives() -> None:
    for spec in TOPICS:
        assert topic_ops(ACLS, OPERATOR, spec.dead_letter) == {"READ", "DESCRIBE"}
        assert topic_ops(ACLS, OPERATOR, spec.name) == {"READ", "DESCRIBE", "WRITE"}
    services = manifest_services()
    assert groups_of(ACLS, OPERATOR, "DESCRIBE") == {consumer_group(s, "") for s in services}
    assert OPERATOR_GROUP in groups_of(ACLS, OPERATOR)
    assert ("GROUP", "PREFIXED", "replay-") in {
        (a.resource_type, a.pattern_type, a.resource)
        for a in ACLS
        if a.principal == f"User:{OPERATOR}"
    }


def test_only_allow_bindings_from_any_host_and_no_cluster_grants() -> None:
    assert sorted(set(ACLS)) == ACLS
    assert {a.permission for a in ACLS} == {"ALLOW"}
    assert {a.host for a in ACLS} == {"*"}
    assert {a.resource_type for a in ACLS} == {"TOPIC", "GROUP"}
    assert f"User:{ADMIN}" not in {a.principal for a in ACLS}


def test_a_topic_nobody_dead_letters_is_not_redriven() -> None:
    spec = TopicSpec("x.events", 1, -1, (), {}, ("orders",), ("analytics",))
    acls = desired_acls([spec], "")
    assert topic_ops(acls, OPERATOR, "x.events") == {"READ", "DESCRIBE"}


# -- the catalogue's new fields are checked when loaded ----------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("producers: orders", "must be a list of names"),
        ("producers: [Orders]", "is not a name"),
        ("consumers: [query, query]", "twice"),
        ("consumers: [1]", "must be a list of names"),
    ],
)
def test_bad_producers_or_consumers_are_refused(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(f"topics:\n  a.events:\n    events: []\n    {body}\n")
    with pytest.raises(CatalogueError, match=problem):
        load_topics(path)


def test_the_catalogue_file_is_the_one_loaded() -> None:
    specs = load_topics(SCHEMAS_ROOT / "topics.yaml")
    assert {s.name: (s.producers, s.consumers) for s in specs} == {
        t.name: (t.producers, t.consumers) for t in TOPICS
    }


def test_drift_is_judged_within_the_environment() -> None:
    other_env = Acl("User:orders", "TOPIC", "LITERAL", "env2-orders.events", "WRITE")
    this_env = Acl("User:orders", "TOPIC", "LITERAL", "env1-payments.events", "WRITE")
    shared = Acl("User:query", "GROUP", "LITERAL", "projection-query-reader", "READ")
    assert not in_environment(other_env, "env1-")
    assert in_environment(this_env, "env1-")
    assert in_environment(shared, "env1-")
    assert in_environment(other_env, "")  # no prefix: the whole cluster is the environment
