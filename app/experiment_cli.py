"""``llmopt experiment plan``: the sample size an experiment needs.

llmopt experiment plan --baseline 0.70 --mde 0.02
llmopt experiment plan --baseline 800 --mde -40 --sd 400 --variants 3 --json
llmopt experiment plan --baseline 0.12 --mde 0.05 --relative --power 0.9
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from app.cli import CliError

__all__ = ["add_commands", "cmd_experiment_plan"]


def add_commands(sub: Any) -> None:
    """Register ``experiment`` (and its ``plan``) on the ``llmopt`` subparsers."""
    exp = sub.add_parser("experiment", help="plan experiments (sample size and power)")
    verbs = exp.add_subparsers(metavar="VERB")
    p = verbs.add_parser(
        "plan",
        help="units per variant needed to detect an effect",
        description="Units per variant for a fixed-horizon two-sample t-test and an estimate "
        "for the anytime-valid sequential test (looked at after every batch), to detect a "
        "difference of --mde from a control mean of --baseline. Without --sd the metric is a "
        "rate in [0, 1] (its standard deviation that of a 0/1 outcome, the largest possible).",
    )
    p.add_argument("--baseline", type=float, required=True, help="the control's mean")
    p.add_argument(
        "--mde",
        type=float,
        required=True,
        help="minimum detectable effect: a difference in the metric's units (or, with "
        "--relative, a fraction of --baseline); either sign",
    )
    p.add_argument("--relative", action="store_true", help="--mde is a fraction of --baseline")
    p.add_argument("--alpha", type=float, default=0.05, help="false-positive rate (%(default)s)")
    p.add_argument("--power", type=float, default=0.8, help="power (%(default)s)")
    p.add_argument(
        "--variants", type=int, default=2, help="variants, the control included (%(default)s)"
    )
    p.add_argument("--sd", type=float, default=None, help="the metric's standard deviation")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_experiment_plan)
    exp.set_defaults(func=lambda _args: exp.print_help() or 2)


def cmd_experiment_plan(args: argparse.Namespace) -> int:
    from app.experiments.plan import plan

    mde = args.mde * args.baseline if args.relative else args.mde
    try:
        p = plan(args.baseline, mde, args.alpha, args.power, args.variants, sd=args.sd)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(p.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(render(p.to_dict()))
    return 0


def render(p: dict[str, Any]) -> str:
    comparisons = p["variants"] - 1
    correction = (
        f" ({p['comparison_alpha']:.4g} per comparison with the control, Bonferroni over "
        f"{comparisons})"
        if comparisons > 1
        else ""
    )
    rows = [
        ("fixed-horizon t-test, one look", p["fixed_n_per_variant"]),
        ("sequential, power reached by", p["sequential_n_per_variant"]),
        ("sequential, about half decided by", p["sequential_median_n_per_variant"]),
    ]
    lines = [
        f"baseline mean {p['baseline_mean']:g}, minimum detectable effect {p['mde']:+g}, "
        f"sd {p['sd_control']:.4g} (control) / {p['sd_treatment']:.4g} (treatment)",
        f"alpha {p['alpha']:g}{correction}, power {p['power']:.0%}, {p['variants']} variants",
        "",
        f"{'':36s}{'per variant':>12s}{'total':>12s}",
    ]
    for label, n in rows:
        lines.append(f"{label:36s}{n:>12,}{n * p['variants']:>12,}")
    lines.append("")
    lines.append(
        f"sequential test tuned for {p['tuning_n']:,} units per comparison (tuning_n); "
        "look as often as you like"
    )
    return "\n".join(lines)
