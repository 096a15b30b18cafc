"""A backtest's results as a terminal table, JSON, and a self-contained HTML
page with inline SVG plots (no scripts, no external stylesheets or CDNs):
estimated value with its interval per policy, cumulative estimated reward
over time, and arm shares over time per policy.

Numbers are shown to significant digits, not a fixed number of decimals: an
interval's width to two significant digits (the value and bounds to the same
decimals), a value without interval to three — click-through rates of 0.002
stay readable. Colours: the Okabe–Ito palette up to eight series; beyond it,
arm shares show the seven largest arms and group the rest as "other", and
policies get evenly spaced hues.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

import numpy as np
import orjson

from app.evaluation.backtest import BacktestResult
from app.evaluation.estimators import Estimate

__all__ = ["format_estimate", "render_html", "render_json", "render_table"]

# A colour-blind-safe palette (Okabe–Ito); more series: see _colors.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)


OTHER_COLOR = "#BBBBBB"


def _colors(n: int) -> list[str]:
    """``n`` distinct colours: Okabe–Ito, or evenly spaced hues when more."""
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    return [f"hsl({round(360 * i / n)}, 65%, {45 if i % 2 else 60}%)" for i in range(n)]


def _decimals(value: float, low: float = math.nan, high: float = math.nan) -> int:
    """Decimals showing an interval's width to 2 significant digits, or a
    bare value to 3."""
    if math.isfinite(low) and math.isfinite(high) and high > low:
        ref, sig = high - low, 2
    elif math.isfinite(value) and value != 0:
        ref, sig = abs(value), 3
    else:
        return 3
    return min(12, max(0, sig - 1 - math.floor(math.log10(ref))))


def _num(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def _fmt(x: float | None, digits: int | None = None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return _num(x, _decimals(x) if digits is None else digits)


def format_estimate(value: float, low: float = math.nan, high: float = math.nan) -> str:
    """``value [low, high]`` to significant digits.

    >>> format_estimate(0.0023596, -0.0000123, 0.0049)
    '0.0024 [0.0000, 0.0049]'
    >>> format_estimate(0.61234)
    '0.612'
    """
    if not math.isfinite(value):
        return "-"
    d = _decimals(value, low, high)
    text = _num(value, d)
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{_num(low, d)}, {_num(high, d)}]"
    return text


def _cell(est: Estimate) -> str:
    if not math.isfinite(est.value):
        return "n/a" if est.note.startswith("needs") else "-"
    return format_estimate(est.value, est.low, est.high)


def render_table(result: BacktestResult) -> str:
    """Each estimator's value and interval per policy, best first by the
    primary estimator.

    >>> from app.evaluation.backtest import Backtest, PolicySpec
    >>> from app.evaluation.logged_data import LoggedData
    >>> d = LoggedData(actions=np.array([0, 1] * 50), rewards=np.array([1.0, 0.0] * 50),
    ...                propensities=np.full(100, 0.5), arm_names=("a", "b"))
    >>> r = Backtest([PolicySpec.fixed("a"), PolicySpec.logging()], estimators=["ips"],
    ...              n_bootstrap=0).run(d)
    >>> print(render_table(r).splitlines()[2])
    fixed(a)  1.00    50.0
    """
    ests = result.estimators
    ranked = sorted(result.policies, key=lambda p: -_nan_low(p.estimates[result.primary].value))
    replay = "replay" in ests
    head = ["policy", *ests, "ess", *(["replay rows"] if replay else [])]
    n_right = 2 if replay else 1
    rows = []
    notes: list[str] = []
    for p in ranked:
        row = [p.name]
        missing: dict[str, list[str]] = {}
        for e in ests:
            est = p.estimates[e]
            if not math.isfinite(est.value):
                missing.setdefault(est.note or "no estimate", []).append(e)
            row.append(_cell(est))
        row.append(_fmt(p.ess, 1))
        if replay:
            row.append("" if p.accepted is None else str(p.accepted))
        rows.append(row)
        for note, names in missing.items():
            notes.append(f"{p.name}: {', '.join(names)}: {note}")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-n_right], widths[:-n_right], strict=True)]
        cells += [c.rjust(w) for c, w in zip(r[-n_right:], widths[-n_right:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    n_boot = result.settings.get("n_bootstrap") or 0
    alpha = result.settings.get("alpha", 0.05)
    ci = (
        f"{round(100 * (1 - alpha))}% intervals, {n_boot} bootstrap resamples"
        if n_boot
        else ("no intervals")
    )
    lines.append("")
    lines.append(f"{result.n_events} rows, {result.mode}; {ci}; data: {result.quality.summary()}")
    if n_boot and "dm" in ests:
        lines.append(
            f"dm: bootstrap refitting the reward model ({result.settings.get('dm_resamples')} "
            "resamples)"
        )
    if replay:
        lines.append(
            "replay: mean reward of the rows kept by rejection sampling (replay rows); "
            "Wilson interval"
        )
        few = [p.name for p in ranked if p.accepted is not None and 0 < p.accepted < 30]
        if few:
            lines.append(f"replay: fewer than 30 rows kept for {', '.join(few)}: read its interval")
    lines += notes
    return "\n".join(lines)


def _nan_low(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def render_json(result: BacktestResult, extra: dict[str, Any] | None = None) -> bytes:
    doc = result.to_dict()
    if extra:
        doc.update(extra)
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


# -- SVG ------------------------------------------------------------------------------------

W, H = 720, 300
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 16, 40


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


class _Axes:
    def __init__(self, x0: float, x1: float, y0: float, y1: float, height: int = H) -> None:
        if x1 <= x0:
            x1 = x0 + 1
        if y1 <= y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        self.x0, self.x1, self.y0, self.y1, self.h = x0, x1, y0, y1, height

    def x(self, v: float) -> float:
        return PAD_L + (v - self.x0) / (self.x1 - self.x0) * (W - PAD_L - PAD_R)

    def y(self, v: float) -> float:
        return self.h - PAD_B - (v - self.y0) / (self.y1 - self.y0) * (self.h - PAD_T - PAD_B)

    def frame(self, xlabel: str, ylabel: str, xfmt: Any = None) -> list[str]:
        out = [
            f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
            f'height="{self.h - PAD_T - PAD_B}" fill="none" stroke="#999"/>'
        ]
        for t in _ticks(self.y0, self.y1):
            y = self.y(t)
            out.append(
                f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>'
            )
        xs = _ticks(self.x0, self.x1, 6)
        for t in xs:
            x = self.x(t)
            label = xfmt(t) if xfmt else f"{t:g}"
            out.append(
                f'<text x="{x:.1f}" y="{self.h - PAD_B + 16}" text-anchor="middle">'
                f"{html.escape(label)}</text>"
            )
        mid = (PAD_T + self.h - PAD_B) / 2
        out.append(
            f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{self.h - 6}" text-anchor="middle">'
            f"{html.escape(xlabel)}</text>"
            f'<text x="14" y="{mid}" text-anchor="middle" '
            f'transform="rotate(-90 14 {mid})">{html.escape(ylabel)}</text>'
        )
        return out


def _svg(body: list[str], height: int = H, title: str = "") -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" '
        f'height="{height}" font-family="sans-serif" font-size="11" role="img">'
        f"<title>{html.escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _value_plot(result: BacktestResult, estimator: str) -> str:
    pols = result.policies
    ests = [p.estimates[estimator] for p in pols]
    vals = [v for e in ests for v in (e.value, e.low, e.high) if math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    margin = 0.05 * (hi - lo or 1.0)
    row_h = 26
    height = PAD_T + PAD_B + row_h * len(pols) + 10
    left = 220
    ax = _Axes(lo - margin, hi + margin, 0, 1, height)
    x = lambda v: left + (v - ax.x0) / (ax.x1 - ax.x0) * (W - left - PAD_R)  # noqa: E731
    body = []
    for t in _ticks(ax.x0, ax.x1, 6):
        body.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD_T}" y2="{height - PAD_B}" '
            f'stroke="#eee"/><text x="{x(t):.1f}" y="{height - PAD_B + 16}" '
            f'text-anchor="middle">{t:g}</text>'
        )
    colors = _colors(len(pols))
    for i, (p, e) in enumerate(zip(pols, ests, strict=True)):
        y = PAD_T + row_h * i + row_h / 2
        color = colors[i]
        body.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{html.escape(p.name)}</text>'
        )
        if math.isfinite(e.low) and math.isfinite(e.high):
            body.append(
                f'<line x1="{x(e.low):.1f}" x2="{x(e.high):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{color}" stroke-width="3"/>'
            )
        if math.isfinite(e.value):
            body.append(f'<circle cx="{x(e.value):.1f}" cy="{y:.1f}" r="5" fill="{color}"/>')
    body.append(
        f'<text x="{(left + W - PAD_R) / 2}" y="{height - 6}" text-anchor="middle">'
        f"estimated value ({html.escape(estimator)}) with "
        f"{round(100 * (1 - result.settings.get('alpha', 0.05)))}% interval</text>"
    )
    return _svg(body, height, f"Estimated value per policy ({estimator})")


def _time_fmt(result: BacktestResult) -> Any:
    if result.time_axis != "timestamp_ms":
        return None
    span = (result.bin_ends[-1] - result.bin_ends[0]) if result.bin_ends else 0
    pattern = "%H:%M" if span < 2 * 86_400_000 else "%m-%d"
    return lambda t: dt.datetime.fromtimestamp(t / 1000, dt.UTC).strftime(pattern)


def _cumulative_plot(result: BacktestResult) -> str:
    xs = np.asarray(result.bin_ends, dtype=float)
    ys = [p.cumulative_reward for p in result.policies]
    all_y = np.concatenate([[0.0], *ys]) if ys else np.array([0.0])
    x0 = float(xs[0]) if len(xs) else 0.0
    ax = _Axes(x0, float(xs[-1]) if len(xs) else 1.0, float(all_y.min()), float(all_y.max()))
    xlabel = "time (UTC)" if result.time_axis == "timestamp_ms" else "logged rows"
    body = ax.frame(xlabel, f"cumulative estimated reward ({result.primary})", _time_fmt(result))
    colors = _colors(len(ys))
    for i, y in enumerate(ys):
        pts = " ".join(f"{ax.x(a):.1f},{ax.y(b):.1f}" for a, b in zip(xs, y, strict=True))
        color = colors[i]
        body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
    body += _legend([p.name for p in result.policies], PAD_L + 8, PAD_T + 8)
    return _svg(body, H, "Cumulative estimated reward over time")


def _legend(names: list[str], x: float, y: float) -> list[str]:
    out = []
    colors = _colors(len(names))
    for i, name in enumerate(names):
        color = colors[i]
        yy = y + 14 * i
        out.append(
            f'<rect x="{x}" y="{yy}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="{yy + 9}">{html.escape(name)}</text>'
        )
    return out


def _arm_groups(result: BacktestResult) -> list[tuple[str, str, list[int]]]:
    """(label, colour, arm indices) per band of the arm-share plots: every arm
    when the palette has room, else the largest arms and "other"."""
    k = len(result.arm_names)
    if k <= len(PALETTE):
        return [(a, PALETTE[j], [j]) for j, a in enumerate(result.arm_names)]
    total = np.zeros(k)
    for p in result.policies:
        if p.arm_shares.ndim == 2 and p.arm_shares.shape[1] == k:
            total += p.arm_shares.mean(axis=0)
    top = sorted(np.argsort(-total, kind="stable")[: len(PALETTE) - 1].tolist())
    rest = [j for j in range(k) if j not in top]
    groups = [(result.arm_names[j], PALETTE[i], [j]) for i, j in enumerate(top)]
    return [*groups, (f"other ({len(rest)} arms)", OTHER_COLOR, rest)]


def _shares_plot(result: BacktestResult, index: int) -> str:
    p = result.policies[index]
    shares = p.arm_shares  # [bins, k]
    xs = np.asarray(result.bin_ends, dtype=float)
    height = 220
    ax = _Axes(float(xs[0]), float(xs[-1]) if len(xs) > 1 else float(xs[0]) + 1, 0.0, 1.0, height)
    xlabel = "time (UTC)" if result.time_axis == "timestamp_ms" else "logged rows"
    body = ax.frame(xlabel, "arm share", _time_fmt(result))
    base = np.zeros(len(xs))
    for _, color, arms in _arm_groups(result) if shares.ndim == 2 else []:
        top = base + shares[:, arms].sum(axis=1)
        upper = " ".join(f"{ax.x(a):.1f},{ax.y(b):.1f}" for a, b in zip(xs, top, strict=True))
        lower = " ".join(
            f"{ax.x(a):.1f},{ax.y(b):.1f}" for a, b in zip(xs[::-1], base[::-1], strict=True)
        )
        body.append(f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.85"/>')
        base = top
    return _svg(body, height, f"Arm shares over time: {p.name}")


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:980px}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #ddd}
td.n{text-align:right;font-variant-numeric:tabular-nums}h2{margin-top:28px}
.legend span{display:inline-block;margin-right:12px}
.sw{width:10px;height:10px;display:inline-block;margin-right:4px}
.muted{color:#666;font-size:13px}
"""


def render_html(result: BacktestResult, title: str = "Backtest") -> str:
    """One HTML page, everything inline."""
    esc = html.escape
    ests = result.estimators
    ranked = sorted(
        range(len(result.policies)),
        key=lambda i: -_nan_low(result.policies[i].estimates[result.primary].value),
    )
    head = "".join(f"<th>{esc(e)}</th>" for e in ests)
    rows = []
    for i in ranked:
        p = result.policies[i]
        cells = "".join(
            f'<td class="n" title="{esc(p.estimates[e].note)}">{esc(_cell(p.estimates[e]))}</td>'
            for e in ests
        )
        rows.append(
            f'<tr><td>{esc(p.name)}</td>{cells}<td class="n">{_fmt(p.ess, 1)}</td>'
            f'<td class="n">{"" if p.accepted is None else p.accepted}</td></tr>'
        )
    q = result.quality
    problems = q.problems()
    quality = (
        "<p>All rows usable.</p>"
        if not problems
        else "<ul>"
        + "".join(f"<li>{esc(k.replace('_', ' '))}: {v}</li>" for k, v in problems.items())
        + "</ul>"
    )
    arm_legend = "".join(
        f'<span><i class="sw" style="background:{color}"></i>{esc(label)}</span>'
        for label, color, _ in _arm_groups(result)
    )
    shares = "".join(
        f"<h3>{esc(p.name)}</h3>{_shares_plot(result, i)}" for i, p in enumerate(result.policies)
    )
    settings = esc(orjson.dumps(result.settings).decode())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{esc(title)}</h1>
<p class="muted">{result.n_events} logged rows, {len(result.arm_names)} arms, mode
<b>{esc(result.mode)}</b>, primary estimator <b>{esc(result.primary)}</b>; settings {settings}</p>
<h2>Estimated value per policy</h2>
{_value_plot(result, result.primary)}
<table><tr><th>policy</th>{head}<th>ESS</th><th>replay rows</th></tr>{"".join(rows)}</table>
<h2>Cumulative estimated reward over time</h2>
{_cumulative_plot(result)}
<h2>Arm shares over time</h2>
<p class="legend">{arm_legend}</p>
{shares}
<h2>Data quality</h2>
<p>{esc(q.summary())}</p>{quality}
</body></html>
"""
