"""Reflection prediction (rotation geometry, static or scan-varying crystal)."""

from .rotation import (
    PredictionError,
    detector_d_min,
    entering_flags,
    generate_indices,
    lab_rlp,
    nearest_rotation_angle,
    predict_observed,
    predict_rays,
    predict_rotation,
    predict_scan_varying,
    rotation_angles,
    xyz_mm_to_px,
    zeta_factor,
)

__all__ = ["PredictionError", "detector_d_min", "entering_flags", "generate_indices", "lab_rlp",
           "nearest_rotation_angle", "predict_observed", "predict_rays", "predict_rotation",
           "predict_scan_varying", "rotation_angles", "xyz_mm_to_px", "zeta_factor"]
