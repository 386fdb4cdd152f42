"""Reflection prediction (rotation geometry, static or scan-varying crystal)."""

from .rotation import (
    PredictionError,
    detector_d_min,
    generate_indices,
    predict_observed,
    predict_rays,
    predict_rotation,
    rotation_angles,
)
from .scan_varying import predict_scan_varying

__all__ = ["PredictionError", "detector_d_min", "generate_indices", "predict_observed",
           "predict_rays", "predict_rotation", "predict_scan_varying", "rotation_angles"]
