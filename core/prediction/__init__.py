"""Reflection prediction (rotation geometry)."""

from .rotation import (
    generate_indices,
    predict_observed,
    predict_rays,
    predict_rotation,
    rotation_angles,
)

__all__ = ["generate_indices", "predict_observed", "predict_rays", "predict_rotation",
           "rotation_angles"]
