"""Summaries of refined models for reports: the scan-varying cell and orientation."""

from __future__ import annotations

import numpy as np

from ..models.crystal import Crystal, cell_from_real_vectors


def scan_point_cells(crystal: Crystal) -> np.ndarray | None:
    """Cell parameters (n_images + 1, 6) (A, deg) at every scan point, or None."""
    A_sp = crystal.A_at_scan_points
    if A_sp is None:
        return None
    return np.array([cell_from_real_vectors(r).parameters for r in np.linalg.inv(A_sp)])


def scan_varying_cell_range(crystal: Crystal):
    """(minimum, maximum) of a, b, c, alpha, beta, gamma over the scan points, or None."""
    cells = scan_point_cells(crystal)
    if cells is None:
        return None
    return cells.min(axis=0), cells.max(axis=0)


def scan_point_rotation_deg(crystal: Crystal) -> np.ndarray | None:
    """Orientation change (n_images + 1, 3) at each scan point relative to the static U, as
    angles (deg) of the small rotation U(z) U^T about lab x, y, z (phi = 0 frame), the
    quantities dials.plot_scan_varying_model plots as Phi1..3."""
    A_sp = crystal.A_at_scan_points
    if A_sp is None:
        return None
    U = crystal.U
    out = []
    for A in A_sp:
        Uz = Crystal(A=A).U
        R = Uz @ U.T
        w = 0.5 * np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
        out.append(np.degrees(w))
    return np.array(out)


def plot_scan_varying_model(experiment, title: str = "") -> bytes:
    """PNG (bytes) of the scan-varying crystal against the image number, as
    dials.plot_scan_varying_model draws it: the cell lengths and angles and the orientation
    change (Phi1..3 about lab x, y, z, deg) at every scan point. Reusable by reports."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    crystal, scan = experiment.crystal, experiment.scan
    cells = scan_point_cells(crystal)
    if cells is None:
        raise ValueError("the crystal has no scan-varying model (A_at_scan_points)")
    rot = scan_point_rotation_deg(crystal)
    image = scan.image_range[0] - 1 + np.arange(len(cells))  # image boundaries
    fig = Figure(figsize=(8, 9), dpi=100)
    axes = fig.subplots(3, 1, sharex=True)
    for k, name in enumerate("abc"):
        axes[0].plot(image, cells[:, k] - cells[:, k].mean(), label=f"{name} - {cells[:, k].mean():.3f} A")
    axes[0].set_ylabel("cell length - mean (A)")
    for k, name in enumerate(("alpha", "beta", "gamma")):
        axes[1].plot(image, cells[:, 3 + k], label=name)
    axes[1].set_ylabel("cell angle (deg)")
    for k in range(3):
        axes[2].plot(image, rot[:, k], label=f"Phi{k + 1}")
    axes[2].set_ylabel("orientation change (deg)")
    axes[2].set_xlabel("image")
    for ax in axes:
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
