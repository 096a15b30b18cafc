"""Tuning call parameters online: spaces, the Bayesian optimiser, a served choice.

:class:`ParameterSpace` declares the parameters (ranges, log scale,
integers) and maps them to the unit cube; :class:`GPOptimizer` plans the
next batch of settings from the evaluations so far (BoTorch: GP surrogate,
EI / UCB / Thompson acquisition, Sobol start, a cost constraint);
:class:`TunedChoice` is what
:class:`~app.policies.parameter_tuner.ParameterTuner` serves for a request.
docs/tuning.md describes the design.
"""

from app.tuning.gp_optimizer import ACQUISITIONS, GPOptimizer, Plan
from app.tuning.space import DEFAULT_SPACE, Dimension, ParameterSpace, SpaceError
from app.tuning.tuned_choice import TunedChoice

__all__ = [
    "ACQUISITIONS",
    "DEFAULT_SPACE",
    "Dimension",
    "GPOptimizer",
    "ParameterSpace",
    "Plan",
    "SpaceError",
    "TunedChoice",
]
