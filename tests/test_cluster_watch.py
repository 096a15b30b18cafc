"""The worker's view of its cluster (app/stream/cluster_watch.py): outages, a new
cluster behind the same address, missing topics, logs that restarted below a
consumer's position, and what /health says about each."""

from __future__ import annotations

import logging

from app.learner import Learner
from app.stream.cluster_watch import (
    ClusterState,
    health_report,
    missing,
    offsets_key,
    restarted,
    restarted_partitions,
    topic_role,
)
from app.stream.cluster_watcher import _OutageLogFilter
from tests.test_learner import config, outcome


def test_one_failed_probe_is_not_an_outage_two_are() -> None:
    s = ClusterState("k:9092")
    assert s.probe_ok(10.0, "c1") is None, "the first answer is no reconnect"
    assert s.probe_failed(11.0, "KafkaConnectionError: refused") is False
    assert not s.unreachable and s.problem(11.5) is None
    assert s.probe_failed(12.0, "KafkaConnectionError: refused") is True
    assert s.probe_failed(13.0, "KafkaConnectionError: refused") is False, "reported once"
    problem = s.problem(14.0)
    assert problem == "Kafka cluster at k:9092 unreachable for 3.0 s: KafkaConnectionError: refused"


def test_an_answer_after_an_outage_is_a_reconnect_and_clears_the_problem() -> None:
    s = ClusterState("k:9092")
    s.probe_ok(0.0, "c1")
    s.probe_failed(1.0, "refused")
    s.probe_failed(2.0, "refused")
    r = s.probe_ok(4.5, "c1")
    assert r is not None and r.down_for == 3.5 and not r.new_cluster
    assert s.failures == 0
    # Not healthy before its topics were checked (a lost topic is re-created first).
    assert s.problem(4.5) == "Kafka cluster at k:9092 reachable again; checking its topics"
    s.topics_checked = True
    assert s.problem(4.5) is None
    assert s.probe_ok(5.0, "c1") is None, "steady state: nothing to report"


def test_a_lone_failed_probe_then_an_answer_is_no_reconnect() -> None:
    s = ClusterState("k:9092")
    s.probe_ok(0.0, "c1")
    s.probe_failed(1.0, "timeout")
    assert s.probe_ok(2.0, "c1") is None


def test_another_cluster_id_is_a_new_cluster_even_without_a_seen_outage() -> None:
    s = ClusterState("k:9092")
    s.probe_ok(0.0, "c1")
    r = s.probe_ok(1.0, "c2")  # restarted between two probes
    assert r is not None and r.new_cluster and r.down_for is None
    assert (r.old_cluster_id, r.cluster_id, s.cluster_id) == ("c1", "c2", "c2")


def test_missing_topics_are_a_problem_that_says_what_to_do() -> None:
    s = ClusterState("k:9092", missing_topics=("a", "b", "c", "d", "e", "f", "g"))
    problem = s.problem(0.0)
    assert problem is not None
    assert "a, b, c, d, e and 2 more" in problem and "re-creating" in problem
    s.auto_create_topics = False
    assert "llmopt topics apply" in (s.problem(0.0) or "")
    s.missing_topics = ()
    assert s.problem(0.0) is None


def test_missing_lists_expected_names_absent_from_the_cluster() -> None:
    assert missing(["x", "y", "x"], ["y", "z"]) == ("x",)
    assert missing([], ["y"]) == ()


def test_a_position_beyond_the_log_end_means_the_log_restarted() -> None:
    assert restarted(5000, 12)
    assert not restarted(12, 12), "caught up"
    assert not restarted(3, 12), "behind"
    assert not restarted(None, 12) and not restarted(5, None), "nothing known yet"
    found = restarted_partitions({"a": 80, "b": 3, "c": 9, "d": None}, {"a": 0, "b": 3, "c": None})
    assert found == {"a": (80, 0)}


def test_health_is_503_with_the_reason_whatever_the_roles_say() -> None:
    assert health_report({"decide": True, "join": True}, None) == (
        200,
        {"status": "ready", "roles": {"decide": True, "join": True}},
    )
    assert health_report({"decide": False}, None)[0] == 503
    status, body = health_report({"decide": True}, "Kafka cluster at k:1 unreachable")
    assert status == 503
    assert body == {
        "status": "unavailable",
        "reason": "Kafka cluster at k:1 unreachable",
        "roles": {"decide": True},
    }


def test_topic_roles_are_bounded_labels() -> None:
    assert topic_role("llmopt.requests.v1") == "requests"
    assert topic_role("llmopt.dead-letter.v1.tabc123") == "dead_letter"
    assert topic_role("llmopt-tabc-join-pending-changelog") == "other"
    assert topic_role("anything") == "other"


def test_offsets_of_a_cluster_that_lost_its_logs_do_not_hide_the_new_ones() -> None:
    """The learner's redelivery check keyed by offsets_key: outcome offsets
    restart at 0 on a new cluster and are applied; a redelivery is still
    recognised within each cluster."""
    learner = Learner(config())
    learner.load("p", None, 0)
    old = offsets_key(2, "c1")
    assert learner.apply(outcome(n=1), old, 5000) == "applied"
    assert learner.seen("p", old, 17), "a redelivery on the old cluster"
    new = offsets_key(2, "c2")
    assert new != old
    assert not learner.seen("p", new, 17), "offset 17 of the new log is new"
    assert learner.apply(outcome(n=2), new, 17) == "applied"
    assert learner.seen("p", new, 17)
    assert learner.state("p")["updates"] == 2


def test_kafka_client_logs_are_held_back_only_while_the_cluster_is_unreachable() -> None:
    state = ClusterState("k:1")
    held = _OutageLogFilter(state)
    record = logging.makeLogRecord(
        {"name": "aiokafka", "levelno": logging.ERROR, "msg": "Unable connect"}
    )
    assert held.filter(record)
    state.probe_failed(0.0, "refused")
    state.probe_failed(0.5, "refused")
    assert not held.filter(record) and not held.filter(record)
    state.probe_ok(1.0, None)
    assert held.filter(record)
    assert held.take_count() == 2 and held.take_count() == 0
