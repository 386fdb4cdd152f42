"""Scaling of integrated intensities (dials.scale): physical model, error model, outliers."""

from gonio.core.scaling.engine import ScalingError, ScalingResult, scale
from gonio.core.scaling.params import ScalingParams

__all__ = ["ScalingError", "ScalingParams", "ScalingResult", "scale"]
