"""Geometry of observations: pixels to lab frame to reciprocal space."""
