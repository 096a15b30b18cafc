"""GET /explain/{policy_id} on a worker that decides: the policy's global
report (app/explain.py, docs/explanations.md) from the state select_arm
decides with — per arm its estimate and uncertainty, and for a policy linear
in its context each feature's global importance.

Status: 200 with the report; 404 ``unknown_policy`` for a policy the
worker's config does not have; 503 ``not_ready`` until the decider has read
the policy snapshots. The bearer token of app/web_auth.py applies as on
every page but /health.
"""

from __future__ import annotations

from typing import Any

import faust
import orjson

from app.stream.runtime import Runtime

JSON_TYPE = "application/json"


def explain_answer(runtime: Runtime, policy_id: str) -> tuple[int, dict[str, Any]]:
    """(status, document) for ``GET /explain/{policy_id}``."""
    direct = runtime.direct_decisions
    if direct is None:
        return 503, {"error": "not_ready", "detail": "policy snapshots not read yet"}
    decider = direct.decider
    try:
        return 200, decider.explain_policy(policy_id)
    except KeyError:
        known = sorted(decider.config.policies)
        return 404, {
            "error": "unknown_policy",
            "detail": f"no policy {policy_id!r}; known: {', '.join(known)}",
        }


def register(app: faust.App, runtime: Runtime) -> None:
    @app.page("/explain/{policy_id}")
    class Explain(faust.web.View):
        async def get(self, request: Any, policy_id: str) -> Any:
            status, doc = explain_answer(runtime, policy_id)
            return self.bytes(orjson.dumps(doc), content_type=JSON_TYPE, status=status)
