"""``llmopt explain POLICY``: a policy's global report from a worker that decides.

llmopt explain default
llmopt explain default --url http://10.0.0.5:6066 --json

It reads ``GET /explain/{policy_id}`` (app/stream/explain_endpoint.py) with
the bearer token of the settings (``LLMOPT_WEB_TOKEN``), from
``http://LLMOPT_WEB_HOST:LLMOPT_WEB_PORT`` unless ``--url`` names the worker.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from app.cli import CliError
from app.settings import Settings

__all__ = ["add_commands", "cmd_explain", "render"]
TIMEOUT_S = 10.0


def add_commands(sub: Any) -> None:
    """Register ``explain`` on the ``llmopt`` subparsers."""
    p = sub.add_parser(
        "explain",
        help="a policy's global report: per arm its estimate and uncertainty, "
        "and the features that weigh most",
        description="Asks a worker that decides (role decide) for GET /explain/POLICY: "
        "per arm the policy's reward estimate, its uncertainty and exploration term, "
        "cost and latency estimates; for a policy linear in its context, each feature's "
        "global importance (docs/explanations.md).",
    )
    p.add_argument("policy", metavar="POLICY", help="the policy id")
    p.add_argument(
        "--url",
        default=None,
        help="the worker's base URL (default http://LLMOPT_WEB_HOST:LLMOPT_WEB_PORT)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    base = (args.url or f"http://{settings.web_host}:{settings.web_port}").rstrip("/")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"--url must be an http(s) URL such as http://127.0.0.1:6066, got {base!r}")
    if not args.policy.strip():
        raise CliError("POLICY must be a policy id")
    report = fetch_report(base, args.policy, settings.web_bearer_token())
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(report))
    return 0


def fetch_report(base: str, policy: str, token: str) -> dict[str, Any]:
    """The worker's report on ``policy``; any failure is a :class:`CliError`."""
    url = f"{base}/explain/{urllib.parse.quote(policy, safe='')}"
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        detail = _detail(exc.read())
        if exc.code == 401:
            detail = "unauthorized: set LLMOPT_WEB_TOKEN to the worker's token"
        raise CliError(f"{url}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach a worker at {base} ({reason}); is a worker with the decide "
            "role running there (--url)?"
        ) from None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CliError(f"{url}: the answer is not JSON; is {base} an llmopt worker?") from None
    if not isinstance(doc, dict) or "arms" not in doc:
        raise CliError(f"{url}: the answer is not a policy report")
    return doc


def _detail(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace")
    if isinstance(doc, dict):
        return f"{doc.get('error', '')}: {doc.get('detail', '')}".strip(": ")
    return str(doc)[:200]


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def render(report: dict[str, Any]) -> str:
    """The report as text: a table of arms, then the features."""
    lines = [
        f"policy {report['policy_id']} (version {report['version']}, {report['algorithm']}): "
        f"explores by {report['exploration']}",
    ]
    if report.get("arms_at"):
        lines.append(f"arms at {report['arms_at']}:")
    lines.append(
        f"  {'arm':<24} {'mean':>8} {'sd':>8} {'bonus':>8} {'pulls':>9} "
        f"{'cost_usd':>10} {'latency_ms':>10}"
    )
    for arm, e in report["arms"].items():
        cost = (e.get("cost_usd") or {}).get("mean")
        latency = (e.get("latency_ms") or {}).get("mean")
        lines.append(
            f"  {arm:<24} {_fmt(e.get('mean')):>8} {_fmt(e.get('sd')):>8} "
            f"{_fmt(e.get('bonus')):>8} {_fmt(e.get('pulls'), '.0f'):>9} "
            f"{_fmt(cost, '.5f'):>10} {_fmt(latency, '.0f'):>10}"
        )
    features = report.get("features")
    if features is None:
        lines.append("features: none (the policy does not use a context)")
        return "\n".join(lines)
    lines.append(f"features ({features['method']}: {features['detail']}):")
    rows = features.get("features") or []
    if not rows:
        lines.append("  n/a")
    for f in rows:
        lines.append(
            f"  {f['name']:<24} importance {_fmt(f.get('importance')):>8}  "
            f"mean {_fmt(f.get('mean')):>8}  sd {_fmt(f.get('sd')):>8}"
        )
    return "\n".join(lines)
