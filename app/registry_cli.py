"""``llmopt registry``: list, show and compare a policy's versions, register
the serving state, promote, roll back and retire (app/versions.py says what
versions are). Serving a version (``rollback``, ``promote --to champion``)
is a request the learner that owns the policy carries out; ``--wait`` waits
for it to have done so."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.cli import CliError, _configured, _kafka
from app.kafka_security import kafka_security
from app.records import VERSION_STATUSES, InvalidEvent, RegistryEvent, now_ms
from app.settings import Settings
from app.shadow import APPRENTICE_WINDOW
from app.stream.kafka_io import assign_from_start, partitions_of, read_to_end
from app.stream.partitioning import partitions_for
from app.topics import TopicCatalog
from app.versions import (
    REGISTRY_MAX_BYTES,
    PolicyRegistry,
    RegistryView,
    VersionError,
    VersionInfo,
    arm_summary,
    check_status_move,
    config_diff,
    new_event_id,
    record_key,
    serve_records,
)

WAIT_S = 10.0


def add_commands(sub: Any) -> None:
    reg = sub.add_parser(
        "registry",
        help="policy versions: list, show, diff, register, promote, rollback, retire",
        description="A policy's versions: its configuration, learned state and lineage, "
        "kept on the registry topic. The learner registers the serving state before "
        "the policies file changes the policy and before another version is served.",
    )
    actions = reg.add_subparsers(metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help)
        p.set_defaults(func=cmd_registry, action=name)
        return p

    p = action("list", "the versions of one policy, or of every policy, newest last")
    p.add_argument("policy", nargs="?", help="policy id (default: every policy)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")

    p = action("show", "one version: configuration, lineage, status history, per-arm summary")
    p.add_argument("policy", help="policy id")
    p.add_argument("version", type=int, help="version number (see `llmopt registry list`)")
    p.add_argument("--json", action="store_true", help="the whole record as JSON")

    p = action("diff", "how two versions differ: configuration and per-arm summary")
    p.add_argument("policy", help="policy id")
    p.add_argument("a", type=int, help="version number")
    p.add_argument("b", type=int, help="version number")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = action("register", "ask the policy's learner to register its serving state")
    p.add_argument("policy", help="policy id")
    _request_flags(p)

    p = action("promote", "move a version to a status; to champion: serve it")
    p.add_argument("policy", help="policy id")
    p.add_argument("version", type=int, help="version number")
    p.add_argument(
        "--to", required=True, choices=VERSION_STATUSES[:-1], help="the status to move it to"
    )
    p.add_argument(
        "--apprentice",
        type=float,
        default=None,
        metavar="LEVEL",
        help="with --to shadow: imitate the serving policy until the shadow's agreement with "
        "it reaches LEVEL (0 to 1) over --apprentice-outcomes outcomes, then learn from the "
        "rewards",
    )
    p.add_argument(
        "--apprentice-outcomes",
        type=int,
        default=APPRENTICE_WINDOW,
        metavar="N",
        help=f"the outcomes the agreement is counted over (default {APPRENTICE_WINDOW})",
    )
    _request_flags(p)

    p = action("rollback", "serve an earlier version (configuration and learned state)")
    p.add_argument("policy", help="policy id")
    p.add_argument(
        "--to",
        type=int,
        default=None,
        metavar="VERSION",
        help="version to serve (default: the newest retired one, i.e. what served "
        "before the last change)",
    )
    _request_flags(p)

    p = action("retire", "retire a version that does not serve")
    p.add_argument("policy", help="policy id")
    p.add_argument("version", type=int, help="version number")
    p.add_argument("--reason", default=None, help="why, kept in the history")

    reg.set_defaults(func=lambda args: reg.print_help() or 2)


def _request_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", default=None, help="why, kept in the history")
    p.add_argument(
        "--wait",
        type=float,
        default=WAIT_S,
        metavar="SECONDS",
        help=f"wait this long for the learner to carry it out (default {WAIT_S:g}; 0: do not)",
    )


def cmd_registry(args: argparse.Namespace) -> int:
    settings = _configured()
    catalog = TopicCatalog.for_settings(settings)
    topic = catalog.name("registry")
    with _kafka(settings):
        try:
            return asyncio.run(_run(args, settings, topic))
        except VersionError as exc:
            raise CliError(str(exc)) from None


async def _run(args: argparse.Namespace, settings: Settings, topic: str) -> int:
    view = await read_registry(settings.bootstrap, topic)
    a = args.action
    if a == "list":
        return _list(view, args.policy, args.json)
    reg = view.policy(args.policy) if a != "register" else view.policies.get(args.policy)
    if a == "show":
        return _show(view.policy(args.policy).get(args.version), args.json)
    if a == "diff":
        return _diff(view.policy(args.policy), args.a, args.b, args.json)
    by = f"cli:{cli_user()}"
    now = now_ms()
    if a == "register":
        request = _event("register", args.policy, by, now, reason=args.reason)
        await write_records(settings.bootstrap, topic, [request])
        return await _await_learner(settings.bootstrap, topic, request, args.wait, "registered")
    assert reg is not None
    if a == "retire":
        info = reg.get(args.version)
        champion = reg.champion()
        if champion is not None and champion.number == info.number:
            raise VersionError(
                f"version {info.number} serves {args.policy!r}: serve another one first "
                f"(`llmopt registry rollback {args.policy} --to VERSION`)"
            )
        check_status_move(info, "retired")
        status = _event("status", args.policy, by, now, info.number, "retired", args.reason)
        await write_records(settings.bootstrap, topic, [status])
        print(f"{args.policy} version {info.number}: retired")
        return 0
    if a == "promote" and args.apprentice is not None:
        _check_apprentice(args.to, args.apprentice, args.apprentice_outcomes)
    if a == "promote" and args.to != "champion":
        info = reg.get(args.version)
        check_status_move(info, args.to)
        status = _event("status", args.policy, by, now, info.number, args.to, args.reason)
        if args.to == "shadow":
            # The learner that owns the policy runs it beside the serving
            # state: it needs the version's configuration and state.
            status.config, status.state = info.record.config, info.record.state
            if args.apprentice is not None:
                status.lineage = {
                    "apprentice": args.apprentice,
                    "apprentice_outcomes": args.apprentice_outcomes,
                }
        await write_records(settings.bootstrap, topic, [status])
        print(f"{args.policy} version {info.number}: {args.to}")
        return 0
    target = reg.get(args.version) if a == "promote" else _rollback_target(reg, args.to)
    reason = args.reason or ("promoted to champion" if a == "promote" else "rolled back")
    records = serve_records(reg, target, by, now, reason)
    await write_records(settings.bootstrap, topic, records)
    return await _await_learner(settings.bootstrap, topic, records[0], args.wait, "serving")


def _check_apprentice(to: str, level: float, outcomes: int) -> None:
    if to != "shadow":
        raise VersionError("--apprentice is for --to shadow")
    if not 0 < level <= 1:
        raise VersionError(f"--apprentice must be in (0, 1], got {level:g}")
    if not 1 <= outcomes <= 100_000:
        raise VersionError(f"--apprentice-outcomes must be 1 to 100000, got {outcomes}")


def _rollback_target(reg: PolicyRegistry, number: int | None) -> VersionInfo:
    if number is not None:
        return reg.get(number)
    retired = [v for n, v in sorted(reg.versions.items()) if v.status == "retired"]
    if not retired:
        raise VersionError(
            f"policy {reg.policy_id!r} has no retired version to roll back to; "
            f"name one with --to (see `llmopt registry list {reg.policy_id}`)"
        )
    return retired[-1]


def _event(
    kind: str,
    policy_id: str,
    by: str,
    now: int,
    version: int | None = None,
    status: str | None = None,
    reason: str | None = None,
) -> RegistryEvent:
    return RegistryEvent(
        event_id=new_event_id(),
        kind=kind,
        policy_id=policy_id,
        created_at=now,
        created_by=by,
        version=version,
        status=status,
        reason=reason,
    )


def cli_user() -> str:
    """Who runs the command (the ``created_by`` of what it writes)."""
    import getpass

    try:
        return getpass.getuser()[:200]
    except Exception:
        return "unknown"


# -- the topic ---------------------------------------------------------------------------
async def read_registry(bootstrap: str, topic: str) -> RegistryView:
    """The registry as its topic holds it now (records that do not parse are skipped)."""
    view = RegistryView()
    async for msgs in read_to_end(bootstrap, topic, "llmopt-registry-cli", timeout_s=30):
        for m in msgs:
            try:
                view.add(RegistryEvent.loads(m.value, REGISTRY_MAX_BYTES))
            except InvalidEvent as exc:
                print(f"llmopt: warning: skipped a registry record ({exc})", file=sys.stderr)
    return view


async def write_records(bootstrap: str, topic: str, records: list[RegistryEvent]) -> None:
    """Each record on the partition of its policy id, acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        max_request_size=REGISTRY_MAX_BYTES + (1 << 20),
        **kafka_security(),
    )
    await producer.start()
    try:
        n = len(await producer.partitions_for(topic))
        for r in records:
            p = partitions_for([r.policy_id.encode()], n)[0]
            await (await producer.send(topic, r.dumps(), key=record_key(r), partition=p))
    finally:
        await producer.stop()


async def learner_reply(
    bootstrap: str, topic: str, request: RegistryEvent, timeout_s: float
) -> RegistryEvent | None:
    """The record the policy's learner wrote for ``request`` (``lineage.request``):
    the served version's status for a serve, the new version for a register;
    None if none came within ``timeout_s``."""
    wanted = "status" if request.kind == "serve" else "version"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=REGISTRY_MAX_BYTES + (1 << 20),
        **kafka_security(),
    )
    await consumer.start()
    try:
        assign_from_start(consumer, partitions_of(consumer, topic))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=100)).values():
                for m in msgs:
                    try:
                        e = RegistryEvent.loads(m.value, REGISTRY_MAX_BYTES)
                    except InvalidEvent:
                        continue
                    if e.kind == wanted and (e.lineage or {}).get("request") == request.event_id:
                        return e
    finally:
        await consumer.stop()
    return None


async def _await_learner(
    bootstrap: str, topic: str, request: RegistryEvent, wait_s: float, done: str
) -> int:
    """Wait until the learner carried out ``request``, and say so."""
    what = f"{request.policy_id}: {request.kind}"
    if wait_s <= 0:
        print(f"{what} requested")
        return 0
    started = time.monotonic()
    e = await learner_reply(bootstrap, topic, request, wait_s)
    if e is None:
        raise CliError(
            f"{what} written, but the policy's learner did not carry it out within "
            f"{wait_s:g} s: is a worker with the learn role running? (its log says why "
            "a request is refused)"
        )
    waited = time.monotonic() - started
    if request.kind == "serve":
        print(f"{what} version {e.version} {done} ({waited * 1000:.0f} ms)")
    else:
        print(f"{what}ed as version {e.version} ({waited * 1000:.0f} ms)")
    return 0


# -- output --------------------------------------------------------------------------------
def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _row(reg: PolicyRegistry, v: VersionInfo) -> dict[str, Any]:
    r = v.record
    champion = reg.champion()
    lineage = r.lineage or {}
    return {
        "policy_id": reg.policy_id,
        "version": v.number,
        "status": v.status,
        "serving": champion is not None and champion.number == v.number,
        "algorithm": (r.config or {}).get("algorithm"),
        "updates": lineage.get("total_updates"),
        "parent": r.parent,
        "created_at": r.created_at,
        "created_by": r.created_by,
        "reason": r.reason,
        "config_hash": r.config_hash,
    }


def _list(view: RegistryView, policy: str | None, as_json: bool) -> int:
    regs = [view.policy(policy)] if policy else [view.policies[p] for p in sorted(view.policies)]
    rows = [_row(reg, v) for reg in regs for _, v in sorted(reg.versions.items())]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no versions registered")
        return 0
    head = ["policy", "version", "status", "algorithm", "updates", "parent", "created", "reason"]
    table = [
        [
            r["policy_id"],
            f"{r['version']}{' *' if r['serving'] else ''}",
            r["status"],
            r["algorithm"] or "-",
            "-" if r["updates"] is None else str(r["updates"]),
            "-" if r["parent"] is None else str(r["parent"]),
            _when(r["created_at"]),
            r["reason"] or "",
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table, strict=False)]
    for line in [head, *table]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    if any(r["serving"] for r in rows):
        print("* serving (the version served last)")
    return 0


def _show(v: VersionInfo, as_json: bool) -> int:
    doc = v.record.to_dict()
    doc["history"] = [{"at": at, "status": s, "reason": why} for at, s, why in v.history]
    doc["arms"] = arm_summary(v.record.state)
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    r = v.record
    print(f"{r.policy_id} version {v.number}: {v.status}")
    print(f"  created   {_when(r.created_at)} by {r.created_by}: {r.reason or '-'}")
    print(f"  parent    {r.parent if r.parent is not None else '-'}")
    print(f"  config    {r.config_hash}")
    print(json.dumps(r.config, indent=2).replace("\n", "\n    ").join(["    ", ""]))
    lineage = {k: x for k, x in (r.lineage or {}).items() if k != "offsets"}
    print(f"  lineage   {json.dumps(lineage)}")
    for at, status, why in v.history:
        print(f"  {_when(at)}  {status}  {why}")
    for arm, s in doc["arms"].items():
        print(f"  arm {arm}: " + ", ".join(f"{k} {x:.4g}" for k, x in s.items()))
    return 0


def _diff(reg: PolicyRegistry, a: int, b: int, as_json: bool) -> int:
    va, vb = reg.get(a), reg.get(b)
    changes = config_diff(va.record.config or {}, vb.record.config or {})
    arms_a, arms_b = arm_summary(va.record.state), arm_summary(vb.record.state)
    arms = {
        arm: {"a": arms_a.get(arm), "b": arms_b.get(arm)}
        for arm in sorted(set(arms_a) | set(arms_b))
    }
    if as_json:
        print(json.dumps({"config": changes, "arms": arms}, indent=2))
        return 0
    print(f"{reg.policy_id}: version {a} → {b}")
    if not changes:
        print("  configuration: the same")
    for c in changes:
        print(f"  {c['path']}: {json.dumps(c['from'])} → {json.dumps(c['to'])}")
    for arm, ab in arms.items():
        sa, sb = ab["a"] or {}, ab["b"] or {}
        pulls = f"pulls {sa.get('pulls', '-')} → {sb.get('pulls', '-')}"
        mean = f"mean {_num(sa.get('mean_reward'))} → {_num(sb.get('mean_reward'))}"
        print(f"  arm {arm}: {pulls}, {mean}")
    return 0


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}"
