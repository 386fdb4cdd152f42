"""Parameterisations of beam, crystal, detector and goniometer for refinement.

Names, units and sense follow DIALS (Waterman et al. 2016, Acta Cryst. D72,
558): beam Mu1, Mu2 (mrad) and wavelength (A); crystal orientation Phi1,
Phi2, Phi3 (mrad, rotations about lab x, y, z applied to U) and unit cell
(reciprocal metric, see :mod:`.cell`); detector Dist, Shift1, Shift2 (mm)
and Tau1, Tau2, Tau3 (mrad) as a rigid body about the detector centre;
goniometer GAMMA1, GAMMA2 (mrad): rotations of the lab-frame spindle axis
within / out of the plane containing the beam and the axis. Every
parameter is zero (or the initial value) for the starting model, and each
``compose(p)`` returns the model quantity and its derivative for every
parameter.
"""

from __future__ import annotations

import numpy as np

from ..models.beam import Beam
from ..models.crystal import Crystal
from ..models.detector import Detector
from ..models.goniometer import Goniometer
from .cell import UnitCellParameterisation
from .rotations import compose_rotations


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _perpendicular(v) -> np.ndarray:
    trial = np.array([1.0, 0.0, 0.0]) if abs(v[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    return _unit(np.cross(v, trial))


class BeamParameterisation:
    """s0 = R(q2, Mu2) R(q1, Mu1) s0_unit / wavelength.

    q1 = unit(s0 x spindle) turns the beam within the plane containing the
    spindle (Mu1), q2 = unit(s0 x q1) out of it (Mu2).
    """

    def __init__(self, beam: Beam, spindle):
        self.beam = beam
        self.s0u = _unit(beam.s0)
        c = np.cross(self.s0u, spindle) if spindle is not None else np.zeros(3)
        self.q1 = _unit(c) if np.linalg.norm(c) > 1e-6 else _perpendicular(self.s0u)
        self.q2 = _unit(np.cross(self.s0u, self.q1))
        self.names = ["Mu1", "Mu2", "Wavelength"]
        self.p0 = np.array([0.0, 0.0, beam.wavelength])

    def fixed_mask(self, fix: list) -> np.ndarray:
        m = np.zeros(3, bool)
        if "all" in fix:
            m[:] = True
        # as DIALS: "in_spindle_plane" keeps the beam in its initial plane with the spindle
        # (fixes the rotation out of it, Mu2: with the detector and crystal free that one
        # is a gauge freedom about the spindle); "out_spindle_plane" fixes Mu1
        m[0] |= "out_spindle_plane" in fix
        m[1] |= "in_spindle_plane" in fix
        m[2] |= "wavelength" in fix
        return m

    def compose(self, p):
        R, dR = compose_rotations([self.q1, self.q2], p[:2])
        wl = p[2]
        s0 = R @ self.s0u / wl
        return s0, [dR[0] @ self.s0u / wl, dR[1] @ self.s0u / wl, -s0 / wl]

    def model(self, p) -> Beam:
        s0, _ = self.compose(p)
        return self.beam.replace(direction=-_unit(s0), wavelength=float(p[2]))


class GoniometerParameterisation:
    """Lab-frame spindle e = R(m, GAMMA2) R(n, GAMMA1) e0.

    n = unit(e0 x s0) is normal to the beam-spindle plane (GAMMA1 turns the
    axis within that plane), m = unit(n x e0) turns it out of it (GAMMA2).
    """

    def __init__(self, gonio: Goniometer, s0):
        self.gonio = gonio
        self.e0 = gonio.rotation_axis
        c = np.cross(self.e0, s0)
        self.n = _unit(c) if np.linalg.norm(c) > 1e-6 else _perpendicular(self.e0)
        self.m = _unit(np.cross(self.n, self.e0))
        self.names = ["GAMMA1", "GAMMA2"]
        self.p0 = np.zeros(2)

    def fixed_mask(self, fix: list) -> np.ndarray:
        m = np.zeros(2, bool)
        if "all" in fix:
            m[:] = True
        # as DIALS: "in_beam_plane" keeps the axis in its initial plane with the beam
        # (fixes GAMMA2); "out_beam_plane" fixes GAMMA1
        m[0] |= "out_beam_plane" in fix
        m[1] |= "in_beam_plane" in fix
        return m

    def compose(self, p):
        R, dR = compose_rotations([self.n, self.m], p)
        return R @ self.e0, [d @ self.e0 for d in dR]

    def model(self, p) -> Goniometer:
        e, _ = self.compose(p)
        return self.gonio.with_rotation_axis(e)


class CrystalParameterisation:
    """A = U B with U = R(z, Phi3) R(y, Phi2) R(x, Phi1) U0 and B from the metric G*."""

    def __init__(self, crystal: Crystal):
        self.crystal = crystal
        self.cell = UnitCellParameterisation(crystal.B, crystal.space_group)
        B0 = self.cell.compose(np.zeros(len(self.cell)))[0]
        U = crystal.A @ np.linalg.inv(B0)
        u, _, vt = np.linalg.svd(U)  # nearest rotation, after symmetrising the metric
        self.U0 = u @ vt
        self.names = ["Phi1", "Phi2", "Phi3"] + [f"g_param_{k}" for k in range(len(self.cell))]
        self.p0 = np.zeros(3 + len(self.cell))

    def fixed_mask(self, fix: list) -> np.ndarray:
        m = np.zeros(len(self.p0), bool)
        if "all" in fix:
            m[:] = True
        if "orientation" in fix:
            m[:3] = True
        if "cell" in fix:
            m[3:] = True
        return m

    def compose(self, p):
        """A and dA/dp for each parameter (crystal frame)."""
        R, dR = compose_rotations(np.eye(3), p[:3])
        B, dB = self.cell.compose(p[3:])
        U = R @ self.U0
        return U @ B, [d @ self.U0 @ B for d in dR] + [U @ d for d in dB]

    def model(self, p) -> Crystal:
        A, _ = self.compose(p)
        return self.crystal.replace(A=A, A_at_scan_points=None)


class DetectorParameterisation:
    """All panels moved as one rigid body about the detector centre.

    With n the normal (away from the sample), d1 the fast axis of panel 0
    and d2 = n x d1 (initial orientation): every panel vector is rotated
    about the centre by R = R(d2, Tau3) R(d1, Tau2) R(n, Tau1), the centre
    is shifted in the initial plane by Shift1 d1 + Shift2 d2 and then slid
    along the new normal n' = R n until the plane lies at Dist from the lab
    origin: c = c_s + (Dist - c_s . n') n'. So Dist is the distance along the
    detector normal (the panel's directed distance, DIALS's Dist) whatever the
    tilts do: fixing it (``detector.fix=distance``) fixes the distance that is
    reported, and tilts cannot trade against it.
    """

    def __init__(self, detector: Detector):
        self.detector = detector
        p0 = detector[0]
        n = p0.normal
        centres = [p.lab_coord(np.array(p.image_size_mm) / 2)[0] for p in detector]
        self.centre = np.mean(centres, axis=0)
        if self.centre @ n < 0:
            n = -n
        self.n = n
        self.d1 = _unit(p0.fast_axis - (p0.fast_axis @ n) * n)
        self.d2 = np.cross(n, self.d1)
        self.names = ["Dist", "Shift1", "Shift2", "Tau1", "Tau2", "Tau3"]
        self.p0 = np.zeros(6)
        self.D0 = [p.d_matrix for p in detector]

    def fixed_mask(self, fix: list, fix_list: list) -> np.ndarray:
        m = np.zeros(6, bool)
        if "all" in fix:
            m[:] = True
        if "position" in fix:
            m[:3] = True
        if "orientation" in fix:
            m[3:] = True
        if "distance" in fix:
            m[0] = True
        for name in fix_list:
            for i, pn in enumerate(self.names):
                if pn.lower().startswith(str(name).lower()):
                    m[i] = True
        return m

    def compose(self, p):
        """D matrices (n_panels, 3, 3) and dD/dp (6, n_panels, 3, 3)."""
        R, dR = compose_rotations([self.n, self.d1, self.d2], p[3:])
        n = R @ self.n
        dist = self.centre @ self.n + p[0]
        c_s = self.centre + p[1] * self.d1 + p[2] * self.d2
        gap = dist - c_s @ n
        c = c_s + gap * n
        dc = [n, self.d1 - (self.d1 @ n) * n, self.d2 - (self.d2 @ n) * n]
        for k in range(3):
            dn = dR[k] @ self.n
            dc.append(-(c_s @ dn) * n + gap * dn)
        Ds, dDs = [], []
        for D0 in self.D0:
            rel = np.column_stack([D0[:, 0], D0[:, 1], D0[:, 2] - self.centre])
            D = R @ rel
            D[:, 2] += c
            Ds.append(D)
            d = np.zeros((6, 3, 3))
            for k in range(3):
                d[3 + k] = dR[k] @ rel
            for k in range(6):
                d[k, :, 2] += dc[k]
            dDs.append(d)
        return np.array(Ds), np.transpose(np.array(dDs), (1, 0, 2, 3))

    def model(self, p) -> Detector:
        Ds, _ = self.compose(p)
        panels = [pan.replace(fast_axis=D[:, 0], slow_axis=D[:, 1], origin=D[:, 2])
                  for pan, D in zip(self.detector, Ds)]
        return self.detector.replace(panels=panels)
