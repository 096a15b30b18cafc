"""Drift and anomaly detection on outcome streams, alert rules, and how
policies adapt to a drift.

Drift detectors (river's interface: ``update(x)`` then ``drift_detected``):
river's ADWIN, Page-Hinkley and KSWIN, used from the library, and CUSUM
(two-sided, self-starting). Input drift: InputDrift (PSI and KS per feature
against a reference window). Anomaly detectors (``score_one``/``learn_one``,
``update``): ZScore, IQR, MAD, Mahalanobis, and river's HalfSpaceTrees
behind the same interface.

DriftMonitor keeps one detector per (policy, arm, signal) and turns outcomes
into drift/anomaly events; AlertEngine turns rules from config/drift.yaml
into alert events; ``adapt`` changes a policy after a drift on one arm;
DriftHold keeps a drift back until the learner has processed the outcomes
it was detected on. DriftConfig reads config/drift.yaml.
"""

from app.drift.adaptation import Adaptation, adapt
from app.drift.alerts import AlertEngine
from app.drift.anomaly_detector import AnomalyDetector
from app.drift.config import (
    AdaptationSpec,
    AlertRule,
    DetectorSpec,
    DriftConfig,
    DriftConfigError,
)
from app.drift.cusum import CUSUM
from app.drift.drift_hold import DriftHold
from app.drift.half_space_trees import HalfSpaceTrees
from app.drift.input_drift import FeatureDrift, InputDrift, psi
from app.drift.iqr import IQR
from app.drift.mad import MAD
from app.drift.mahalanobis import Mahalanobis
from app.drift.monitor import DriftMonitor, signal_values
from app.drift.z_score import ZScore

__all__ = [
    "CUSUM",
    "IQR",
    "MAD",
    "Adaptation",
    "AdaptationSpec",
    "AlertEngine",
    "AlertRule",
    "AnomalyDetector",
    "DetectorSpec",
    "DriftConfig",
    "DriftConfigError",
    "DriftHold",
    "DriftMonitor",
    "FeatureDrift",
    "HalfSpaceTrees",
    "InputDrift",
    "Mahalanobis",
    "ZScore",
    "adapt",
    "psi",
    "signal_values",
]
