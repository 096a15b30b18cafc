"""The feature store on the worker's web server.

``GET /features?entity=tenant=acme[&entity=...][&names=a,b]`` → online values,
``{"features": {entity: {name: value}}}`` (one or many entities: batch get).
``GET /features/history?entity=...&start=<ms>&end=<ms>[&names=a,b]`` →
``{"rows": [...]}``: every final window ending in the range, with its
``available_at``. ``GET /features/names`` lists the feature names. Values
come from this worker's store: the entities whose partitions it holds.
Unknown feature names or bad parameters → 400 with ``{"error": ...}``; so is
a history range longer than :data:`MAX_HISTORY_SPAN_MS`, whose rows (one per
window hop) would be built on the event loop, stalling the agents.
"""

from __future__ import annotations

from typing import Any

import faust

from app.features.store import UnknownFeature
from app.stream.runtime import Runtime

MAX_HISTORY_SPAN_MS = 86_400_000


def _names(request: Any) -> list[str] | None:
    raw = request.query.get("names")
    return [n for n in raw.split(",") if n] if raw else None


def register(app: faust.App, runtime: Runtime) -> None:
    store = runtime.feature_store

    @app.page("/features")
    async def features(web: Any, request: Any) -> Any:
        entities = request.query.getall("entity", [])
        if not entities:
            return web.json({"error": "give at least one entity=<entity>"}, status=400)
        try:
            body = store.get_features_batch(entities, _names(request))
        except UnknownFeature as exc:
            return web.json({"error": f"unknown feature {exc.args[0]!r}"}, status=400)
        return web.json({"features": body})

    @app.page("/features/history")
    async def history(web: Any, request: Any) -> Any:
        try:
            entity = request.query["entity"]
            start, end = int(request.query["start"]), int(request.query["end"])
            if end - start > MAX_HISTORY_SPAN_MS:
                return web.json(
                    {"error": f"end - start may be at most {MAX_HISTORY_SPAN_MS} ms"}, status=400
                )
            rows = store.get_historical_features(entity, start, end, _names(request))
        except KeyError as exc:
            return web.json({"error": f"missing or unknown: {exc.args[0]}"}, status=400)
        except ValueError:
            return web.json({"error": "start and end must be epoch milliseconds"}, status=400)
        return web.json({"rows": rows})

    @app.page("/features/names")
    async def names(web: Any, request: Any) -> Any:
        return web.json({"names": store.feature_names})
