"""What the Thompson-sampling bandits share (private: the registry skips
modules whose name starts with ``_``).

Thompson sampling chooses each arm with its posterior probability of being
the best. Those win probabilities have no closed form for more than two
arms, so they are estimated with ``propensity_samples`` vectorised posterior
draws, or, where a subclass can (Beta posteriors, ``propensity_samples=0``),
integrated numerically; selection is probability matching on them, which
makes the logged propensity exactly the probability the choice was made with.

Estimating them costs ~4 ms per allowed set (20,000 draws of 5 arms),
integrating them ~0.2 ms, either far more than a round (~2 µs). They are
therefore recomputed from a *decision posterior*: a copy of
the posterior taken at the last refresh. A refresh happens once the rewards
since the last one reach ``refresh_fraction`` of the evidence the posterior
holds (and on any other change of state: arms added or removed, an arm
reset, hyperparameters changed, a restore). Early on that is after every
reward; with 10,000 rewards of evidence and the default 0.1 it is every 1,000
— by then one more reward moves a win probability by well under the
estimate's own error. ``refresh_fraction=0`` refreshes after every reward.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from app.policies._bandit_base import BanditPolicy


class PosteriorSampling(BanditPolicy):
    """Thompson sampling over per-arm posteriors held in ``_learned`` arrays.
    Scores (the posterior means) and probabilities are the decision
    posterior's; ``stats()`` reports the current one.

    Subclasses draw from the posterior of given arrays (``_draw``) and say
    how many rewards' worth of evidence the current posterior holds
    (``_evidence``); hyperparameters ``propensity_samples`` and
    ``refresh_fraction`` are their constructors' to accept, and their
    ``__init__`` ends with ``_freeze()`` once the arrays exist.
    """

    propensity_samples: int
    refresh_fraction: float
    # Whether the subclass computes the win probabilities exactly when
    # ``propensity_samples`` is 0 (by overriding ``_probabilities``).
    _computes_exactly: ClassVar[bool] = False
    _frozen: dict[str, list[float]]  # the decision posterior
    _frozen_t: int  # ``_t`` when it was taken
    _stale_at: int  # the ``_t`` at which it is refreshed

    @abc.abstractmethod
    def _draw(
        self,
        posterior: dict[str, list[float]],
        idx: list[int],
        rng: np.random.Generator,
        samples: int,
    ) -> np.ndarray:
        """``samples`` × ``len(idx)`` draws of the arms' means."""

    @abc.abstractmethod
    def _evidence(self) -> float:
        """How many rewards the current posterior effectively holds."""

    def _check_sampling(self) -> None:
        if self._computes_exactly and self.propensity_samples == 0:
            pass
        elif self.propensity_samples < 100:
            exact = " (or 0: computed exactly)" if self._computes_exactly else ""
            raise ValueError(f"propensity_samples must be at least 100{exact}")
        if not 0.0 <= self.refresh_fraction <= 1.0:
            raise ValueError(f"refresh_fraction must be in [0, 1], got {self.refresh_fraction}")

    def _freeze(self) -> None:
        self._frozen = {name: list(getattr(self, name)) for name in self._learned}
        self._frozen_t = self._t
        self._stale_at = self._t + max(1, int(self.refresh_fraction * self._evidence()))

    def _changed(self) -> None:
        super()._changed()
        self._freeze()

    def _after_update(self, index: int) -> None:
        # Scores and probabilities both come from the decision posterior, so
        # until it is refreshed nothing cached is out of date.
        if self._t >= self._stale_at:
            self._changed()

    def refresh(self) -> None:
        """Recompute the win probabilities from the current posterior now."""
        self._changed()

    def _probabilities(self, idx: list[int]) -> list[float]:
        return self._estimate(idx, self.propensity_samples)

    def _estimate(self, idx: list[int], samples: int) -> list[float]:
        """The win probabilities of the arms ``idx`` estimated from ``samples`` draws."""
        if len(idx) == 1:
            return [1.0]
        # A generator seeded by the state keeps the estimate deterministic and
        # independent of how many selections came before.
        rng = np.random.default_rng([self.seed or 0, self._frozen_t % 2**32])
        draws = self._draw(self._frozen, idx, rng, samples)
        wins = np.bincount(draws.argmax(axis=1), minlength=len(idx))
        return (wins / samples).tolist()

    def _extra_state(self) -> dict[str, Any]:
        return {
            "frozen": {name[1:]: list(values) for name, values in self._frozen.items()},
            "frozen_t": self._frozen_t,
            "stale_at": self._stale_at,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        # The base refreshes (nothing is cached yet); the snapshot's decision posterior wins.
        super()._set_state(state)
        self._frozen = {
            f"_{name}": [float(v) for v in values] for name, values in state["frozen"].items()
        }
        self._frozen_t = int(state["frozen_t"])
        self._stale_at = int(state["stale_at"])
