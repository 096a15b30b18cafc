"""``llmopt policy warm-start POLICY``: a policy of the configured algorithm
learned from logged outcomes (app/warm_start.py), written to the registry as a
version in development, from which it can go to shadow or canary
(docs/warm-start.md).

    llmopt policy warm-start default --topic --start now-1d --end now
    llmopt policy warm-start default --archive data/archive --start now-7d --end now
    llmopt policy warm-start default --file log.csv --action arm --reward r --propensity p
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from app.cli import CliError, _configured, _kafka

__all__ = ["add_commands", "cmd_warm_start"]


def add_commands(sub: Any) -> None:
    """Register ``policy warm-start`` on the ``llmopt`` subparsers."""
    pol = sub.add_parser("policy", help="build policies: warm-start one from logged outcomes")
    actions = pol.add_subparsers(metavar="ACTION")
    p = actions.add_parser(
        "warm-start",
        help="learn a policy from logged outcomes and register it as a version",
        description="Replay logged outcomes (the outcomes topic, the Parquet archive or an "
        "external file, as `llmopt backtest` reads them) into a fresh policy of POLICY's "
        "configuration, each weighted by the policy's probability of the logged arm over "
        "the logged propensity (clipped), and write it to the registry as a version in "
        "development, with the source in its lineage.",
    )
    p.set_defaults(func=cmd_warm_start)
    pol.set_defaults(func=lambda args: pol.print_help() or 2)
    p.add_argument("policy", help="policy id in the policies file")
    src = p.add_argument_group("logged outcomes (one source)")
    src.add_argument("--file", help="CSV / TSV / Parquet / JSONL file (or a Parquet directory)")
    src.add_argument("--archive", help="the Parquet archive of outcomes (a directory)")
    src.add_argument(
        "--topic",
        nargs="?",
        const="outcomes",
        help="the outcomes topic of the configured cluster (or the named topic); needs "
        "--start and --end",
    )
    src.add_argument("--start", help="range start: ISO time, epoch ms, now, now-2h, now-1d")
    src.add_argument("--end", help="range end (exclusive), as --start")
    src.add_argument(
        "--log-policy",
        dest="policy_id",
        help="the outcomes of this policy id (topic and archive; default: POLICY)",
    )
    cols = p.add_argument_group("columns of --file")
    cols.add_argument("--action", default="action", help="chosen arm (default: %(default)s)")
    cols.add_argument("--reward", default="reward", help="reward (default: %(default)s)")
    cols.add_argument(
        "--propensity", default="propensity", help="logged propensity (default: %(default)s)"
    )
    cols.add_argument(
        "--context", help="a list column, or comma-separated columns / glob patterns (x*)"
    )
    cols.add_argument(
        "--categorical",
        default="onehot",
        metavar="onehot|hash:B",
        help="how string context columns become numbers (default: %(default)s)",
    )
    cols.add_argument("--available", help="list column (or a|b|c strings) of available arms")
    cols.add_argument("--timestamp", help="column of times: epoch ms or ISO 8601")
    how = p.add_argument_group("warm start")
    how.add_argument(
        "--policies", type=Path, metavar="FILE", help="policies file (default: the configured one)"
    )
    how.add_argument("--clip", type=float, default=None, help="importance-weight cap (default: 10)")
    how.add_argument("--seed", type=int, default=0, help="seed of the weights' draws")
    how.add_argument("--reason", default=None, help="why, kept in the version's history")
    how.add_argument("--dry-run", action="store_true", help="learn and report, write no version")
    how.add_argument("--json", action="store_true", help="the result as one JSON document")


def cmd_warm_start(args: argparse.Namespace) -> int:
    from app.backtest_cli import ProgressBar, load_logged, time_range
    from app.evaluation.logged_data import LoggedDataError
    from app.policies.config import PoliciesConfig
    from app.settings import Settings
    from app.warm_start import DEFAULT_CLIP, WarmStartError, warm_start

    settings = Settings.from_env()
    pc = PoliciesConfig.load(args.policies or settings.policies_path).policies.get(args.policy)
    if pc is None:
        raise CliError(f"policy {args.policy!r} is not in the policies file")
    clip = DEFAULT_CLIP if args.clip is None else args.clip
    if not clip > 0:
        raise CliError(f"--clip must be above 0, got {args.clip}")
    if args.file and args.policy_id:
        raise CliError("--log-policy goes with --topic and --archive")
    args.policy_id = None if args.file else (args.policy_id or args.policy)
    # What `llmopt backtest` reads with, for the flags this command does not offer.
    args.arms = args.position = args.target_propensity = args.target_dist = None
    start, end = time_range(args)
    try:
        with _kafka(settings):
            data = load_logged(args, ProgressBar())
        policy = pc.build()
        done = warm_start(policy, data, clip=clip, seed=args.seed)
    except (LoggedDataError, WarmStartError, OSError) as exc:
        raise CliError(str(exc)) from None
    source = _source(args, settings, start, end) | {"quality": data.quality.to_dict()}
    result: dict[str, Any] = {
        "policy_id": pc.policy_id,
        "algorithm": pc.algorithm,
        "source": source,
        "clip": clip,
        "seed": args.seed,
        **done.to_dict(),
        "arms": {a: {k: s[k] for k in ("pulls", "mean_reward")} for a, s in policy.stats().items()},
    }
    if not args.dry_run:
        from app.records import RegistryEvent, now_ms
        from app.registry_cli import cli_user
        from app.topics import TopicCatalog
        from app.versions import new_event_id

        settings = _configured()
        now = now_ms()
        event = RegistryEvent(
            event_id=new_event_id(),
            kind="version",
            policy_id=pc.policy_id,
            created_at=now,
            created_by=f"cli:{cli_user()}",
            # Numbered by its time: above every update count, so neither the
            # learner's numbers nor another warm start's meet it.
            version=now,
            status="development",
            reason=args.reason or f"warm-started from {source['kind']}",
            config=dict(pc.source),
            config_hash=pc.config_hash,
            state={
                "algorithm": pc.algorithm,
                "policy": base64.b64encode(policy.snapshot()).decode(),
                "updates": done.updates,
                "version": 0,
                "estimates": {},
            },
            lineage={
                "warm_start": source | {"clip": clip, "seed": args.seed, **done.to_dict()},
                "total_updates": done.updates,
            },
        )
        result["version"] = event.version
        _write(settings, TopicCatalog.for_settings(settings).name("registry"), event)
    _print(result, args.json)
    return 0


def _write(settings: Any, topic: str, event: Any) -> None:
    from app.registry_cli import write_records

    with _kafka(settings):
        asyncio.run(write_records(settings.bootstrap, topic, [event]))


def _source(
    args: argparse.Namespace, settings: Any, start: int | None, end: int | None
) -> dict[str, Any]:
    """Where the log came from, as the version's lineage records it."""
    from app.topics import TopicCatalog

    if args.file:
        kind, where = "file", str(Path(args.file).resolve())
    elif args.archive:
        kind, where = "archive", str(Path(args.archive).resolve())
    else:
        outcomes = TopicCatalog.for_settings(settings).name("outcomes")
        kind, where = "topic", outcomes if args.topic == "outcomes" else args.topic
    out: dict[str, Any] = {"kind": kind, "from": where, "start": start, "end": end}
    if args.policy_id:
        out["policy_id"] = args.policy_id
    return out


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    w, src = result["weights"], result["source"]
    where = f"{src['kind']} {src['from']}"
    print(
        f"{result['policy_id']}: {result['algorithm']} learnt from {result['used']} of "
        f"{result['rows']} logged outcomes of {where} ({result['updates']} updates; weights "
        f"mean {w['mean']:.3g}, max {w['max']:.3g}, {w['clipped']} clipped at {result['clip']:g}; "
        f"{w['effective_rows']:.0f} effective rows)"
    )
    for reason, n in result["skipped"].items():
        print(f"  skipped {n}: {reason.replace('_', ' ')}")
    for arm, s in result["arms"].items():
        print(f"  arm {arm}: pulls {s['pulls']:.0f}, mean {s['mean_reward']:.4g}")
    if "version" in result:
        print(
            f"registered as version {result['version']} (development): "
            f"`llmopt registry promote {result['policy_id']} {result['version']} --to shadow`"
        )
