"""Point-only baselines of Table 2: PointNet, PointNet++ (SSG) and Point-BERT regressors.

Each predicts ``bbox3d`` (6,) and the unordered ``kpts3d`` (M, 3) from the point cloud alone
and is scored by the VLM's metrics (``pointvl.baselines.experiment``).
"""

from pointvl.baselines.regressor import (
    BASELINES,
    KEYPOINT_LOSSES,
    PointRegressor,
    build_baseline,
    chamfer_loss,
    hungarian_loss,
    regression_loss,
)
from pointvl.baselines.train import RegressionData, fit, predict

__all__ = [
    "BASELINES",
    "KEYPOINT_LOSSES",
    "PointRegressor",
    "RegressionData",
    "build_baseline",
    "chamfer_loss",
    "fit",
    "hungarian_loss",
    "predict",
    "regression_loss",
]
