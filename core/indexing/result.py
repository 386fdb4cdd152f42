"""The outcome of ``index`` as data, and its text rendering (as dials.index prints it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tabulate import tabulate


@dataclass
class IndexResult:
    method: str = "fft3d"
    max_cell: float = 0.0
    max_cell_estimated: bool = True
    grid_d_min: float = 0.0
    n_points: int = 0
    candidate_vectors: list = field(default_factory=list)  # dicts: #, length, vector
    candidate_bases: list = field(default_factory=list)  # dicts from basis.select_basis
    macro_cycles: list = field(default_factory=list)  # dicts: lattices, d_min, n_indexed, steps, rmsds
    rmsds_by_experiment: list = field(default_factory=list)
    indexed_table: list = field(default_factory=list)  # per imageset
    crystals: list = field(default_factory=list)  # per lattice
    lattice_rotations: list = field(default_factory=list)
    percent_indexed: float = 0.0
    rmsds: tuple = (np.nan, np.nan, np.nan)  # X px, Y px, Z images
    refined_parameters: list = field(default_factory=list)  # DIALS-style names, last cycle
    timings: dict = field(default_factory=dict)  # seconds: rlp, max_cell, search, basis, ...
    messages: list = field(default_factory=list)

    def metrics(self) -> dict:
        """The figures a history step records."""
        out = {"percent_indexed": round(self.percent_indexed, 2),
               "rmsd_x_px": round(self.rmsds[0], 4), "rmsd_y_px": round(self.rmsds[1], 4),
               "rmsd_z_images": round(self.rmsds[2], 4), "n_lattices": len(self.crystals)}
        for i, c in enumerate(self.crystals):
            out[f"cell_{i + 1}"] = [round(x, 4) for x in c["unit_cell"]]
            out[f"space_group_{i + 1}"] = c["space_group"]
        return out

    def format_text(self) -> str:
        lines = []
        src = "estimated from spot separations" if self.max_cell_estimated else "given"
        lines.append(f"Found max_cell: {self.max_cell:.1f} Angstrom ({src})")
        if self.grid_d_min:
            lines.append(f"Setting d_min: {self.grid_d_min:.2f}")
            lines.append(f"FFT gridding: ({self.n_points},{self.n_points},{self.n_points})")
        if self.candidate_vectors:
            lines.append("\nCandidate basis vectors:")
            lines.append(tabulate([[v["#"], f"{v['length']:.2f}",
                                    "({:.2f}, {:.2f}, {:.2f})".format(*v["vector"])]
                                   for v in self.candidate_vectors],
                                  headers=["#", "length", "vector"]))
        if self.candidate_bases:
            lines.append("\nCandidate crystal models:")
            lines.append(tabulate([[c["rank"], "{:.2f} {:.2f} {:.2f} {:.1f} {:.1f} {:.1f}".format(
                *c["unit_cell"]), f"{c['volume']:.0f}", c["n_indexed"],
                f"{100 * c['fraction_indexed']:.1f}"] for c in self.candidate_bases],
                headers=["#", "unit_cell", "volume", "n_indexed", "% indexed"]))
        for cyc in self.macro_cycles:
            lines.append(f"\n################################################################\n"
                         f"Macro-cycle {cyc['cycle']}: d_min {cyc['d_min']:.2f}, "
                         f"{cyc['n_indexed']} indexed")
            lines.append("Refinement steps:")
            lines.append(tabulate([[s["Step"], s["Nref"], f"{s['Residual']:.5g}",
                                    f"{s['RMSD_X']:.5g}", f"{s['RMSD_Y']:.5g}",
                                    f"{s['RMSD_Phi']:.5g}"] for s in cyc["steps"]],
                                  headers=["Step", "Nref", "Residual", "RMSD_X\n(px)",
                                           "RMSD_Y\n(px)", "RMSD_Phi\n(deg)"]))
            lines.append(cyc["reason"])
        if self.rmsds_by_experiment:
            lines.append("\nRMSDs by experiment:")
            lines.append(tabulate([[r["Exp id"], r["Nref"], f"{r['RMSD_X']:.5g}",
                                    f"{r['RMSD_Y']:.5g}", f"{r['RMSD_Z']:.5g}"]
                                   for r in self.rmsds_by_experiment],
                                  headers=["Exp\nid", "Nref", "RMSD_X\n(px)", "RMSD_Y\n(px)",
                                           "RMSD_Z\n(images)"]))
        for i, c in enumerate(self.crystals):
            cell, esd = c["unit_cell"], c["unit_cell_esd"]
            par = ", ".join(f"{x:.4f}({e:.4f})" for x, e in zip(cell, esd))
            lines.append(f"\nModel {i + 1}: crystal\n  Unit cell: {par}\n"
                         f"  Space group: {c['space_group']}")
            for name in ("U", "B", "A"):
                m = np.asarray(c[name])
                rows = ["{" + ", ".join(f"{x:.4f}" for x in r) + "}" for r in m]
                lines.append(f"  {name} matrix:  " + ",\n               ".join(rows))
        for r in self.lattice_rotations:
            lines.append(f"\nRotation between lattice {r['from'] + 1} and {r['to'] + 1}: "
                         f"{r['angle_deg']:.2f} deg about ({r['axis'][0]:.3f}, "
                         f"{r['axis'][1]:.3f}, {r['axis'][2]:.3f})")
        if self.indexed_table:
            lines.append("\n" + tabulate([[r["Imageset"], r["# indexed"], r["# unindexed"],
                                           r["% indexed"]] for r in self.indexed_table],
                                         headers=["Imageset", "# indexed", "# unindexed",
                                                  "% indexed"], floatfmt=".1f"))
        lines.extend(self.messages)
        return "\n".join(lines)
