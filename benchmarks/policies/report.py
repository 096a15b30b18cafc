"""The policies tables."""

from __future__ import annotations

from typing import Any

from benchmarks.policies.summary import checkpoints
from benchmarks.policies.workloads import ARMS_B, DIM, NOISE_SD


def format_recovery(r: float | None) -> str:
    return "never" if r is None else f"{r:,.0f}"


def render(table: dict[str, dict[str, Any]], rounds: dict[str, int]) -> str:
    titles = {
        "A": "A: 5 Bernoulli arms (.85/.75/.65/.60/.50, in a seeded order)",
        "B": f"B: linear contextual, d={DIM} (+bias), {ARMS_B} arms, noise σ={NOISE_SD}",
        "C": "C: A with the best arm dropping to .55 half-way",
    }
    lines: list[str] = []
    for w in ("A", "B", "C"):
        rows = table[w]
        if not rows:
            continue
        cps = [str(c) for c in checkpoints(rounds[w])]
        head = ["policy", "rounds/s", "sel p50", "sel p99", "upd p50", "upd p99"]
        head += [f"regret@{int(c) // 1000}k" for c in cps]
        if w == "C":
            head.append("recover")
        head += ["seeds", "on-cpu", "bg cores"]
        body = []
        for key, m in rows.items():
            if "error" in m:
                body.append([key, "ERROR: " + str(m["error"])[:90]])
                continue
            row = [key, f"{m['throughput_rps']:,.0f}"]
            row += [
                f"{m[k]:.1f}"
                for k in ("select_p50_us", "select_p99_us", "update_p50_us", "update_p99_us")
            ]
            row += [f"{m['regret'][c]:,.1f}" if c in m["regret"] else "-" for c in cps]
            if w == "C":
                row.append(format_recovery(m.get("recovery_rounds")))
            row += [str(m["seeds"]), f"{m['on_cpu']:.0%}", f"{m['other_cores']:.2f}"]
            body.append(row)
        ok_rows = [r for r in [head, *body] if len(r) == len(head)]
        widths = [max(len(r[i]) for r in ok_rows) for i in range(len(head))]
        widths[0] = max(len(r[0]) for r in [head, *body])
        lines.append(f"\n{titles[w]} — {rounds[w]:,} rounds; µs per call; median of seeds")
        lines.append(
            "  ".join(
                h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head)
            )
        )
        for r in body:
            if len(r) == 2 and r[1].startswith("ERROR"):
                lines.append(f"{r[0].ljust(widths[0])}  {r[1]}")
            else:
                lines.append(
                    "  ".join(
                        c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                        for i, c in enumerate(r)
                    )
                )
    return "\n".join(lines)


def render_extras(
    snap: dict[str, Any],
    batch: dict[str, Any],
    verdict: list[dict[str, Any]],
    skipped: dict[str, str],
) -> str:
    lines = [
        "",
        f"LinUCB 20 arms d={DIM} snapshot+restore: p50 {snap['total_p50_ms']:.2f} ms "
        f"(snapshot {snap['snapshot_p50_ms']:.2f} + restore {snap['restore_p50_ms']:.2f}), "
        f"p99 {snap['total_p99_ms']:.2f} ms, {snap['bytes']:,} bytes",
        f"LinUCB.select_batch({batch['batch']}) on B's shape: {batch['median_ms']:.2f} ms "
        f"= {batch['contexts_per_s']:,.0f} contexts/s",
    ]
    for lib, why in skipped.items():
        lines.append(f"skipped {lib}: {why}")
    lines.append("")
    for v in verdict:
        mark = "PASS" if v["pass"] else "FAIL"
        lines.append(f"{mark}  {v['target']}: {v['detail']}")
    return "\n".join(lines)
