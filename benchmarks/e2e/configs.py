"""The processors under test, and the run-wide options the command line sets."""

from __future__ import annotations

from pathlib import Path

from app.settings import POLICIES_PATH

CONFIGS: dict[str, str | None] = {
    "echo": None,  # benchmarks/echo_worker.py
    "decide": "decide",
    "all": "decide,join,learn",
    # The all-roles worker without the ops view (no metrics publishing, no
    # dashboard feed): "all" against it is what publishing costs.
    "all-nopub": "decide,join,learn",
}
LABELS = {
    "echo": "echo (aiokafka)",
    "decide": "pipeline decide",
    "all": "pipeline all roles",
    "all-nopub": "all, no metrics pub",
}
# Settings of a configuration's worker, on top of --worker-env.
CONFIG_ENV: dict[str, dict[str, str]] = {
    "all-nopub": {"LLMOPT_METRICS_PUBLISH_SECONDS": "0", "LLMOPT_DASHBOARD_HISTORY_POINTS": "0"},
}
ECHO_OUTPUT_TOPIC = "llmopt.bench-echo.v1"

# Waiting for a quiet machine before each measurement (--quiet-wait, --quiet-threshold).
QUIET = {"wait": 30.0, "threshold": 0.3}

# Seconds to watch join_rewards' progress after a drain (--join-window).
JOIN_WINDOW = [10.0]

# LLMOPT_* settings given to the pipeline workers (--worker-env), for experiments.
WORKER_ENV: dict[str, str] = {}


def context_free_policies(directory: Path) -> Path:
    """config/policies.yaml with the context-free policy as the default: the
    figures are the pipeline's, comparable across versions, not those of the
    tuner's model fits that the demo's default policy makes."""
    text = POLICIES_PATH.read_text()
    if "\ndefault_policy: default\n" not in text:
        raise ValueError(f"{POLICIES_PATH}: expected 'default_policy: default'")
    path = directory / "policies-context-free.yaml"
    path.write_text(text.replace("\ndefault_policy: default\n", "\ndefault_policy: context-free\n"))
    return path


def command(cfg: str) -> str:
    roles = CONFIGS[cfg]
    if roles is None:
        return (
            "python -m benchmarks.echo_worker --bootstrap ... --input llmopt.requests.v1 "
            f"--output {ECHO_OUTPUT_TOPIC} --group ..."
        )
    return f"python -m app.cli worker --roles {roles}"
