"""Synthetic scaled reflections with known truth, for the merge and export tests.

True intensities follow Wilson statistics (acentric: exponential, centric:
chi-square with one degree of freedom) with <I/epsilon> = 10000 exp(-B/(2 d^2));
each observation is a random symmetry equivalent (and Friedel mate) of a
unique reflection, with Gaussian noise of a chosen I/sigma, an inverse scale
factor g (intensity.scale.value = g * I_obs) and sweep geometry (frame
coordinates, batches) for several sweeps of one crystal.
"""

from __future__ import annotations

import gemmi
import numpy as np

from gonio.core.models.beam import Beam
from gonio.core.models.crystal import Crystal
from gonio.core.models.detector import Detector, Panel
from gonio.core.models.experiment import Experiment, ExperimentList
from gonio.core.models.goniometer import Goniometer
from gonio.core.models.rotation import axis_angle_matrix
from gonio.core.models.scan import Scan
from gonio.core.reflection_table import Flags, ReflectionTable


def unique_asu(space_group: str, cell: gemmi.UnitCell, d_min: float) -> np.ndarray:
    """ASU Miller indices (not systematically absent) to d_min."""
    from gonio.core.merging import map_to_asu

    sg = gemmi.SpaceGroup(space_group)
    hmax = [int(cell.parameters[i] / d_min) + 1 for i in range(3)]
    h, k, l = np.meshgrid(*[np.arange(-m, m + 1) for m in hmax], indexing="ij")
    hkl = np.column_stack([h.ravel(), k.ravel(), l.ravel()]).astype(np.int32)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    hkl = hkl[cell.calculate_d_array(hkl) >= d_min]
    hkl = np.unique(map_to_asu(hkl, sg).hkl_asu, axis=0)
    hkl = hkl[~sg.operations().systematic_absences(hkl)]
    return hkl


def true_intensities(hkl, space_group, cell, rng, B=20.0, scale=10000.0):
    ops = gemmi.SpaceGroup(space_group).operations()
    eps = ops.epsilon_factor_without_centering_array(hkl).astype(float)
    centric = ops.centric_flag_array(hkl).astype(bool)
    d = cell.calculate_d_array(hkl)
    Sigma = eps * scale * np.exp(-B / (2 * d * d))
    I = np.where(centric, Sigma * rng.standard_normal(len(hkl)) ** 2,
                 rng.exponential(1.0, len(hkl)) * Sigma)
    return I, d, eps, centric


def experiments(n_sweeps=2, space_group="P 21 21 21", cell=(40, 50, 60, 90, 90, 90),
                n_images=50, scan_varying=False, seed=0) -> ExperimentList:
    """Sweeps of one crystal, each with its own start angle and orientation."""
    rng = np.random.default_rng(seed)
    uc = gemmi.UnitCell(*cell)
    out = ExperimentList()
    beam = Beam(direction=[0, 0, 1], wavelength=0.9795)
    panel = Panel(fast_axis=[1, 0, 0], slow_axis=[0, -1, 0], origin=[-100, 100, -200],
                  image_size=(2000, 2000), pixel_size=(0.1, 0.1))
    for i in range(n_sweeps):
        U = axis_angle_matrix(rng.normal(size=3), rng.uniform(0, np.pi))
        cr = Crystal.from_cell_and_U(uc, U, space_group)
        if scan_varying:
            A = [axis_angle_matrix([0, 0, 1], 1e-3 * k) @ cr.A for k in range(n_images + 1)]
            cr = cr.replace(A_at_scan_points=np.array(A))
        out.append(Experiment(beam=beam, detector=Detector([panel]), goniometer=Goniometer(),
                              scan=Scan((1, n_images), (10.0 * i, 0.5)), crystal=cr,
                              identifier=f"sweep{i}"))
    return out


def scaled_table(expts: ExperimentList, hkl_unique, I_true, rng, n_obs=4, i_over_sigma=None,
                 sigma_floor=1.0) -> ReflectionTable:
    """Observations: each unique reflection ``n_obs`` times on random sweeps and images."""
    sg = expts[0].crystal.space_group
    ops = sg.operations()
    n_u = len(hkl_unique)
    idx = np.repeat(np.arange(n_u), n_obs)
    n = len(idx)
    rot = np.array([op.rot for op in ops.sym_ops]) // gemmi.Op.DEN
    r = rng.integers(0, len(rot), n)
    sign = rng.choice([-1, 1], n)
    hkl = np.einsum("ni,nij->nj", hkl_unique[idx], rot[r]) * sign[:, None]
    I = I_true[idx]
    if i_over_sigma is None:
        sig = np.sqrt(I + sigma_floor**2 + (0.02 * I) ** 2)
    else:
        sig = np.full(n, float(np.mean(I_true)) / i_over_sigma)
    I_obs = I + rng.normal(size=n) * sig
    g = rng.uniform(0.5, 2.0, n)
    expt = rng.integers(0, len(expts), n)
    nimg = np.array([e.scan.num_images for e in expts])
    z = rng.uniform(0, 1, n) * nimg[expt]
    flags = np.full(n, Flags.integrated_sum | Flags.integrated_prf | Flags.scaled, np.uint64)
    t = ReflectionTable({
        "id": expt, "miller_index": hkl.astype(np.int32),
        "intensity.scale.value": g * I_obs, "intensity.scale.variance": (g * sig) ** 2,
        "inverse_scale_factor": g, "inverse_scale_factor_variance": (0.01 * g) ** 2,
        "intensity.sum.value": I_obs / 0.8, "intensity.sum.variance": (sig / 0.8) ** 2,
        "intensity.prf.value": I_obs / 0.8, "intensity.prf.variance": (sig / 0.8) ** 2,
        "lp": np.full(n, 0.8), "qe": np.ones(n), "partiality": np.ones(n),
        "partial_id": np.arange(n, dtype=float),
        "xyzobs.px.value": np.column_stack([rng.uniform(0, 2000, n), rng.uniform(0, 2000, n), z]),
        "xyzcal.px": np.column_stack([rng.uniform(0, 2000, n), rng.uniform(0, 2000, n), z]),
        "flags": flags,
    }, {i: e.identifier for i, e in enumerate(expts)})
    return t


def dataset(n_unique_dmin=2.0, n_sweeps=2, space_group="P 21 21 21", cell=(40, 50, 60, 90, 90, 90),
            seed=1, n_obs=4, i_over_sigma=None, scan_varying=False):
    """(experiments, table, truth dict) for a synthetic scaled data set."""
    rng = np.random.default_rng(seed)
    expts = experiments(n_sweeps, space_group, cell, scan_varying=scan_varying, seed=seed)
    uc = gemmi.UnitCell(*cell)
    hkl = unique_asu(space_group, uc, n_unique_dmin)
    I, d, eps, centric = true_intensities(hkl, space_group, uc, rng)
    t = scaled_table(expts, hkl, I, rng, n_obs=n_obs, i_over_sigma=i_over_sigma)
    return expts, t, {"hkl": hkl, "I": I, "d": d, "eps": eps, "centric": centric}


def record_state(session, experiments, tables: dict, command: str = "scale") -> int:
    """Commit a state with these experiments and named tables as a new step (test set-up)."""
    from gonio.store.state import State, encode_changes

    new = State(experiments, dict(tables))
    commit = session.history.record_step(
        command=command, line=command, params={}, artifacts=encode_changes(session.state, new),
        log="", metrics={}, duration_s=0.0, software_version="test")
    return commit.step
