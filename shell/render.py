"""Text rendering of models and tables for the shell (tabulate)."""

from __future__ import annotations

import numpy as np
from tabulate import tabulate


def _v(v, fmt="{:.4f}") -> str:
    return "(" + ", ".join(fmt.format(float(x)) for x in np.ravel(v)) + ")"


def experiments_overview(state) -> str:
    """One line per experiment and table: what is in the state."""
    rows = []
    for i, e in enumerate(state.experiments):
        iset = e.imageset
        where = (iset.template or (iset.paths[0] if iset and iset.paths else "")) if iset else ""
        scan = e.scan
        images = f"{scan.image_range[0]}-{scan.image_range[1]}" if scan else "-"
        osc = f"{scan.oscillation[0]:.2f} + {scan.oscillation[1]:.4f}" if scan else "-"
        cryst = ""
        if e.crystal is not None:
            c = e.crystal.unit_cell
            cryst = f"{c.a:.2f} {c.b:.2f} {c.c:.2f} {c.alpha:.1f} {c.beta:.1f} {c.gamma:.1f} " \
                    f"{e.crystal.space_group.hm}"
        rows.append([i, where, images, osc, f"{e.beam.wavelength:.5f}" if e.beam else "-", cryst])
    text = tabulate(rows, headers=["expt", "images", "range", "osc (deg)", "wavelength (A)",
                                   "crystal"], disable_numparse=True) if rows else "no experiments"
    for name, t in state.reflections.items():
        text += f"\n{name}: {len(t)} reflections"
    return text


def panel_table(e, show_all: bool) -> str:
    det, s0 = e.detector, e.beam.s0
    rows = []
    panels = list(enumerate(det)) if show_all or len(det) <= 4 else list(enumerate(det))[:1]
    for i, p in panels:
        bc_mm = p.beam_centre_mm(s0)
        bc_px = p.millimeter_to_pixel(bc_mm[None, :])[0]
        rows.append([i, p.name, f"{p.image_size[0]} x {p.image_size[1]}",
                     f"{p.pixel_size[0]:.4f} x {p.pixel_size[1]:.4f}",
                     f"{p.distance:.2f}", f"{bc_mm[0]:.2f}, {bc_mm[1]:.2f}",
                     f"{bc_px[0]:.2f}, {bc_px[1]:.2f}",
                     f"{p.trusted_range[0]:g}, {p.trusted_range[1]:g}",
                     f"{p.thickness:.3f} {p.material}".strip(),
                     "parallax" if p.has_parallax else "simple"])
    text = tabulate(rows, headers=["panel", "name", "size (px)", "pixel (mm)", "distance (mm)",
                                   "beam centre (mm)", "beam centre (px)", "trusted range",
                                   "sensor (mm)", "px<->mm"], disable_numparse=True)
    if len(panels) < len(det):
        text += f"\n({len(det) - len(panels)} more panels: show show_all=True)"
    return text


def max_resolution(e) -> tuple[float, float]:
    """(at corners, inscribed) d in A, as dials.show reports them."""
    s0 = e.beam.s0
    d_corner = np.inf
    d_inscribed = np.inf
    for p in e.detector:
        d_corner = min(d_corner, float(np.min(p.resolution_at_pixel(s0, p.corners_px()))))
        bc_px = p.millimeter_to_pixel(p.beam_centre_mm(s0)[None, :])[0]
        nx, ny = p.image_size
        edges = np.array([[0, bc_px[1]], [nx, bc_px[1]], [bc_px[0], 0], [bc_px[0], ny]])
        if 0 <= bc_px[0] <= nx and 0 <= bc_px[1] <= ny:
            d_inscribed = min(d_inscribed, float(np.max(p.resolution_at_pixel(s0, edges))))
    return d_corner, d_inscribed


def show_experiment(i: int, e, show_all: bool = False) -> str:
    out = [f"Experiment {i} ({e.identifier or 'no identifier'})"]
    if e.imageset is not None:
        iset = e.imageset
        out.append(f"Images: {iset.template or ', '.join(iset.paths[:3])}"
                   f"{' (' + iset.format + ')' if iset.format else ''}")
    if e.beam is not None:
        b = e.beam
        out.append(f"Beam:\n    wavelength: {b.wavelength:.6f} A\n    sample to source direction: "
                   f"{_v(b.direction)}\n    s0: {_v(b.s0, '{:.6f}')}\n    polarization normal: "
                   f"{_v(b.polarization_normal)}, fraction: {b.polarization_fraction:.3f}")
    if e.detector is not None and e.beam is not None:
        out.append("Detector:\n" + panel_table(e, show_all))
        dc, di = max_resolution(e)
        out.append(f"Max resolution (at corners): {dc:.6f} A\nMax resolution (inscribed):  "
                   f"{di:.6f} A")
    if e.goniometer is not None:
        g = e.goniometer
        lines = [f"Goniometer:\n    rotation axis: {_v(g.rotation_axis)}"]
        if g.is_multi_axis:
            for name, ax, ang in zip(g.names, g.axes, g.angles):
                lines.append(f"    axis {name}: {_v(ax)} at {ang:.3f} deg")
            lines.append(f"    scan axis: {g.names[g.scan_axis] if g.names else g.scan_axis}")
        lines.append(f"    fixed rotation: {_v(g.fixed_rotation)}")
        lines.append(f"    setting rotation: {_v(g.setting_rotation)}")
        out.append("\n".join(lines))
    if e.scan is not None:
        s = e.scan
        r0, r1 = s.oscillation_range
        exp = f"{s.exposure_time[0]:.4f} s" if len(s.exposure_time) else "-"
        out.append(f"Scan:\n    image range: {s.image_range[0]}, {s.image_range[1]}\n"
                   f"    oscillation: {s.oscillation[0]:.4f} + {s.oscillation[1]:.4f} deg/image "
                   f"({r0:.3f} to {r1:.3f} deg)\n    exposure time: {exp}")
    if e.crystal is not None:
        c = e.crystal
        uc = c.unit_cell
        out.append(
            f"Crystal:\n    unit cell: ({uc.a:.4f}, {uc.b:.4f}, {uc.c:.4f}, {uc.alpha:.3f}, "
            f"{uc.beta:.3f}, {uc.gamma:.3f})\n    space group: {c.space_group.hm}\n"
            f"    U matrix: {_v(c.U)}\n    B matrix: {_v(c.B, '{:.6f}')}\n"
            f"    A = UB: {_v(c.A, '{:.6f}')}"
        )
    return "\n".join(out)


def table_summary(name: str, t) -> str:
    from gonio.core.reflection_table import Flags

    parts = [f"{name}: {len(t)} reflections"]
    if len(t) and "flags" in t:
        for flag in ("strong", "indexed", "used_in_refinement", "integrated_sum"):
            n = int(t.get_flags(getattr(Flags, flag)).sum())
            if n:
                parts.append(f"{flag} {n}")
    return ", ".join(parts)
