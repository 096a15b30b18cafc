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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    """The open steps of one policy's workflows.

    >>> ep = Episodes(terminal_arms=("accept",), timeout_ms=60_000)
    >>> def outcome(step, arm, reward, state, at):
    ...     return Outcome(request_id=f"r{step}", tenant_id="t", policy_id="p",
    ...         policy_version=0, arm=arm, available_arms=[arm], propensity=1.0,
    ...         explored=False, reward=reward, defaulted=False, decided_at=at,
    ...         outcome_at=at, features=state, workflow={"id": "w", "step": step})
    >>> ep.add(outcome(0, "cheap", 0.2, [0.0], 1))
    []
    >>> [(t.arm, t.next_state, t.done) for t in ep.add(outcome(1, "accept", 0.9, [1.0], 2))]
    [('cheap', [1.0], False), ('accept', [1.0], True)]
    >>> ep.open_count
    0
    """

    def __init__(
        self,
        terminal_arms: tuple[str, ...] = (),
        timeout_ms: int = 600_000,
        monte_carlo: bool = False,
        max_open: int = 100_000,
    ) -> None:
        self.terminal_arms = frozenset(terminal_arms)
        self.timeout_ms = timeout_ms
        self.monte_carlo = monte_carlo
        self.max_open = max_open
        # workflow id → (last step number, last outcome time, the steps not yet
        # handed out: one for TD agents, the whole episode for Monte-Carlo ones)
        self._open: dict[str, tuple[int, int, list[JSON]]] = {}

    @property
    def open_count(self) -> int:
        return len(self._open)

    def add(self, outcome: Outcome) -> list[Transition]:
        """Take one outcome with a workflow and features; the transitions it completes."""
        wf = outcome.workflow
        assert wf is not None and outcome.features is not None
        wid, step = wf["id"], int(wf["step"])
        state = list(outcome.features)
        out: list[Transition] = []
        held = self._open.pop(wid, None)
        pending: list[JSON] = []
        if held is not None:
            last_step, _, pending = held
            if step <= last_step:  # the workflow started over: close what was open
                out += _close(pending)
                pending = []
            elif self.monte_carlo:
                pending[-1]["next"] = state
            else:
                out.append(_transition(pending[-1], state, False))
                pending = []
        pending.append({"s": state, "a": outcome.arm, "r": outcome.reward})
        if wf.get("final") or outcome.arm in self.terminal_arms:
            out += _close(pending)
        else:
            self._open[wid] = (step, outcome.outcome_at, pending)
            if len(self._open) > self.max_open:  # dicts keep insertion order: oldest first
                oldest = next(iter(self._open))
                out += _close(self._open.pop(oldest)[2])
        return out

    def expire(self, now_ms: int) -> list[Transition]:
        """Close the episodes whose next step is overdue (their last step is terminal)."""
        out: list[Transition] = []
        cutoff = now_ms - self.timeout_ms
        # Steps re-enter the dict when they arrive, so it is ordered by arrival:
        # the overdue ones are at the front.
        while self._open:
            wid, (_, at, pending) = next(iter(self._open.items()))
            if at >= cutoff:
                break
            del self._open[wid]
            out += _close(pending)
        return out

    def to_dict(self) -> JSON:
        return {wid: [step, at, pending] for wid, (step, at, pending) in self._open.items()}

    def load(self, doc: JSON) -> None:
        self._open = {wid: (int(v[0]), int(v[1]), list(v[2])) for wid, v in doc.items()}


def _transition(step: JSON, next_state: list[float], done: bool) -> Transition:
    return Transition(step["s"], step["a"], float(step["r"]), next_state, done)


def _close(pending: list[JSON]) -> list[Transition]:
    """An episode's remaining steps, the last one terminal."""
    out = [_transition(p, p["next"], False) for p in pending[:-1]]
    if pending:
        last = pending[-1]
        out.append(_transition(last, last["s"], True))
    return out
