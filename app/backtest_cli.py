"""``llmopt backtest`` and ``llmopt replay``.

    llmopt backtest --file log.csv --action arm --reward r --propensity p \\
        --context 'x*' --policy uniform --policy lin_ucb:alpha=0.5 --html report.html
    llmopt backtest --archive data/archive --policy-id default --start now-1d --end now
    llmopt backtest --topic --start 2026-11-20T00:00Z --end 2026-11-21T00:00Z \\
        --policies candidate.yaml --mode progressive --json out.json
    llmopt replay --policies candidate.yaml --start now-2h --end now-1h --run-id cand-1
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from app.cli import CliError, _configured, port_number

__all__ = ["ProgressBar", "add_commands", "cmd_backtest", "cmd_replay", "parse_time"]

# The names of app.evaluation.estimators.ESTIMATORS, spelt out so that building
# the parser (every `llmopt` command) does not import numpy and pyarrow.
ESTIMATOR_NAMES = ("replay", "ips", "snips", "dm", "dr", "sndr", "switch-dr")
_RELATIVE = re.compile(r"(?:now)?-(\d+(?:\.\d+)?)([smhdw])")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_time(text: str, now_ms: int | None = None) -> int:
    """Epoch milliseconds from ``now``, ``now-<n><s|m|h|d|w>`` (or
    ``-<n><unit>``, written ``--start=-2h`` on a command line), epoch
    milliseconds, or an ISO 8601 / RFC 3339 time (UTC unless it says).

    >>> parse_time("now-2h", now_ms=10_000_000), parse_time("1700000000000")
    (2800000, 1700000000000)
    >>> parse_time("2026-11-20T00:00:00Z")
    1795132800000
    """
    t = text.strip()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if t == "now":
        return now
    m = _RELATIVE.fullmatch(t)
    if m:
        return now - int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    if t.isdigit():
        return int(t)
    try:
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"bad time {text!r}: use ISO 8601 (2026-11-20T00:00Z), epoch ms, now, now-2h, now-1d"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def time_range(args: argparse.Namespace) -> tuple[int | None, int | None]:
    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end) if args.end else None
    if start is not None and end is not None and end <= start:
        raise CliError(f"bad time range: --end ({args.end}) is not after --start ({args.start})")
    return start, end


def _required_range(args: argparse.Namespace) -> tuple[int, int]:
    start, end = time_range(args)
    if start is None or end is None:
        raise CliError("this source needs a time range: --start and --end")
    return start, end


class ProgressBar:
    """A one-line progress bar on stderr (only when it is a terminal, unless forced)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._label = ""
        self._started = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int, label: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if label != self._label:
            self._label, self._started = label, now
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        frac = done / total if total else 1.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        rate = done / max(now - self._started, 1e-9)
        self.stream.write(f"\r{label[:28]:<28} [{bar}] {frac:4.0%} {done}/{total} {rate:,.0f}/s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def count(self, label: str) -> Any:
        """A callback for work of unknown size (rows read so far)."""

        def tick(done: int) -> None:
            if self.enabled:
                self.stream.write(f"\r{label}: {done:,}")
                self.stream.flush()

        return tick

    def end_line(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# -- backtest -----------------------------------------------------------------------------------


def load_logged(args: argparse.Namespace, bar: ProgressBar) -> Any:
    from app.evaluation.logged_data import ColumnMapping, read_archive, read_file
    from app.stream.kafka_io import read_outcomes_topic

    sources = [s for s in (args.file, args.archive, args.topic) if s]
    if len(sources) != 1:
        raise CliError("name one source of logged data: --file, --archive or --topic")
    arms = args.arms.split(",") if args.arms else None
    if args.file:
        start, end = time_range(args)
        ctx = args.context
        context: str | tuple[str, ...] | None = None
        if ctx:
            parts = tuple(c.strip() for c in ctx.split(",") if c.strip())
            context = parts[0] if len(parts) == 1 else parts
        target_file = None
        target_dist = args.target_dist
        if target_dist and Path(target_dist).is_file():
            target_file, target_dist = target_dist, None
        mapping = ColumnMapping(
            action=args.action,
            reward=args.reward,
            propensity=args.propensity,
            context=context,
            available=args.available,
            position=args.position,
            timestamp=args.timestamp,
            categorical=args.categorical,
            target_propensity=args.target_propensity,
            target_dist=target_dist,
        )
        return read_file(args.file, mapping, arms, start, end, target_file=target_file)
    if args.target_propensity or args.target_dist:
        raise CliError("--target-propensity and --target-dist go with --file")
    if args.archive:
        start, end = time_range(args)
        return read_archive(args.archive, args.policy_id, arms, start, end)
    start, end = _required_range(args)
    from app.topics import TopicCatalog

    settings = _configured()
    topic = args.topic if args.topic != "outcomes" else None
    topic = topic or TopicCatalog.for_settings(settings).name("outcomes")
    data = asyncio.run(
        read_outcomes_topic(
            settings.bootstrap,
            topic,
            start,
            end,
            args.policy_id,
            arms,
            on_progress=bar.count(f"reading {topic}"),
        )
    )
    bar.end_line()
    return data


def _policies(args: argparse.Namespace) -> list[Any]:
    from app.evaluation.backtest import PolicySpec, parse_policy_spec

    specs = []
    if args.target_propensity:
        specs.append(PolicySpec.from_target(args.target_propensity))
    if args.target_dist:
        specs.append(PolicySpec.from_target(Path(args.target_dist).name))
    for text in args.policy or []:
        try:
            specs.append(parse_policy_spec(text, seed=args.seed))
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if args.policies:
        from app.policies.config import PoliciesConfig, PolicyConfigError

        try:
            cfg = PoliciesConfig.load(args.policies)
        except PolicyConfigError as exc:
            raise CliError(str(exc)) from None
        ids = args.config_policy or list(cfg.policies)
        for pid in ids:
            pc = cfg.policies.get(pid)
            if pc is None:
                raise CliError(
                    f"no policy {pid!r} in {args.policies}; known: {sorted(cfg.policies)}"
                )
            specs.append(PolicySpec.from_config(pc))
    if not specs:
        print(
            "llmopt: note: no --policy given: evaluating logging, uniform and best-fixed",
            file=sys.stderr,
        )
        specs = [PolicySpec.logging(), PolicySpec.uniform(), PolicySpec.best_fixed()]
    return specs


def cmd_backtest(args: argparse.Namespace) -> int:
    from app.evaluation.backtest import Backtest
    from app.evaluation.estimators import ESTIMATORS, RidgeRewardModel
    from app.evaluation.logged_data import LoggedDataError
    from app.evaluation.report import render_html, render_json, render_table

    bar = ProgressBar(enabled=False if args.no_progress else None)
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise CliError(f"unknown estimator(s) {unknown}; known: {', '.join(ESTIMATORS)}")
    specs = _policies(args)
    try:
        data = load_logged(args, bar)
        if data.quality.problems():
            print(f"llmopt: warning: {data.quality.summary()}", file=sys.stderr)
        if data.n_events == 0:
            raise CliError(f"no usable rows: {data.quality.summary()}")
        backtest = Backtest(
            specs,
            estimators=estimators,
            mode=args.mode,
            clip=args.clip,
            tau=args.tau,
            n_bootstrap=args.resamples,
            alpha=args.alpha,
            reward_model=RidgeRewardModel(
                alpha=args.ridge, n_folds=args.folds, repeats=args.repeats, seed=args.seed
            ),
            train_fraction=args.train_fraction,
            n_bins=args.bins,
            seed=args.seed,
        )
        result = backtest.run(data, progress=bar)
    except (LoggedDataError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(render_table(result))
    extra = {"source": args.file or args.archive or args.topic}
    if args.json:
        doc = render_json(result, extra)
        if args.json == "-":
            sys.stdout.buffer.write(doc + b"\n")
        else:
            Path(args.json).write_bytes(doc)
            print(f"JSON: {args.json}", file=sys.stderr)
    if args.html:
        Path(args.html).write_text(render_html(result, args.title))
        print(f"HTML report: {args.html}", file=sys.stderr)
    return 0


# -- replay -------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from app.evaluation.logged_data import LoggedDataError
    from app.policies.config import PoliciesConfig, PolicyConfigError
    from app.replay import PipelineReplay

    start, end = _required_range(args)
    try:
        cfg = PoliciesConfig.load(args.policies)
    except PolicyConfigError as exc:
        raise CliError(str(exc)) from None
    if args.policy_id and args.policy_id not in cfg.policies:
        raise CliError(
            f"--policy-id {args.policy_id!r} is not in {args.policies}; known: "
            f"{sorted(cfg.policies)}"
        )
    settings = _configured()
    run_id = args.run_id or f"r{uuid.uuid4().hex[:8]}"
    try:
        replay = PipelineReplay(
            settings,
            run_id,
            Path(args.policies),
            start,
            end,
            policy_id=args.policy_id,
            wait_seconds=args.wait,
            web_port=args.web_port,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    bar = ProgressBar(enabled=False if args.no_progress else None)
    print(
        f"replaying requests into {replay.replay_catalog.name('requests')} "
        f"(worker app id {replay.replay_settings.app_id})",
        file=sys.stderr,
    )
    try:
        summary = replay.run(on_progress=bar.count("requests copied"))
    except LoggedDataError as exc:
        raise CliError(str(exc)) from None
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    bar.end_line()
    print(summary.text())
    if args.json:
        import orjson

        Path(args.json).write_bytes(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
    return 0 if summary.decisions + summary.dead_letters >= summary.requests else 1


# -- parser -------------------------------------------------------------------------------------


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return v

    return parse


class _Deprecated(argparse.Action):
    """A renamed flag: sets what the new name sets, with a warning."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"llmopt: warning: {option_string} is deprecated; use --{self.dest.replace('_', '-')}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_commands(sub: Any) -> None:
    """Register ``backtest`` and ``replay`` on the ``llmopt`` subparsers."""
    bt = sub.add_parser(
        "backtest",
        help="estimate, from logged decisions, what other policies would have earned",
        description="Off-policy evaluation of several policies on logged bandit feedback. "
        "Policies: logging, uniform, best-fixed, fixed:ARM, python:MODULE:FUNCTION, or an "
        "algorithm with hyperparameters (lin_ucb:alpha=0.5); --policies adds policies of a "
        "YAML; --target-propensity / --target-dist evaluate a policy given by its "
        "probabilities. Without any of these: logging, uniform and best-fixed.",
    )
    src = bt.add_argument_group("logged data (one source)")
    src.add_argument("--file", help="CSV / TSV / Parquet / JSONL file (or a Parquet directory)")
    src.add_argument("--archive", help="the Parquet archive of outcomes (a directory)")
    src.add_argument(
        "--topic",
        nargs="?",
        const="outcomes",
        help="read the outcomes topic of the configured cluster (or the named topic)",
    )
    src.add_argument("--start", help="range start: ISO time, epoch ms, now, now-2h, now-1d")
    src.add_argument("--end", help="range end (exclusive), as --start")
    src.add_argument("--policy-id", help="only the outcomes of this policy_id (default: all)")
    src.add_argument("--arms", help="comma-separated arm names (default: those in the data)")
    cols = bt.add_argument_group("columns of --file")
    cols.add_argument(
        "--action", default="action", help="column of the chosen arm (default: %(default)s)"
    )
    cols.add_argument(
        "--reward", default="reward", help="column of the observed reward (default: %(default)s)"
    )
    cols.add_argument(
        "--propensity",
        default="propensity",
        help="column of the logging policy's probability of the chosen arm (default: %(default)s)",
    )
    cols.add_argument(
        "--context", help="a list column, or comma-separated columns / glob patterns (x*)"
    )
    cols.add_argument(
        "--categorical",
        default="onehot",
        metavar="onehot|hash:B",
        help="how string context columns become numbers: one column per value, "
        "or B hashed columns (default: %(default)s)",
    )
    cols.add_argument("--available", help="list column (or a|b|c strings) of available arms")
    cols.add_argument(
        "--position", help="column of the slot position (carried along, not modelled)"
    )
    cols.add_argument(
        "--timestamp", help="column of times: epoch ms or ISO 8601 (any fraction of a second)"
    )
    cols.add_argument(
        "--target-propensity",
        metavar="COLUMN",
        help="column of a policy's probabilities of the logged actions: evaluates that "
        "policy with ips, snips, replay",
    )
    cols.add_argument(
        "--target-dist",
        metavar="COLUMN|FILE",
        help="a policy's probabilities of every arm: a list column (arms in order), or a file "
        "with one column per arm, row for row with the log; evaluates it with every estimator",
    )
    pol = bt.add_argument_group("policies")
    pol.add_argument(
        "--policy",
        action="append",
        metavar="SPEC",
        help="a policy to evaluate, repeatable: logging, uniform, best-fixed, fixed:ARM, "
        "python:MODULE:FUNCTION, ALGORITHM[:k=v,...] (default: logging, uniform, best-fixed)",
    )
    pol.add_argument(
        "--policies", metavar="FILE", help="a policies YAML whose policies to evaluate"
    )
    # The flag's former name, kept so that existing commands keep working.
    pol.add_argument(
        "--policies-config", dest="policies", action=_Deprecated, help=argparse.SUPPRESS
    )
    pol.add_argument(
        "--config-policy", action="append", metavar="ID", help="only these policy ids of it"
    )
    pol.add_argument(
        "--mode",
        choices=["frozen", "progressive"],
        default="frozen",
        help="frozen: policies as configured; progressive: library policies learn from the "
        "rows they would have chosen, in time order (default: %(default)s)",
    )
    pol.add_argument(
        "--train-fraction",
        type=float,
        default=0.0,
        help="frozen mode: train library policies on this first share of the log "
        "(default: %(default)s)",
    )
    est = bt.add_argument_group("estimators")
    est.add_argument(
        "--estimators",
        default=",".join(ESTIMATOR_NAMES),
        help="comma-separated estimators to report; the first of dr, snips, ips, ... ranks "
        "(default: %(default)s)",
    )
    est.add_argument(
        "--clip", type=_positive(float), default=None, help="importance-weight cap (default: none)"
    )
    est.add_argument(
        "--tau",
        type=_positive(float),
        default=10.0,
        help="switch-DR threshold (default: %(default)s)",
    )
    est.add_argument(
        "--resamples",
        type=int,
        default=500,
        help="bootstrap resamples for the intervals (0: no intervals) (default: %(default)s)",
    )
    # "--bootstrap" names the Kafka servers everywhere else; kept as an alias.
    est.add_argument("--bootstrap", dest="resamples", type=int, help=argparse.SUPPRESS)
    est.add_argument(
        "--alpha", type=float, default=0.05, help="1 - interval coverage (default: %(default)s)"
    )
    est.add_argument(
        "--ridge",
        type=float,
        default=1.0,
        help="reward model's ridge penalty (default: %(default)s)",
    )
    est.add_argument(
        "--folds",
        type=_positive(int),
        default=5,
        help="reward model cross-fitting folds (default: %(default)s)",
    )
    est.add_argument(
        "--repeats",
        type=_positive(int),
        default=5,
        help="random cross-fitting splits averaged (steadies dr on rare rewards) "
        "(default: %(default)s)",
    )
    out = bt.add_argument_group("output")
    out.add_argument("--json", help="write JSON here ('-': stdout)")
    out.add_argument("--html", help="write the HTML report here")
    out.add_argument(
        "--title", default="Backtest", help="title of the HTML report (default: %(default)s)"
    )
    out.add_argument(
        "--bins",
        type=_positive(int),
        default=40,
        help="time bins of the plots (default: %(default)s)",
    )
    out.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of policies, cross-fitting splits, replay and bootstrap draws "
        "(default: %(default)s)",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bt.set_defaults(func=cmd_backtest)

    rp = sub.add_parser(
        "replay",
        help="re-produce a time range of requests into *.replay.<run-id> topics "
        "and run a worker with a candidate policies config on them",
    )
    rp.add_argument("--policies", required=True, help="the candidate policies YAML")
    rp.add_argument("--start", required=True)
    rp.add_argument("--end", required=True)
    rp.add_argument("--run-id", help="lower-case letters, digits, '-' (default: random)")
    rp.add_argument("--policy-id", help="send every replayed request to this candidate policy")
    rp.add_argument("--wait", type=_positive(float), default=60.0, help="seconds for decisions")
    rp.add_argument(
        "--web-port",
        type=port_number,
        default=None,
        help="the replay worker's web port (default: a free one)",
    )
    rp.add_argument("--json", help="write the summary as JSON here")
    rp.add_argument("--no-progress", action="store_true")
    rp.set_defaults(func=cmd_replay)
