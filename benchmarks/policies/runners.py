"""One policy of one library on one seed: the select/update loop, with
exactly the library's two calls inside the timers."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.policies.workloads import Bernoulli, Linear


@dataclass
class Trace:
    sel: list[int] = field(default_factory=list)
    upd: list[int] = field(default_factory=list)
    arms: list[int] = field(default_factory=list)
    wall: float = 0.0  # seconds in the loop, timers and environment included
    cpu: float = 0.0  # CPU seconds of this thread in the loop

    def copy(self) -> Trace:
        return Trace(list(self.sel), list(self.upd), list(self.arms), self.wall, self.cpu)


class Runner:
    """One policy of one library on one seed. ``bern``/``linear`` run rounds
    [start, stop) and append to the trace; the timed region of each round is
    exactly the library's select call and its update call."""

    forkable = True

    # A runner implements the workloads its library supports; the roster
    # only pairs it with those.
    def bern(self, env: Bernoulli, means: list[float], start: int, stop: int, tr: Trace) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no Bernoulli workload")

    def linear(self, env: Linear, start: int, stop: int, tr: Trace) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no linear workload")

    def close(self) -> None:
        return None


class Ours(Runner):
    def __init__(self, policy: Any, hybrid: bool = False) -> None:
        self.p = policy
        self.index = {a: i for i, a in enumerate(policy.arms)}
        self.names = policy.arms
        self.hybrid = hybrid

    def bern(self, env: Bernoulli, means: list[float], start: int, stop: int, tr: Trace) -> None:
        pc, select, update, index = time.perf_counter_ns, self.p.select, self.p.update, self.index
        u, s_ns, u_ns, arms = env.u, tr.sel.append, tr.upd.append, tr.arms.append
        w0, c0 = time.perf_counter(), time.thread_time()
        for t in range(start, stop):
            t0 = pc()
            s = select()
            t1 = pc()
            a = index[s.arm]
            r = 1.0 if u[t] < means[a] else 0.0
            t2 = pc()
            update(s.arm, r, propensity=s.propensity)
            t3 = pc()
            s_ns(t1 - t0)
            u_ns(t3 - t2)
            arms(a)
        tr.wall += time.perf_counter() - w0
        tr.cpu += time.thread_time() - c0

    def linear(self, env: Linear, start: int, stop: int, tr: Trace) -> None:
        pc, select, update, index = time.perf_counter_ns, self.p.select, self.p.update, self.index
        X = env.hybrid() if self.hybrid else env.X
        R, s_ns, u_ns, arms = env.rewards, tr.sel.append, tr.upd.append, tr.arms.append
        w0, c0 = time.perf_counter(), time.thread_time()
        for t in range(start, stop):
            x = X[t]
            t0 = pc()
            s = select(x)
            t1 = pc()
            a = index[s.arm]
            r = R[t][a]
            t2 = pc()
            update(s.arm, r, x, propensity=s.propensity)
            t3 = pc()
            s_ns(t1 - t0)
            u_ns(t3 - t2)
            arms(a)
        tr.wall += time.perf_counter() - w0
        tr.cpu += time.thread_time() - c0


class River(Runner):
    def __init__(self, policy: Any, n_arms: int) -> None:
        self.p = policy
        self.ids = list(range(n_arms))

    def bern(self, env: Bernoulli, means: list[float], start: int, stop: int, tr: Trace) -> None:
        pc, pull, update, ids = time.perf_counter_ns, self.p.pull, self.p.update, self.ids
        u, s_ns, u_ns, arms = env.u, tr.sel.append, tr.upd.append, tr.arms.append
        w0, c0 = time.perf_counter(), time.thread_time()
        for t in range(start, stop):
            t0 = pc()
            a = pull(ids)
            t1 = pc()
            r = 1.0 if u[t] < means[a] else 0.0
            t2 = pc()
            update(a, r)
            t3 = pc()
            s_ns(t1 - t0)
            u_ns(t3 - t2)
            arms(a)
        tr.wall += time.perf_counter() - w0
        tr.cpu += time.thread_time() - c0

    def linear(self, env: Linear, start: int, stop: int, tr: Trace) -> None:
        pc, pull, update, ids = time.perf_counter_ns, self.p.pull, self.p.update, self.ids
        D, R = env.dicts(), env.rewards
        s_ns, u_ns, arms = tr.sel.append, tr.upd.append, tr.arms.append
        w0, c0 = time.perf_counter(), time.thread_time()
        for t in range(start, stop):
            x = D[t]
            t0 = pc()
            a = pull(ids, context=x)
            t1 = pc()
            r = R[t][a]
            t2 = pc()
            update(a, x, r)
            t3 = pc()
            s_ns(t1 - t0)
            u_ns(t3 - t2)
            arms(a)
        tr.wall += time.perf_counter() - w0
        tr.cpu += time.thread_time() - c0


class Mab(Runner):
    """MABWiser as an online user calls it: ``fit`` on nothing once, then
    ``predict`` and ``partial_fit`` of one observation per round."""

    def __init__(self, mab: Any, dim: int | None = None) -> None:
        self.m = mab
        if dim is None:
            mab.fit([], [])
        else:
            mab.fit([], [], contexts=np.empty((0, dim)))

    def bern(self, env: Bernoulli, means: list[float], start: int, stop: int, tr: Trace) -> None:
        pc, predict, fit = time.perf_counter_ns, self.m.predict, self.m.partial_fit
        u, s_ns, u_ns, arms = env.u, tr.sel.append, tr.upd.append, tr.arms.append
        w0, c0 = time.perf_counter(), time.thread_time()
        for t in range(start, stop):
            t0 = pc()
            a = predict()
            t1 = pc()
            r = 1 if u[t] < means[a] else 0
            t2 = pc()
            fit([a], [r])
            t3 = pc()
            s_ns(t1 - t0)
            u_ns(t3 - t2)
            arms(a)
        tr.wall += time.perf_counter() - w0
        tr.cpu += time.thread_time() - c0

    def linear(self, env: Linear, start: int, stop: int, tr: Trace) -> None:
        pc, predict, fit = time.perf_counter_ns, self.m.predict, self.m.partial_fit
        X, R = env.X, env.rewards
        s_ns, u_ns, arms = tr.sel.append, tr.upd.append, tr.arms.append
        w0, c0 = time.perf_counter(), time.thread_time()
        for t in range(start, stop):
            x = X[t : t + 1]
            t0 = pc()
            a = predict(x)
            t1 = pc()
            r = R[t][a]
            t2 = pc()
            fit([a], [r], contexts=x)
            t3 = pc()
            s_ns(t1 - t0)
            u_ns(t3 - t2)
            arms(a)
        tr.wall += time.perf_counter() - w0
        tr.cpu += time.thread_time() - c0


class Vw(Runner):
    """Vowpal Wabbit: ``predict`` gives the exploration pmf, the user samples
    it (inside the select timer) and ``learn``s cost = −reward with the
    probability of the chosen action."""

    forkable = False

    def __init__(self, args: str, n_arms: int, seed: int) -> None:
        from vowpalwabbit import Workspace

        self.vw = Workspace(f"{args} --quiet --random_seed {seed}")
        self.rng = random.Random(seed)
        self.n = n_arms

    def _sample(self, pmf: Sequence[float]) -> tuple[int, float]:
        u = self.rng.random() * sum(pmf)
        acc = 0.0
        for i, p in enumerate(pmf):
            acc += p
            if u < acc:
                return i, p
        return len(pmf) - 1, pmf[-1]

    def bern(self, env: Bernoulli, means: list[float], start: int, stop: int, tr: Trace) -> None:
        pc, predict, learn = time.perf_counter_ns, self.vw.predict, self.vw.learn
        sample = self._sample
        u, s_ns, u_ns, arms = env.u, tr.sel.append, tr.upd.append, tr.arms.append
        w0, c0 = time.perf_counter(), time.thread_time()
        for t in range(start, stop):
            t0 = pc()
            a, p = sample(predict("|"))
            t1 = pc()
            label = f"{a + 1}:{-1.0 if u[t] < means[a] else 0.0}:{p} |"
            t2 = pc()
            learn(label)
            t3 = pc()
            s_ns(t1 - t0)
            u_ns(t3 - t2)
            arms(a)
        tr.wall += time.perf_counter() - w0
        tr.cpu += time.thread_time() - c0

    def linear(self, env: Linear, start: int, stop: int, tr: Trace) -> None:
        pc, predict, learn = time.perf_counter_ns, self.vw.predict, self.vw.learn
        sample = self._sample
        S, R = env.vw_shared(), env.rewards
        actions = [f"|a k{i}" for i in range(self.n)]
        s_ns, u_ns, arms = tr.sel.append, tr.upd.append, tr.arms.append
        w0, c0 = time.perf_counter(), time.thread_time()
        for t in range(start, stop):
            ex = [S[t], *actions]
            t0 = pc()
            a, p = sample(predict(ex))
            t1 = pc()
            ex[a + 1] = f"0:{-R[t][a]}:{p} {actions[a]}"
            t2 = pc()
            learn(ex)
            t3 = pc()
            s_ns(t1 - t0)
            u_ns(t3 - t2)
            arms(a)
        tr.wall += time.perf_counter() - w0
        tr.cpu += time.thread_time() - c0

    def close(self) -> None:
        self.vw.finish()
