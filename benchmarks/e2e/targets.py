"""The e2e targets and their verdicts."""

from __future__ import annotations

from typing import Any

TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0
TARGET_P99_RATE = 1000.0
TARGET_PUBLISH_COST = 0.05  # metrics publishing: < 5% of the all-roles drain
TARGET_OUTCOMES_RATIO = 0.5  # rewarded outcomes/s of the all-roles worker vs the echo's drain
TARGET_JOIN_LAG_S = 1.0  # join lag at each step's end, in seconds of that step's traffic
TARGET_LAG_P99_S = 1.0  # reward→decision lag p99 ...
TARGET_LAG_RATE = 1000.0  # ... at this offered rate


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    echo = results["configs"].get("echo", {}).get("throughput", {})
    echo_rate = echo.get("rate_per_s")
    for cfg in ("decide", "all"):
        r = results["configs"].get(cfg)
        if not r:
            continue
        tp = r.get("throughput")
        if tp is not None:
            ratio = r.get("ratio_vs_echo")
            targets.append(
                {
                    "config": cfg,
                    "target": f"drain >= {TARGET_RATIO} x echo",
                    "value": ratio,
                    "pass": bool(ratio is not None and ratio >= TARGET_RATIO and tp.get("complete"))
                    if echo_rate
                    else None,
                }
            )
        lat = r.get("latency")
        if lat is not None:
            step = next((s for s in lat["steps"] if s["offered_per_s"] == TARGET_P99_RATE), None)
            if step is not None:
                p99 = step["latency_ms"]["p99"]
                targets.append(
                    {
                        "config": cfg,
                        "target": (
                            f"p99 <= {TARGET_P99_MS:g} ms at {TARGET_P99_RATE:,.0f}/s, none lost"
                        ),
                        "value": p99,
                        "pass": bool(
                            p99 is not None and p99 <= TARGET_P99_MS and step["lost"] == 0
                        ),
                    }
                )
                early = step["first_2s_latency_ms"]["p99"]
                targets.append(
                    {
                        "config": cfg,
                        "target": "  same, first 2 s only (informational)",
                        "value": early,
                        "pass": bool(early is not None and early <= TARGET_P99_MS),
                        "informational": True,
                    }
                )
    targets += publish_cost_targets(results)
    targets += http_decide_targets(results)
    targets += learning_targets(results)
    return targets


def learning_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rewarded outcomes/s against the echo's drain of the same run; the
    join's lag after each step; the reward→decision lag p99."""
    learning = results.get("learning")
    if not learning:
        return []
    targets: list[dict[str, Any]] = []
    echo_rate = results["configs"].get("echo", {}).get("throughput", {}).get("rate_per_s")
    rate = learning["saturation"].get("outcomes_per_s")
    ratio = round(rate / echo_rate, 3) if rate and echo_rate else None
    targets.append(
        {
            "config": "all",
            "target": f"rewarded outcomes/s >= {TARGET_OUTCOMES_RATIO} x echo",
            "value": ratio,
            "pass": bool(ratio is not None and ratio >= TARGET_OUTCOMES_RATIO)
            if echo_rate
            else None,
        }
    )
    for step in learning.get("steps", []):
        lag = step["join_lag_seconds_of_traffic"]
        targets.append(
            {
                "config": "all",
                "target": f"join lag < {TARGET_JOIN_LAG_S:g} s of traffic after "
                f"{step['seconds']:g} s at {step['rate_per_s']:,.0f}/s",
                "value": lag,
                "pass": lag < TARGET_JOIN_LAG_S,
            }
        )
    p99 = learning.get("lag", {}).get("p99_s")
    targets.append(
        {
            "config": "all",
            "target": f"reward→decision lag p99 <= {TARGET_LAG_P99_S:g} s at "
            f"{TARGET_LAG_RATE:,.0f}/s",
            "value": p99,
            "pass": bool(p99 is not None and p99 <= TARGET_LAG_P99_S),
        }
    )
    return targets


def http_decide_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """POST /decide p99 at TARGET_P99_RATE offered, open loop, every answer
    a decision that reached the decisions topic; with ?ack=1 informational."""
    targets: list[dict[str, Any]] = []
    for step in (results.get("http_decide") or {}).get("steps", []):
        if step["offered_per_s"] != TARGET_P99_RATE:
            continue
        p99 = step["latency_ms"]["p99"]
        complete = step["errors"] == 0 and step["logged"] >= step["ok"]
        targets.append(
            {
                "config": "decide",
                "target": "  same, ?ack=1 (informational)"
                if step["ack"]
                else f"POST /decide p99 <= {TARGET_P99_MS:g} ms at {TARGET_P99_RATE:,.0f}/s",
                "value": p99,
                "pass": bool(p99 is not None and p99 <= TARGET_P99_MS and complete),
                "informational": step["ack"],
            }
        )
    return targets


def publish_cost_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Drain with metrics publishing (``all``) against without (``all-nopub``),
    measured in the same run: the cost is 1 - on/off, best runs and medians;
    processor CPU per request alongside (less sensitive to other load), and
    the CPU of one snapshot per publishing interval."""
    targets: list[dict[str, Any]] = []
    pub = results.get("publishing")
    if pub:
        targets.append(
            {
                "config": "all",
                "target": "  snapshot CPU per interval (informational)",
                "value": pub["core_fraction"],
                "informational": True,
                "pass": pub["core_fraction"] < TARGET_PUBLISH_COST,
            }
        )
    on = (results["configs"].get("all") or {}).get("throughput") or {}
    off = (results["configs"].get("all-nopub") or {}).get("throughput") or {}
    if not (on.get("rate_per_s") and off.get("rate_per_s")):
        return targets
    cost = 1 - on["rate_per_s"] / off["rate_per_s"]
    med_on, med_off = on.get("median_rate_per_s"), off.get("median_rate_per_s")
    us_on = (on.get("cpu_us_per_request") or {}).get("processor")
    us_off = (off.get("cpu_us_per_request") or {}).get("processor")
    targets += [
        {
            "config": "all",
            "target": f"publishing cost < {TARGET_PUBLISH_COST:.0%} of drain",
            "value": round(cost, 4),
            "pass": bool(cost < TARGET_PUBLISH_COST and on.get("complete") and off.get("complete")),
            "median_cost": round(1 - med_on / med_off, 4) if med_on and med_off else None,
        },
        {
            "config": "all",
            "target": "  same, processor CPU/request (informational)",
            "value": round(us_on / us_off - 1, 4) if us_on and us_off else None,
            "pass": bool(us_on and us_off and us_on / us_off - 1 < TARGET_PUBLISH_COST),
            "informational": True,
        },
    ]
    return targets


def compare_with_echo(configs: dict[str, dict[str, Any]]) -> None:
    """Adds each configuration's throughput and CPU per request relative to
    the echo's (``ratio_vs_echo``, ``ratio_vs_echo_median``, ``cpu_ratio_vs_echo``)."""
    echo_tp = configs.get("echo", {}).get("throughput") or {}
    for res in configs.values():
        tp = res.get("throughput") or {}
        if echo_tp.get("rate_per_s") and tp.get("rate_per_s"):
            res["ratio_vs_echo"] = round(tp["rate_per_s"] / echo_tp["rate_per_s"], 3)
        echo_us = (echo_tp.get("cpu_us_per_request") or {}).get("processor")
        us = (tp.get("cpu_us_per_request") or {}).get("processor")
        if echo_us and us:
            res["cpu_ratio_vs_echo"] = round(echo_us / us, 3)
        if echo_tp.get("median_rate_per_s") and tp.get("median_rate_per_s"):
            res["ratio_vs_echo_median"] = round(
                tp["median_rate_per_s"] / echo_tp["median_rate_per_s"], 3
            )
