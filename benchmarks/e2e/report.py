"""The e2e table."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.common import short_commit
from benchmarks.e2e.configs import LABELS


def fmt(v: Any, spec: str = ",.0f", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, spec)


def _row(cells: list[tuple[str, int]]) -> str:
    """Right-aligned columns after a left-aligned first one."""
    (first, w0), *rest = cells
    return f"{first:<{w0}}" + "".join(f" {text:>{w}}" for text, w in rest)


def render_http_decide(http: dict[str, Any] | None, duration: float) -> list[str]:
    """The POST /decide table (benchmarks/e2e/http_decide.py)."""
    if not http:
        return []
    out = [
        "",
        f"POST /decide on the decide worker, {duration:g} s per step: open loop (send times "
        f"fixed up front, latency from the scheduled send), {http['generators']} load "
        f"generator(s) x {http['connections_per_generator']} keep-alive connections; "
        f"saturation: {http['saturation']['mode']}",
    ]
    widths = [20, 8, 8, 7, 7, 7, 8, 7, 8, 8, 6, 6, 6]
    names = ["mode", "offered", "ans/s", "p50 ms", "p95", "p99", "max", "errors", "logged"]
    names += ["gen lag", "proc", "broker", "gen"]
    out.append(_row(list(zip(names, widths, strict=True))))
    for st in [*http["steps"], http["saturation"]]:
        lt, c = st["latency_ms"], st["cpu_cores"]
        mode = "closed loop" if st["offered_per_s"] is None else "open loop"
        cells = [
            mode + (" ?ack=1" if st["ack"] else ""),
            fmt(st["offered_per_s"]),
            fmt(st["answered_per_s"]),
            fmt(lt["p50"], ".2f"),
            fmt(lt["p95"], ".2f"),
            fmt(lt["p99"], ".2f"),
            fmt(lt["max"], ".1f"),
            str(st["errors"]),
            fmt(st["logged"]),
            fmt(st["max_send_lag_ms"], ".1f") if st["offered_per_s"] else "-",
            fmt(c.get("processor"), ".2f"),
            fmt(c.get("broker"), ".2f"),
            fmt(c.get("generators"), ".2f"),
        ]
        out.append(_row(list(zip(cells, widths, strict=True))))
    out.append(
        "  ans/s: 200 answers per second; logged: decisions the topic gained; gen lag: "
        "most ms a generator sent behind its schedule (counted in the latency); "
        "?ack=1: the answer waits for the broker's ack of the decision; compare with the "
        "Kafka path's request -> decision latency above"
    )
    return out


def render_learning(learning: dict[str, Any] | None) -> list[str]:
    """The learning side (benchmarks/e2e/learning.py): every decision rewarded."""
    if not learning:
        return []
    sat, lag = learning["saturation"], learning["lag"]
    shd = learning["saturation_sharded"]
    out = [
        "",
        "Learning, all-roles worker, every decision rewarded as it comes out:",
        f"  saturation through {sat['n']:,} pre-filled requests: "
        f"{fmt(sat['outcomes_per_s'])} outcomes/s joined (from the outcomes' times; "
        f"{fmt(sat.get('outcomes_per_s_scraped'))} from the counters scraped each second), "
        f"{fmt(sat['updates_per_s'])} "
        f"policy updates/s ({fmt(sat['updates'])} of {sat['n']:,} applied); worker CPU "
        f"{fmt(sat.get('worker_cpu_us_per_request'), '.1f')} µs per rewarded request; "
        f"its event loop's stalls p99 <= {fmt(sat.get('loop_stall_p99_s'), '.3f')} s",
        f"  the same, learning: sharded: {fmt(shd['outcomes_per_s'])} outcomes/s, "
        f"{fmt(shd['updates_per_s'])} policy updates/s ({fmt(shd['updates'])} applied); "
        f"worker CPU {fmt(shd.get('worker_cpu_us_per_request'), '.1f')} µs per request",
        f"  reward -> decision lag at {lag['rate_per_s']:,.0f}/s for {lag['seconds']:g} s "
        f"({fmt(lag['snapshots'])} snapshots; each snapshot's oldest reward, bucket bounds): "
        f"p50 <= {fmt(lag['p50_s'], '.2f')} s, p99 <= {fmt(lag['p99_s'], '.2f')} s"
        + _decisions(lag),
    ]
    for st in learning.get("steps", []):
        out.append(
            f"  {st['seconds']:g} s at {st['rate_per_s']:,.0f}/s: join "
            f"{st['join_lag_decisions']:,} decisions behind "
            f"({st['join_lag_seconds_of_traffic']:g} s of traffic), learner "
            f"{st['learner_lag_outcomes']:,} outcomes behind" + _decisions(st)
        )
    return out


def _decisions(part: dict[str, Any]) -> str:
    """Request → decision in a learning run (older results have none)."""
    d = part.get("decision_ms")
    if not d:
        return ""
    return f"; request -> decision p50 {fmt(d['p50'], '.0f')} ms, p99 {fmt(d['p99'], '.0f')} ms"


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    p = results["params"]
    out = [
        f"LLM Auto-Optimizer e2e benchmark: commit {short_commit(results['git_commit'])}, "
        f"{results['started_at']}, {results.get('wall_seconds', 0):.0f} s",
        f"machine: {m['nproc']} cores ({m['cpu_model']}), Python {m['python']}, load avg "
        f"{m['loadavg_start'][0]:.2f} at start; embedded broker (Tansu), a fresh one per "
        "measurement; broker, processor, driver and meter share the cores",
        "",
        f"Saturation throughput: N={p['n']:,} requests pre-filled, best of {p['repeat']} "
        "interleaved runs; rate = N / (last output received - first output produced)",
    ]
    widths = [20, 9, 9, 6, 6, 6, 9, 8, 8, 6, 6, 6, 6, 8]
    out.append(
        _row(
            list(
                zip(
                    [
                        "config",
                        "req/s",
                        "median",
                        "×echo",
                        "×med",
                        "×cpu",
                        "complete",
                        "drain s",
                        "start s",
                        "proc",
                        "broker",
                        "meter",
                        "other",
                        "µs/req",
                    ],
                    widths,
                    strict=True,
                )
            )
        )
    )
    for cfg, r in results["configs"].items():
        tp = r.get("throughput")
        if not tp:
            continue
        c = tp.get("cpu_cores") or {}
        us = (tp.get("cpu_us_per_request") or {}).get("processor")
        cells = [
            LABELS[cfg],
            fmt(tp["rate_per_s"]),
            fmt(tp.get("median_rate_per_s")),
            fmt(r.get("ratio_vs_echo"), ".2f"),
            fmt(r.get("ratio_vs_echo_median"), ".2f"),
            fmt(r.get("cpu_ratio_vs_echo"), ".2f"),
            "yes" if tp["complete"] else "NO",
            fmt(tp["drain_seconds"], ".2f"),
            fmt(tp["startup_to_first_output_s"], ".1f"),
            fmt(c.get("processor"), ".2f"),
            fmt(c.get("broker"), ".2f"),
            fmt(c.get("meter"), ".2f"),
            fmt(c.get("other"), ".2f"),
            fmt(us, ".1f"),
        ]
        out.append(
            _row(list(zip(cells, widths, strict=True)))
            + ("  (profiled)" if tp.get("profiled") else "")
        )
    out.append(
        "  ×echo, ×med: best and median rate over echo's; ×cpu: echo's processor CPU per "
        "request over this one's (insensitive to other load); proc/broker/meter/other: "
        "CPU cores used during the drain; µs/req: processor CPU per request"
    )
    for cfg, r in results["configs"].items():
        j = (r.get("throughput") or {}).get("join")
        if j:
            out.append(
                f"  {LABELS[cfg]}: join_rewards had joined {j['joined_at_start']:,} of "
                f"{p['n']:,} decisions when the last came out, then joined "
                f"{j['rate_per_s']:,.0f}/s ({j['backlog_at_end']:,} left after "
                f"{j['window_s']:g} s)"
            )
    out += [
        "",
        f"Latency, request sent -> output received, {p['duration_s']:g} s per offered rate "
        f"(driver process, bursts every {p['burst_ms']:g} ms; meter in this process)",
    ]
    widths = [20, 8, 8, 8, 7, 7, 7, 8, 6, 7, 7, 7, 6, 6, 6, 6, 9]
    out.append(
        _row(
            list(
                zip(
                    [
                        "config",
                        "offered",
                        "sent/s",
                        "out/s",
                        "p50 ms",
                        "p95",
                        "p99",
                        "max",
                        "lost",
                        "->proc",
                        "2s p50",
                        "2s p99",
                        "proc",
                        "broker",
                        "driver",
                        "other",
                        "join lag",
                    ],
                    widths,
                    strict=True,
                )
            )
        )
    )
    for cfg, r in results["configs"].items():
        lat = r.get("latency")
        if not lat:
            continue
        for st in lat["steps"]:
            lt, c = st["latency_ms"], st["cpu_cores"]
            cells = [
                LABELS[cfg],
                fmt(st["offered_per_s"]),
                fmt(st["achieved_per_s"]),
                fmt(st["received_per_s"]),
                fmt(lt["p50"], ".2f"),
                fmt(lt["p95"], ".2f"),
                fmt(lt["p99"], ".2f"),
                fmt(lt["max"], ".1f"),
                str(st["lost"]),
                fmt(st["to_processor_send_ms"]["p50"], ".1f"),
                fmt(st["first_2s_latency_ms"]["p50"], ".2f"),
                fmt(st["first_2s_latency_ms"]["p99"], ".2f"),
                fmt(c.get("processor"), ".2f"),
                fmt(c.get("broker"), ".2f"),
                fmt(c.get("driver"), ".2f"),
                fmt(c.get("other"), ".2f"),
                fmt(st.get("join_backlog_at_end")),
            ]
            out.append(_row(list(zip(cells, widths, strict=True))))
    out.append(
        "  ->proc: p50 ms from send to the processor's produce() of the output (Kafka "
        "CreateTime, 1 ms resolution); 2s p50/p99: over the first 2 s of sends (the "
        "broker's fetch cost grows during a step); proc..other: CPU cores during the "
        "step; join lag: decisions join_rewards had not committed at the end"
    )
    out += render_http_decide(results.get("http_decide"), p["duration_s"])
    out += render_learning(results.get("learning"))
    out += ["", "Targets"]
    for t in results["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        if t.get("informational"):
            verdict = verdict.lower()
        val = fmt(t["value"], ".2f")
        out.append(f"  {verdict}  {LABELS[t['config']]:<20} {t['target']:<42} measured {val}")
    if results.get("errors"):
        out += ["", "Errors"] + [f"  {e}" for e in results["errors"]]
    return "\n".join(out)
