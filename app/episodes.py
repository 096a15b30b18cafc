"""Outcomes of multi-step workflows → transitions for RL policies.

A workflow (a conversation, an agentic task: try a cheap model, escalate on
low quality, retry with other parameters) sends one request per step, each
naming the workflow's ``id`` and ``step``; the decider logs the step's state
(the decision's feature vector) and the join carries it to the outcome. Here
the outcomes of one workflow become transitions ``(s_t, a_t, r_t, s_{t+1},
done)``: a step's transition is complete when the next step's outcome brings
``s_{t+1}``. An episode ends at a step marked ``final``, at a step whose arm
is terminal (e.g. "accept the answer held"), or when it has waited longer
than the timeout for its next step (its last step is then terminal).

Outcomes of a policy are keyed by policy id, so one learner sees every step
of its workflows in order, and this state is part of the learner's state
(saved with the offsets: exactly once across restarts).

Temporal-difference agents get each transition as soon as it is complete;
Monte-Carlo ones (``monte_carlo = True``: REINFORCE) need a whole episode
and get its transitions together, in order, when it ends.

Memory is bounded whatever the workflow ids and steps: at most ``max_open``
open workflows (past it, the one that waited longest is closed) and at most
``max_steps`` steps per workflow (past it, the workflow is closed and its
next step starts another); ``llmopt_state_evictions_total{state=
"open_workflows"|"workflow_steps"}`` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app import metrics
from app.records import Outcome

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Transition:
    state: list[float]
    arm: str
    reward: float
    next_state: list[float]
    done: bool


class Episodes:
    """The open workflows of one policy.

    Steps may arrive out of order (their rewards come back at different
    times, through different partitions of the join): a step's transition goes
    out once the step after it has been seen, whatever came first, and an
    episode is forgotten once every step up to its last has been seen.

    >>> ep = Episodes(terminal_arms=("accept",), timeout_ms=60_000)
    >>> def outcome(step, arm, reward, state, at):
    ...     return Outcome(request_id=f"r{step}", tenant_id="t", policy_id="p",
    ...         policy_version=0, arm=arm, available_arms=[arm], propensity=1.0,
    ...         explored=False, reward=reward, defaulted=False, decided_at=at,
    ...         outcome_at=at, features=state, workflow={"id": "w", "step": step})
    >>> ep.add(outcome(1, "accept", 0.9, [1.0], 2))  # the last step's reward came first
    [Transition(state=[1.0], arm='accept', reward=0.9, next_state=[1.0], done=True)]
    >>> ep.add(outcome(0, "cheap", 0.2, [0.0], 1))
    [Transition(state=[0.0], arm='cheap', reward=0.2, next_state=[1.0], done=False)]
    >>> ep.open_count
    0
    """

    def __init__(
        self,
        terminal_arms: tuple[str, ...] = (),
        timeout_ms: int = 600_000,
        monte_carlo: bool = False,
        max_open: int = 100_000,
        max_steps: int = 1_000,
    ) -> None:
        self.terminal_arms = frozenset(terminal_arms)
        self.timeout_ms = timeout_ms
        self.monte_carlo = monte_carlo
        self.max_open = max_open
        self.max_steps = max_steps
        # workflow id → {"at": last outcome time, "last": the final step or None,
        # "states": {step: state} seen, "steps": {step: [s, a, r]} not handed out}
        # (JSON-shaped: it is saved with the learner's state).
        self._open: dict[str, JSON] = {}

    @property
    def open_count(self) -> int:
        return len(self._open)

    def add(self, outcome: Outcome) -> list[Transition]:
        """Take one outcome with a workflow and features; the transitions it completes."""
        wf = outcome.workflow
        assert wf is not None and outcome.features is not None
        wid, step = wf["id"], str(int(wf["step"]))
        out: list[Transition] = []
        ep = self._open.pop(wid, None)
        if ep is not None and step in ep["states"]:  # the workflow id started over
            out += _close(ep)
            ep = None
        if ep is None:
            ep = {"at": 0, "last": None, "states": {}, "steps": {}}
        state = list(outcome.features)
        ep["at"] = max(ep["at"], outcome.outcome_at)
        ep["states"][step] = state
        ep["steps"][step] = [state, outcome.arm, outcome.reward]
        if wf.get("final") or outcome.arm in self.terminal_arms:
            ep["last"] = int(step)
        out += self._ready(ep)
        if _complete(ep):
            return out
        if len(ep["states"]) > self.max_steps:
            metrics.STATE_EVICTIONS.labels("workflow_steps").inc()
            return out + _close(ep)
        self._open[wid] = ep  # re-inserted: the dict stays ordered by last arrival
        if len(self._open) > self.max_open:
            metrics.STATE_EVICTIONS.labels("open_workflows").inc()
            out += _close(self._open.pop(next(iter(self._open))))
        return out

    def _ready(self, ep: JSON) -> list[Transition]:
        """The transitions whose next state is known (TD), or the whole
        episode once complete (Monte-Carlo)."""
        if self.monte_carlo:
            return _close(ep) if _all_seen(ep) else []
        out = []
        for step in sorted(ep["steps"], key=int):
            nxt = ep["states"].get(str(int(step) + 1))
            if nxt is not None:
                out.append(_transition(ep["steps"].pop(step), nxt, False))
            elif ep["last"] == int(step):
                s = ep["steps"].pop(step)
                out.append(_transition(s, s[0], True))
        return out

    def expire(self, now_ms: int) -> list[Transition]:
        """Close the episodes that waited too long for a step: what they hold
        is handed out, the last step terminal."""
        out: list[Transition] = []
        cutoff = now_ms - self.timeout_ms
        # Ordered by last arrival: the overdue ones are at the front.
        while self._open:
            wid, ep = next(iter(self._open.items()))
            if ep["at"] >= cutoff:
                break
            del self._open[wid]
            out += _close(ep)
        return out

    def to_dict(self) -> JSON:
        return dict(self._open)

    def load(self, doc: JSON) -> None:
        self._open = dict(doc)


def _all_seen(ep: JSON) -> bool:
    """Every step up to the last one has been seen."""
    return ep["last"] is not None and len(ep["states"]) >= ep["last"] + 1


def _complete(ep: JSON) -> bool:
    """Every step seen and handed out."""
    return _all_seen(ep) and not ep["steps"]


def _transition(step: list[Any], next_state: list[float], done: bool) -> Transition:
    return Transition(step[0], step[1], float(step[2]), next_state, done)


def _close(ep: JSON) -> list[Transition]:
    """Hand out an episode's remaining steps in order, each linked to the
    next state seen, the last one terminal."""
    steps = sorted(ep["steps"].items(), key=lambda kv: int(kv[0]))
    ep["steps"] = {}
    out = []
    for n, (step, s) in enumerate(steps):
        nxt = ep["states"].get(str(int(step) + 1))
        last = n == len(steps) - 1
        out.append(_transition(s, s[0] if last or nxt is None else nxt, last))
    return out
