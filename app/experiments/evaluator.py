"""The statistics of the running experiments, fed by outcomes and drift
signals, and the events they lead to. Pure: ``agents/evaluate_experiments.py``
reads the topics, feeds an :class:`Evaluator` and sends what it returns.

Positions. Every record read is named by ``<role>/<partition>``
(``outcomes/3``, ``drift/0``, ``alerts/0``) and its offset. Each running
experiment keeps the positions up to which its statistics count
(``offsets``); a ``result`` or ``stage`` event carries the statistics and
those positions together in its ``state``, so a restarted evaluator picks
each experiment up from its last such event and reads on from there: an
outcome is counted once, before or after the restart. The reader starts at
the lowest position any running experiment needs (or at the end, for a
partition none has a position on) and each experiment skips what it has
counted already.

Copies. The join sends an outcome again, at another offset, when it redoes a
batch it had not committed (the learner applies it once by request id). So
each run remembers the requests it counted among its last
:data:`COUNTED_WINDOW` (a copy comes within the outcomes written while the
join recovers), and a restarted evaluator reads :data:`REMEMBER_BACK`
records of each outcomes partition before its position again, remembering
their requests without counting them: a copy that comes after the restart
of an outcome counted before it is not counted twice.

Recovery. At its start the evaluator folds the whole experiments topic
(:meth:`Evaluator.recover`), then :meth:`Evaluator.start` builds the runs.
After that it takes only ``created`` and ``stopped`` events from the topic
(:meth:`Evaluator.on_event`): ``stage`` and ``result`` events are its own
and already applied.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.experiments.events import result_event, stage_event, stopped_event
from app.experiments.experiment import Experiment
from app.experiments.live import RUNNING, ExperimentLog, LiveExperiment
from app.experiments.rollout import Step, next_step
from app.records import ExperimentEvent

COUNTED_WINDOW = 200_000
REMEMBER_BACK = 50_000
SIGNAL_DRIFT_KINDS = ("drift", "anomaly")
"""Drift events that roll a rollout's challenger back (input drift is about
requests, not the challenger; adaptations are the learner's answer)."""


@dataclass
class Run:
    """One running experiment's statistics of its current stage."""

    live: LiveExperiment
    stats: Experiment
    offsets: dict[str, int]
    pending: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    signal: str | None = None  # why to roll back at the next look
    last_result_ms: int = 0
    # The requests counted lately, oldest first (see "Copies" above).
    counted: dict[Any, None] = field(default_factory=dict)

    def remember(self, request: Any) -> bool:
        """Whether ``request`` is new among those counted lately (it is
        remembered either way)."""
        if request in self.counted:
            return False
        self.counted[request] = None
        if len(self.counted) > COUNTED_WINDOW:
            del self.counted[next(iter(self.counted))]
        return True

    def state(self) -> dict[str, Any]:
        return {
            "stage": self.live.stage,
            "statistics": self.stats.to_dict(),
            "offsets": dict(self.offsets),
        }


class Evaluator:
    """``by``: the ``created_by`` of its events; ``result_every_ms``: how
    often each running experiment's result is published."""

    def __init__(self, by: str, result_every_ms: int = 5_000) -> None:
        self.by = by
        self.result_every_ms = result_every_ms
        self.log = ExperimentLog()
        self.runs: dict[str, Run] = {}
        self.positions: dict[str, int] = {}

    # -- the experiments topic -------------------------------------------------------------
    def recover(self, ev: ExperimentEvent) -> None:
        """Fold an event of the topic as it was before this evaluator started."""
        self.log.apply(ev)

    def start(self, ends: Mapping[str, int]) -> dict[str, int]:
        """Build the runs of the running experiments from their last state;
        the position to read each outcome and signal partition from."""
        positions = dict(ends)
        runs = [self._run(live, _carried_state(live)) for live in self.log.running()]
        for run in runs:
            for where, offset in run.offsets.items():
                if where in positions:
                    positions[where] = min(positions[where], offset)
            if not run.offsets:
                run.offsets = dict(ends)
        for run in runs:  # a partition new to a run: counted from where the reader starts
            for where, offset in positions.items():
                run.offsets.setdefault(where, offset)
        self.positions = dict(positions)
        return {
            where: max(0, offset - REMEMBER_BACK) if where.startswith("outcomes/") else offset
            for where, offset in positions.items()
        }

    def _run(self, live: LiveExperiment, state: dict[str, Any] | None) -> Run:
        if state is not None:
            stats = Experiment.from_dict(state["statistics"])
            offsets = {str(k): int(v) for k, v in state.get("offsets", {}).items()}
        else:
            stats, offsets = live.definition.statistics(), {}
        run = Run(live, stats, offsets)
        self.runs[live.experiment_id] = run
        return run

    def on_event(self, ev: ExperimentEvent) -> None:
        """A new event of the topic: an experiment created or stopped by hand."""
        if ev.kind not in ("created", "stopped"):
            return
        live = self.log.apply(ev)
        if live is None:
            return
        if ev.kind == "created" and live.status == RUNNING:
            # Its outcomes are all still to come: count from where the reader is.
            self._run(live, None).offsets = dict(self.positions)
        elif live.status != RUNNING:
            self.runs.pop(live.experiment_id, None)

    # -- outcomes and signals --------------------------------------------------------------
    def on_outcome(self, where: str, offset: int, outcome: Mapping[str, Any]) -> bool:
        """Count an outcome (a valid outcome document, with ``request``: a
        key of its request, when known) for its experiment's variant; False
        when it counts for none, or its request was counted already."""
        self.positions[where] = max(self.positions.get(where, 0), offset + 1)
        run = self.runs.get(outcome.get("experiment_id") or "")
        if run is None:
            return False
        request = outcome.get("request")
        if offset < run.offsets.get(where, 0):  # counted before (read again after a restart)
            if request is not None:
                run.remember(request)
            return False
        variant = outcome.get("variant")
        if variant not in run.live.definition.names:
            return False
        if request is not None and not run.remember(request):
            return False
        components = outcome.get("components") or {}
        for m in run.stats.metrics:
            value = outcome["reward"] if m.name == "reward" else components.get(m.name)
            if isinstance(value, int | float) and math.isfinite(value):
                run.pending[(variant, m.name)].append(float(value))
        return True

    def on_signal(
        self, where: str, offset: int, policy_id: str, arm: str | None, what: str
    ) -> None:
        """A drift or firing alert about ``policy_id`` (and ``arm``): a
        rollout whose challenger it names is rolled back at the next look."""
        self.positions[where] = max(self.positions.get(where, 0), offset + 1)
        for run in self.runs.values():
            d = run.live.definition
            if not d.rollout or offset < run.offsets.get(where, 0) or run.signal:
                continue
            c = d.challenger
            if (c.policy is not None and c.policy == policy_id) or (
                c.arm is not None and d.policy == policy_id and arm == c.arm
            ):
                run.signal = f"{what} on {policy_id}{f' arm {arm}' if arm else ''}"

    def passed(self, where: str, offset: int) -> None:
        """A record read that is neither an experiment's outcome nor a signal."""
        self.positions[where] = max(self.positions.get(where, 0), offset + 1)

    # -- looks -----------------------------------------------------------------------------
    def look(self, now: int, force: bool = False) -> list[ExperimentEvent]:
        """Fold the pending outcomes in, look at every running experiment,
        and return the events to publish (already applied here): its result
        every ``result_every_ms`` (or ``force``), and a stage change or stop
        when a gate or a decision calls for one."""
        out: list[ExperimentEvent] = []
        for exp_id in list(self.runs):
            run = self.runs[exp_id]
            for (variant, metric), values in run.pending.items():
                run.stats.add_values(variant, {metric: values})
            run.pending.clear()
            for where, offset in self.positions.items():
                run.offsets[where] = max(run.offsets.get(where, 0), offset)
            results = run.stats.check()
            step = (
                Step("rollback", f"{run.live.definition.challenger.name} rolled back: {run.signal}")
                if run.signal
                else next_step(run.live.definition, run.live.stage, run.stats)
            )
            if step is not None or force or now - run.last_result_ms >= self.result_every_ms:
                out.append(self._result(run, results, now))
            if step is not None:
                out += self._take(run, step, now)
        return out

    def _result(self, run: Run, results: Any, now: int) -> ExperimentEvent:
        run.last_result_ms = now
        live = run.live
        ev = result_event(
            live.experiment_id,
            live.stage,
            summarize(run.stats, results, live.stage, live.shares),
            run.state(),
            self.by,
            now,
        )
        self.log.apply(ev)
        return ev

    def _take(self, run: Run, step: Step, now: int) -> list[ExperimentEvent]:
        live, d = run.live, run.live.definition
        exp_id = live.experiment_id
        events: list[ExperimentEvent] = []
        if step.action in ("advance", "promote"):
            assert step.stage is not None
            run.stats = d.statistics()  # fresh statistics at each stage's shares
            shares = d.stage_shares(step.stage)
            events.append(stage_event(exp_id, step.stage, shares, step.reason, None, self.by, now))
            self.log.apply(events[-1])
            events[-1].state = run.state()  # after the stage is taken: the new stage's
            live.state = events[-1].state
            if step.action == "promote":
                events.append(stopped_event(exp_id, "promoted", step.reason, self.by, now, shares))
        elif step.action == "rollback":
            shares = {d.control: 1.0, d.challenger.name: 0.0}
            events.append(stopped_event(exp_id, "rolled_back", step.reason, self.by, now, shares))
        else:
            events.append(stopped_event(exp_id, "winner", step.reason, self.by, now))
        if events[-1].kind == "stopped":
            self.log.apply(events[-1])
            self.runs.pop(exp_id, None)
        return events


def _carried_state(live: LiveExperiment) -> dict[str, Any] | None:
    """The state of the experiment's current stage, if an event carried one."""
    state = live.state
    if state is None or state.get("stage") != live.stage or "statistics" not in state:
        return None
    return state


def _num(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def summarize(
    stats: Experiment, results: Any, stage: int, shares: Mapping[str, float]
) -> dict[str, Any]:
    """A result event's ``result``: per variant and metric its count and
    mean, per treatment its decision, gate and per-metric comparison."""
    variants: dict[str, dict[str, Any]] = {v: {} for v in stats.variants}
    treatments: dict[str, Any] = {}
    for v in stats.treatments:
        metrics = {}
        for name, r in results[v].items():
            variants[v][name] = {"n": r.n_treatment, "mean": _num(r.mean_treatment)}
            variants[stats.control][name] = {"n": r.n_control, "mean": _num(r.mean_control)}
            metrics[name] = r.to_dict()
        treatments[v] = {"decision": stats.decision(v), "gate": stats.gate(v), "metrics": metrics}
    return {
        "stage": stage,
        "shares": dict(shares),
        "control": stats.control,
        "primary": stats.primary,
        "variants": variants,
        "treatments": treatments,
    }
