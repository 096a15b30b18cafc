"""``llmopt experiment``: plan an experiment's sample size; create, follow
and stop experiments and rollouts on live traffic (docs/experiments.md).

llmopt experiment plan --baseline 0.70 --mde 0.02
llmopt experiment plan --baseline 800 --mde -40 --sd 400 --variants 3 --json
llmopt experiment plan --baseline 0.12 --mde 0.05 --relative --power 0.9
llmopt experiment create --file rollout.yaml
llmopt experiment create --id haiku --policy default --variant champion=policy:default \
    --variant challenger=arm:claude-haiku --stages 5,10,25,50,100 --latency-margin 0.1
llmopt experiment status [ID] [--json]
llmopt experiment stop ID --reason "..."
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from app.cli import CliError
from app.registry_cli import cli_user

__all__ = [
    "add_commands",
    "cmd_experiment_create",
    "cmd_experiment_plan",
    "cmd_experiment_status",
    "cmd_experiment_stop",
]


def add_commands(sub: Any) -> None:
    """Register ``experiment`` (``plan``, ``create``, ``status``, ``stop``) on
    the ``llmopt`` subparsers."""
    exp = sub.add_parser(
        "experiment", help="plan, create, follow and stop experiments and rollouts"
    )
    verbs = exp.add_subparsers(metavar="VERB")
    _add_live_commands(verbs)
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


# -- experiments on live traffic -------------------------------------------------------------


def _add_live_commands(verbs: Any) -> None:
    c = verbs.add_parser(
        "create",
        help="start an experiment or a rollout on live traffic",
        description="Start an experiment (--shares) or a rollout (--stages) from a YAML file "
        "or from flags. The definition is checked strictly (an unknown key is an error) and "
        "against the policies file before anything is written.",
    )
    c.add_argument("--file", default=None, help="the definition as YAML (docs/experiments.md)")
    c.add_argument("--id", default=None, help="the experiment's id (letters, digits, . _ -)")
    c.add_argument("--policy", default=None, help="the policy whose requests it takes")
    c.add_argument(
        "--variant",
        action="append",
        default=None,
        metavar="NAME=policy:ID|arm:NAME",
        help="a variant, the control (champion) first; repeat for each",
    )
    c.add_argument("--split-key", default=None, help="tenant (default) or a metadata field")
    c.add_argument("--shares", default=None, metavar="NAME=SHARE,...", help="an experiment")
    c.add_argument("--stages", default=None, metavar="PCT,...", help="a rollout, e.g. 5,25,100")
    c.add_argument("--reward-margin", type=float, default=None, help="absolute, reward in [0, 1]")
    c.add_argument("--cost-margin", type=float, default=None, help="guardrail, relative")
    c.add_argument("--latency-margin", type=float, default=None, help="guardrail, relative")
    c.add_argument("--alpha", type=float, default=None)
    c.add_argument("--tuning-n", type=int, default=None)
    c.add_argument("--min-samples", type=int, default=None)
    c.add_argument("--dry-run", action="store_true", help="check and print; write nothing")
    c.set_defaults(func=cmd_experiment_create)
    s = verbs.add_parser("status", help="the experiments, or one experiment's latest result")
    s.add_argument("id", nargs="?", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_experiment_status)
    p = verbs.add_parser("stop", help="stop an experiment (or release a promoted rollout)")
    p.add_argument("id")
    p.add_argument("--reason", default="stopped by hand")
    p.set_defaults(func=cmd_experiment_stop)


FLAG_KEYS = ("id", "policy", "split_key", "alpha", "tuning_n", "min_samples")


def definition_from_args(args: argparse.Namespace) -> Any:
    """The definition the flags or ``--file`` give, checked (not yet
    against the policies file)."""
    from app.config_schema import load_yaml
    from app.experiments.definition import DefinitionError, ExperimentDefinition

    flags = {k: getattr(args, k) for k in FLAG_KEYS if getattr(args, k) is not None}
    for name in ("variant", "shares", "stages", "reward_margin", "cost_margin", "latency_margin"):
        if getattr(args, name) is not None:
            flags[name] = getattr(args, name)
    if args.file is not None:
        if flags:
            raise CliError(f"give --file or flags, not both (got {', '.join(sorted(flags))})")
        return ExperimentDefinition.from_mapping(
            load_yaml(args.file, DefinitionError), str(args.file)
        )
    doc: dict[str, Any] = {k: flags[k] for k in FLAG_KEYS if k in flags}
    if "variant" in flags:
        doc["variants"] = [_variant_flag(v) for v in flags["variant"]]
    if "shares" in flags:
        doc["shares"] = {k: _number(v, "--shares") for k, v in _pairs(flags["shares"], "--shares")}
    if "stages" in flags:
        doc["stages"] = [_number(x, "--stages") for x in flags["stages"].split(",")]
    metrics: dict[str, Any] = {}
    if "reward_margin" in flags:
        metrics["reward"] = {"margin": flags["reward_margin"]}
    if "cost_margin" in flags:
        metrics["cost_usd"] = {"margin": flags["cost_margin"]}
    if "latency_margin" in flags:
        metrics["latency_ms"] = {"margin": flags["latency_margin"]}
    if metrics:
        doc["metrics"] = metrics
    return ExperimentDefinition.from_mapping(doc, "flags")


def _pairs(text: str, flag: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise CliError(f"{flag}: expected NAME=VALUE, got {part!r}")
        out.append((name.strip(), value.strip()))
    return out


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CliError(f"{flag}: {text!r} is not a number") from None


def _variant_flag(text: str) -> dict[str, str]:
    name, sep, rest = text.partition("=")
    kind, sep2, value = rest.partition(":")
    if not (sep and sep2 and kind in ("policy", "arm") and value):
        raise CliError(f"--variant: expected NAME=policy:ID or NAME=arm:NAME, got {text!r}")
    return {"name": name, kind: value}


def cmd_experiment_create(args: argparse.Namespace) -> int:
    from app.cli import _configured, _kafka
    from app.experiments.events import created_event
    from app.policies.config import PoliciesConfig
    from app.records import now_ms
    from app.settings import Settings

    d = definition_from_args(args)
    d.check_policies(PoliciesConfig.load(Settings.from_env().policies_path))
    if args.dry_run:
        sys.stdout.buffer.write(orjson.dumps(d.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    settings = _configured()
    with _kafka(settings):
        book = asyncio.run(read_experiments(settings))
        if d.experiment_id in book.experiments:
            raise CliError(f"experiment {d.experiment_id!r} exists already; pick another id")
        other = book.routing(d.policy)
        if other is not None:
            raise CliError(
                f"policy {d.policy!r} is in experiment {other.experiment_id!r} already; "
                f"stop it first (`llmopt experiment stop {other.experiment_id}`)"
            )
        asyncio.run(write_events(settings, [created_event(d, f"cli:{cli_user()}", now_ms())]))
    kind = "rollout" if d.rollout else "experiment"
    shares = ", ".join(f"{v} {s:.0%}" for v, s in d.stage_shares(0).items())
    print(f"{kind} {d.experiment_id} created on policy {d.policy}: {shares}")
    return 0


def cmd_experiment_status(args: argparse.Namespace) -> int:
    from app.cli import _configured, _kafka

    settings = _configured()
    with _kafka(settings):
        book = asyncio.run(read_experiments(settings))
    if args.id is None:
        rows = [_overview(e) for e in book.experiments.values()]
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
        else:
            print(render_overview(rows))
        return 0
    exp = book.experiments.get(args.id)
    if exp is None:
        raise CliError(f"no experiment {args.id!r}; known: {', '.join(book.experiments) or 'none'}")
    doc = _overview(exp) | {"definition": exp.definition.to_dict(), "result": exp.result}
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render_status(doc))
    return 0


def cmd_experiment_stop(args: argparse.Namespace) -> int:
    from app.cli import _configured, _kafka
    from app.experiments.events import stopped_event
    from app.records import now_ms

    settings = _configured()
    with _kafka(settings):
        book = asyncio.run(read_experiments(settings))
        exp = book.experiments.get(args.id)
        if exp is None:
            raise CliError(f"no experiment {args.id!r}")
        if not exp.routes:
            raise CliError(f"experiment {args.id!r} is stopped already ({exp.stop_reason})")
        reason = str(args.reason)[:1024] or "stopped by hand"
        ev = stopped_event(exp.experiment_id, "manual", reason, f"cli:{cli_user()}", now_ms())
        asyncio.run(write_events(settings, [ev]))
    print(f"experiment {args.id} stopped")
    return 0


async def read_experiments(settings: Any) -> Any:
    """The experiments topic folded (app/experiments/live.py)."""
    from app.experiments.events import EXPERIMENT_MAX_BYTES
    from app.experiments.live import ExperimentLog
    from app.records import ExperimentEvent, InvalidEvent
    from app.stream.kafka_io import read_to_end
    from app.topics import TopicCatalog

    topic = TopicCatalog.for_settings(settings).name("experiments")
    book = ExperimentLog()
    async for msgs in read_to_end(settings.bootstrap, topic, "llmopt-experiment-cli", 30):
        for m in msgs:
            try:
                book.apply(ExperimentEvent.loads(m.value, EXPERIMENT_MAX_BYTES))
            except InvalidEvent as exc:
                print(f"llmopt: warning: skipped an experiment record ({exc})", file=sys.stderr)
    return book


async def write_events(settings: Any, events: list[Any]) -> None:
    from aiokafka import AIOKafkaProducer

    from app.experiments.events import record_key
    from app.kafka_security import kafka_security
    from app.topics import TopicCatalog

    topic = TopicCatalog.for_settings(settings).name("experiments")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **kafka_security(settings))
    await producer.start()
    try:
        if not await producer.partitions_for(topic):
            raise CliError(f"topic {topic} is missing: run `llmopt topics apply`")
        for ev in events:
            await (await producer.send(topic, ev.dumps(), key=record_key(ev)))
    finally:
        await producer.stop()


def _overview(e: Any) -> dict[str, Any]:
    d = e.definition
    return {
        "id": e.experiment_id,
        "kind": "rollout" if d.rollout else "experiment",
        "policy": d.policy,
        "status": e.status if e.stop_reason != "promoted" else "promoted",
        "stage": e.stage,
        "shares": e.shares,
        "stop_reason": e.stop_reason,
        "reason": e.reason,
        "updated_at": e.updated_at,
    }


def render_overview(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no experiments"
    lines = [f"{'id':24s} {'kind':10s} {'policy':16s} {'status':9s} {'stage':>5s}  shares"]
    for r in rows:
        shares = ", ".join(f"{v} {s:.0%}" for v, s in r["shares"].items())
        lines.append(
            f"{r['id']:24s} {r['kind']:10s} {r['policy']:16s} {r['status']:9s} "
            f"{r['stage']:>5d}  {shares}"
        )
    return "\n".join(lines)


def _fmt(x: Any, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def render_status(doc: dict[str, Any]) -> str:
    """One experiment: what it is, where it stands, and its latest result as a table."""
    shares = ", ".join(f"{v} {s:.0%}" for v, s in doc["shares"].items())
    lines = [
        f"{doc['kind']} {doc['id']} on policy {doc['policy']}: {doc['status']}, "
        f"stage {doc['stage']} ({shares})"
    ]
    if doc["stop_reason"]:
        lines.append(f"stopped: {doc['stop_reason']} — {doc['reason']}")
    result = doc.get("result")
    if not result:
        lines.append("no result yet")
        return "\n".join(lines)
    metrics = list(next(iter(result["variants"].values()), {}))
    header = f"{'variant':16s} {'n':>8s}" + "".join(f" {m + ' mean':>16s}" for m in metrics)
    lines += ["", header]
    for v, by_metric in result["variants"].items():
        n = by_metric.get(result.get("primary", "reward"), {}).get("n", 0)
        cells = "".join(f" {_fmt(by_metric[m].get('mean')):>16s}" for m in metrics)
        lines.append(f"{v:16s} {n:>8,}{cells}")
    lines += ["", f"{'vs ' + result['control']:16s} {'metric':12s} {'difference [interval]':>34s}"
              f" {'decision':>13s} {'gate':>8s}"]  # fmt: skip
    for v, t in result["treatments"].items():
        for m, r in t["metrics"].items():
            interval = f"{_fmt(r['estimate'], '+.4g')} [{_fmt(r['low'])}, {_fmt(r['high'])}]"
            lines.append(f"{v:16s} {m:12s} {interval:>34s} {r['decision']:>13s} {r['gate']:>8s}")
        lines.append(f"{v:16s} {'overall':12s} {'':>34s} {t['decision']:>13s} {t['gate']:>8s}")
    return "\n".join(lines)
