"""Structural checks for docker-compose.kafka.yml (no Docker engine required)."""

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.kafka.yml"
WORKER_WEB_PORT = 6066  # LLMOPT_WEB_PORT


def load_compose() -> dict:
    with COMPOSE.open() as fh:
        return yaml.safe_load(fh)


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _published(port) -> tuple[str, str]:
    if isinstance(port, dict):
        return str(port.get("published")), str(port.get("target"))
    *host, container = str(port).split(":")
    return (host[-1] if host else ""), container.split("/")[0]


def test_kafka_runs_single_node_kraft_without_zookeeper():
    compose = load_compose()
    kafka = compose["services"]["kafka"]
    env = _env(kafka)

    assert kafka["image"].startswith("apache/kafka:")
    assert {"broker", "controller"} <= set(env["KAFKA_PROCESS_ROLES"].split(","))
    voter_id, _, voter_addr = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == env["KAFKA_NODE_ID"] and voter_addr
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert env.get("CLUSTER_ID")
    assert "zookeeper" not in yaml.safe_dump(compose).lower()


def test_kafka_advertises_localhost_9092_for_host_clients():
    kafka = load_compose()["services"]["kafka"]
    env = _env(kafka)

    advertised = dict(
        entry.split("://", 1) for entry in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    host_listeners = [name for name, addr in advertised.items() if addr == "localhost:9092"]
    assert host_listeners, "no listener advertised as localhost:9092"
    assert f"{host_listeners[0]}://" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert ("9092", "9092") in [_published(p) for p in kafka.get("ports", [])]


def test_kafka_topics_are_explicit_and_single_replica():
    kafka = load_compose()["services"]["kafka"]
    env = _env(kafka)

    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


def test_observability_services_only_in_profile():
    services = load_compose()["services"]

    assert "profiles" not in services["kafka"]
    for name in ("prometheus", "grafana"):
        assert services[name].get("profiles") == ["observability"], name


def test_prometheus_scrapes_worker_metrics_port():
    prometheus = load_compose()["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    config_path = REPO / mounts["/etc/prometheus/prometheus.yml"]
    assert config_path.is_file(), config_path

    config = yaml.safe_load(config_path.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["llmopt-worker"]
    targets = [t for sc in worker["static_configs"] for t in sc["targets"]]
    assert targets and all(t.rsplit(":", 1)[1] == str(WORKER_WEB_PORT) for t in targets)
    assert worker.get("metrics_path", "/metrics") == "/metrics"


def _grafana_mounts() -> dict[str, Path]:
    grafana = load_compose()["services"]["grafana"]
    return {v.split(":")[1]: REPO / v.split(":")[0] for v in grafana["volumes"]}


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard():
    mounts = _grafana_mounts()
    provisioning = mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"

    providers = yaml.safe_load((provisioning / "dashboards" / "llmopt.yml").read_text())
    (provider,) = providers["providers"]
    folder = provider["options"]["path"].rstrip("/")
    dashboards = {target: src for target, src in mounts.items() if target.startswith(folder + "/")}
    assert dashboards, f"nothing mounted under {folder}"
    for src in dashboards.values():
        dashboard = json.loads(src.read_text())
        assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
        uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
        uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
        assert uids == {ds["uid"]}


def test_grafana_dashboard_queries_only_metrics_the_worker_exposes():
    """Every llmopt_* series a panel queries is in a worker's exposition."""
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_metrics import exercise_every_metric

    exercise_every_metric()
    exposed = {
        s.name
        for f in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for s in f.samples
    }
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = {name for e in exprs for name in re.findall(r"\bllmopt_[a-z0-9_]+", e)}
    assert len(queried) >= 8
    assert queried <= exposed, sorted(queried - exposed)
    panels = {p["title"] for p in dashboard["panels"]}
    assert {"Decisions / s", "Arm shares per policy", "Consumer lag"} <= panels
