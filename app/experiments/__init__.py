"""Statistics of experiments and rollouts: pure, incremental and JSON-able.

Moments keeps one metric's count, mean and variance for one variant, fed
per batch of outcomes. Comparison puts an anytime-valid confidence sequence
around a treatment's difference from the control, for a decision (better,
worse, inconclusive) and a non-inferiority gate; Experiment runs several
variants and metrics (a primary reward, cost and latency guardrails) with a
Bonferroni correction. ``plan`` gives the sample size before the start;
TrafficSplit assigns keys to variants by a sticky hash. The method is in
docs/experiments.md.
"""

from app.experiments.comparison import Comparison
from app.experiments.comparison_result import ComparisonResult, Decision, Gate
from app.experiments.confidence_sequence import (
    half_width,
    mixture_p_value,
    mixture_rho,
    width_multiplier,
)
from app.experiments.experiment import Experiment
from app.experiments.metric import REWARD, Metric
from app.experiments.moments import Moments
from app.experiments.plan import Plan, plan
from app.experiments.traffic_split import TrafficSplit, bucket

__all__ = [
    "REWARD",
    "Comparison",
    "ComparisonResult",
    "Decision",
    "Experiment",
    "Gate",
    "Metric",
    "Moments",
    "Plan",
    "TrafficSplit",
    "bucket",
    "half_width",
    "mixture_p_value",
    "mixture_rho",
    "plan",
    "width_multiplier",
]
