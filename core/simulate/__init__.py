"""Simulated rotation sweeps with exact ground truth (images in real formats + truth)."""

from .params import PRESETS, SimulationParams, SimulationParamsError
from .simulate import SimulationResult, simulate

__all__ = ["PRESETS", "SimulationParams", "SimulationParamsError", "SimulationResult",
           "simulate"]
