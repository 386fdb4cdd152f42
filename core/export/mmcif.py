"""Unmerged mmCIF (PDBx/mmCIF ``diffrn_refln``) through gemmi.cif.

Categories: entry, audit, software, cell, symmetry, exptl_crystal, diffrn,
diffrn_radiation(_wavelength), diffrn_source, diffrn_detector, diffrn_scan
(one per experiment: images, angles) and diffrn_refln, one row per
observation: diffrn_id, id, index_h/k/l, pdbx_image_id (the batch:
image + batch offset, unique over experiments), pdbx_scan_id (the
experiment), intensity_net, intensity_sigma (the exported intensity),
pdbx_detector_x/y (px), pdbx_scan_angle (deg) and, for scaled data,
pdbx_scale_value (the inverse scale factor that was divided out).
"""

from __future__ import annotations

import time

import gemmi
import numpy as np

from gonio.core.export.prepare import Prepared
from gonio.core.export.text import decimals_for, format_table


def unmerged_mmcif(p: Prepared, rows: np.ndarray | None = None, entry_id: str = "gonio") -> str:
    """The mmCIF text of the prepared reflections (``rows`` selects some, e.g. one experiment)."""
    t = p.table if rows is None else p.table.select(rows)
    I, sigI = p.main_intensity()
    if rows is not None:
        I, sigI = I[rows], sigI[rows]
    doc = gemmi.cif.Document()
    b = doc.add_new_block(entry_id)
    b.set_pair("_entry.id", gemmi.cif.quote(entry_id))
    b.set_mmcif_category("_audit", {"revision_id": ["1"],
                                    "creation_date": [time.strftime("%Y-%m-%d")],
                                    "creation_method": [gemmi.cif.quote("Created by gonio export")]},
                         raw=True)
    b.set_mmcif_category("_software", {"pdbx_ordinal": ["1"], "name": ["gonio"],
                                       "classification": [gemmi.cif.quote("data reduction")]},
                         raw=True)
    a, bb, c, al, be, ga = p.cell.parameters
    b.set_mmcif_category("_cell", {"entry_id": [entry_id], "length_a": [a], "length_b": [bb],
                                   "length_c": [c], "angle_alpha": [al], "angle_beta": [be],
                                   "angle_gamma": [ga]})
    b.set_mmcif_category("_symmetry", {"entry_id": [entry_id],
                                       "space_group_name_H-M": [p.space_group.hm],
                                       "Int_Tables_number": [p.space_group.number]})
    b.set_mmcif_category("_exptl_crystal", {"id": ["1"]}, raw=True)
    b.set_mmcif_category("_diffrn", {"id": ["1"], "crystal_id": ["1"]}, raw=True)
    b.set_mmcif_category("_diffrn_radiation_wavelength", {
        "id": [str(k + 1) for k in range(len(p.wavelengths))],
        "wavelength": [f"{g.weighted_mean:.5f}" for g in p.wavelengths]}, raw=True)
    b.set_mmcif_category("_diffrn_radiation", {"diffrn_id": ["1"], "wavelength_id": ["1"],
                                               "pdbx_diffrn_protocol": [gemmi.cif.quote(
                                                   "SINGLE WAVELENGTH")]}, raw=True)
    b.set_mmcif_category("_diffrn_source", {"diffrn_id": ["1"], "pdbx_wavelength_list": [
        ",".join(f"{g.weighted_mean:.5f}" for g in p.wavelengths)]}, raw=True)
    b.set_mmcif_category("_diffrn_detector", {"diffrn_id": ["1"], "pdbx_collection_date": ["?"]},
                         raw=True)
    scans = {"id": [], "image_id_begin": [], "image_id_end": [], "scan_angle_begin": [],
             "scan_angle_end": [], "frames": []}
    for i, e in enumerate(p.experiments):
        lo, hi = p.image_ranges[i] if p.image_ranges[i] != (0, 0) else (1, 1)
        start, end = e.scan.oscillation_range if e.scan is not None else (0.0, 0.0)
        scans["id"].append(str(i + 1))
        scans["image_id_begin"].append(str(lo + p.offsets[i]))
        scans["image_id_end"].append(str(hi + p.offsets[i]))
        scans["scan_angle_begin"].append(f"{start:.3f}")
        scans["scan_angle_end"].append(f"{end:.3f}")
        scans["frames"].append(str(hi - lo + 1))
    b.set_mmcif_category("_diffrn_scan", scans, raw=True)
    xyz = t["xyzobs.px.value"] if "xyzobs.px.value" in t else t["xyzcal.px"]
    names = ["diffrn_id", "id", "index_h", "index_k", "index_l", "pdbx_image_id", "pdbx_scan_id",
             "intensity_net", "intensity_sigma", "pdbx_detector_x", "pdbx_detector_y",
             "pdbx_scan_angle"]
    dec = decimals_for(np.concatenate([I, sigI]))
    cols = [np.ones(len(t)), np.arange(1, len(t) + 1), t["miller_index"][:, 0],
            t["miller_index"][:, 1], t["miller_index"][:, 2], t["batch"], t["expt"] + 1, I, sigI,
            xyz[:, 0], xyz[:, 1], t["ROT"]]
    decimals = [0, 0, 0, 0, 0, 0, 0, dec, dec, 2, 2, 3]
    if p.scaled:
        names.append("pdbx_scale_value")
        cols.append(t["inverse_scale_factor"])
        decimals.append(decimals_for(t["inverse_scale_factor"]))
    # the header categories through gemmi.cif; the long loop written directly (same syntax)
    loop = "loop_\n" + "".join(f"_diffrn_refln.{c}\n" for c in names)
    return doc.as_string() + "\n" + loop + format_table(cols, decimals)
