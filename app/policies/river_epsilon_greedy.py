"""ε-greedy over one river online regressor per arm."""

from __future__ import annotations

import base64
import copy
import io
import pickle
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
from river import linear_model, preprocessing, tree

from app.policies._contextual import ValuePolicy
from app.policies.base import SnapshotError


class Regressor(Protocol):
    """What the policy needs of a river regressor (or pipeline ending in one)."""

    def predict_one(self, x: dict[Any, Any]) -> Any: ...

    def learn_one(self, x: dict[Any, Any], y: Any) -> Any: ...


# The regressors a policy can be configured with, by name. A whitelist keeps
# the configuration plain data and bounds what a snapshot may contain.
MODELS: dict[str, Callable[[], Regressor]] = {
    "linear_regression": lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(),
    "bayesian_linear_regression": lambda: linear_model.BayesianLinearRegression(),
    "hoeffding_tree": lambda: tree.HoeffdingTreeRegressor(grace_period=100),
}


class _RiverUnpickler(pickle.Unpickler):
    """Loads river models and nothing else: a snapshot names only river's own
    classes and functions and a few containers, never an arbitrary callable."""

    _ALLOWED = {
        "builtins": {"bool", "complex", "dict", "float", "frozenset", "int", "list", "set"}
        | {"str", "tuple"},
        "collections": {"Counter", "OrderedDict", "defaultdict", "deque"},
        "copyreg": {"_reconstructor"},
        "numpy": {"dtype", "ndarray"},
        "numpy._core.multiarray": {"_reconstruct", "scalar"},
        "numpy.core.multiarray": {"_reconstruct", "scalar"},
    }

    def find_class(self, module: str, name: str) -> Any:
        if name in self._ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "river" or module.startswith("river."):
            found = super().find_class(module, name)
            # Only what river defines, not what a river module imported.
            if str(getattr(found, "__module__", "")).startswith("river"):
                return found
        raise SnapshotError(f"a river model snapshot may not hold {module}.{name}")


def _dump(model: Regressor) -> str:
    # Pickle twice: unpickling loses the sharing of equal strings between
    # objects, so only a round-tripped model pickles to stable bytes (and a
    # restored policy must snapshot to the bytes it was restored from).
    once = pickle.dumps(model, protocol=4)
    return base64.b64encode(pickle.dumps(pickle.loads(once), protocol=4)).decode("ascii")


def _load(text: str) -> Regressor:
    return _RiverUnpickler(io.BytesIO(base64.b64decode(text))).load()


class RiverEpsilonGreedy(ValuePolicy):
    """ε-greedy over per-arm river regressors of the reward on the context.

    Each arm has its own online regressor (``model`` names one of
    :data:`MODELS`; by default a standard scaler feeding a linear
    regression trained by SGD). The greedy arm is the one with the highest
    predicted reward; with probability ``epsilon`` an allowed arm is chosen
    uniformly instead, so each arm has ``epsilon / K`` plus ``1 - epsilon`` on
    the greedy one (shared evenly when predictions tie exactly, as they do
    before any update).

    Snapshots hold each regressor pickled, in base64, inside the JSON: river
    models have no other serialised form and a pickle restores them exactly.
    Only a restricted unpickler reads them (river's own classes and plain
    containers), so a snapshot cannot name arbitrary code to run; they are
    still meant to come from this service's own snapshot store.

    >>> import numpy as np
    >>> policy = RiverEpsilonGreedy(["a", "b"], seed=0, context_dim=2, epsilon=0.1)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(300):
    ...     x = np.array([1.0, rng.normal()])
    ...     policy.update("a", 0.5 + 0.3 * x[1], x)
    ...     policy.update("b", 0.5 - 0.3 * x[1], x)
    >>> policy.probabilities(None, np.array([1.0, 2.0])).round(3).tolist()
    [0.95, 0.05]
    >>> policy.select(np.array([1.0, -2.0]), explore=False).arm
    'b'
    """

    algorithm = "river_epsilon_greedy"
    example_params: ClassVar[dict[str, Any]] = {"context_dim": 3, "epsilon": 0.2}

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = 8,
        epsilon: float = 0.1,
        model: str = "linear_regression",
    ) -> None:
        super().__init__(arms, seed)
        self.context_dim = context_dim
        self.epsilon = epsilon
        self.model = model
        self._check_params()
        self._model_name = model
        self._context_dim = context_dim  # what the regressors were trained on
        self._models = [MODELS[model]() for _ in self._arms]
        self._pulls = np.zeros(len(self._arms))
        self._reward_sum = np.zeros(len(self._arms))

    def _check_params(self) -> None:
        self._check_context_dim()
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")

    def _params_changed(self) -> None:
        self._keep_fixed({"context_dim": self._context_dim})
        self._check_params()
        if self.model != self._model_name:
            # Another kind of regressor learns from scratch; the counts stay.
            self._model_name = self.model
            self._models = [MODELS[self.model]() for _ in self._arms]
        self._cache = None

    # -- arms ------------------------------------------------------------------
    def _grow(self, prior_from: int | None) -> None:
        new = (
            copy.deepcopy(self._models[prior_from])
            if prior_from is not None
            else MODELS[self.model]()
        )
        self._models.append(new)
        self._pulls = np.append(self._pulls, 0.0)
        self._reward_sum = np.append(self._reward_sum, 0.0)
        self._cache = None

    def _shrink(self, index: int) -> None:
        del self._models[index]
        self._pulls = np.delete(self._pulls, index)
        self._reward_sum = np.delete(self._reward_sum, index)
        self._cache = None

    # -- decisions -------------------------------------------------------------
    def _compute_values(self, x: np.ndarray) -> np.ndarray:
        """Every arm's predicted reward (cached for the last context)."""
        features = dict(enumerate(x.tolist()))
        return np.array([float(m.predict_one(features) or 0.0) for m in self._models])

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        s = self.scores(allowed, context)
        tied = s == s.max()
        return self.epsilon / len(s) + (1.0 - self.epsilon) * tied / np.count_nonzero(tied)

    # -- learning --------------------------------------------------------------
    def _update(self, index: int, reward: float, context: Any) -> None:
        x = self._context(context)
        self._models[index].learn_one(dict(enumerate(x.tolist())), reward)
        self._pulls[index] += 1
        self._reward_sum[index] += reward
        self._cache = None

    # -- persistence ---------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "models": [_dump(m) for m in self._models],
            "pulls": self._pulls,
            "reward_sum": self._reward_sum,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        models = state["models"]
        if len(models) != len(self._arms):
            raise SnapshotError(
                f"{self.algorithm} snapshot holds {len(models)} models for {len(self._arms)} arms"
            )
        try:
            self._models = [_load(text) for text in models]
        except SnapshotError:
            raise
        except Exception as exc:
            raise SnapshotError(
                f"{self.algorithm} snapshot holds an unreadable model: {exc}"
            ) from None
        self._pulls = np.asarray(state["pulls"], dtype=float)
        self._reward_sum = np.asarray(state["reward_sum"], dtype=float)
        self._cache = None
