"""SHELX HKLF 4 reflection file and the matching .ins stub (dials.export format=shelx).

HKLF 4: fixed format (3I4, 2F8.2, I4) h k l Fo^2 sigma(Fo^2) batch, ended by
a line of zeros. F8.2 holds -9999.99 .. 99999.99, so, as DIALS does
(dials/util/export_shelx.py with cctbx export_as_shelx_hklf), the
intensities and sigmas are multiplied by one factor
``min(scale_range[0] / min, scale_range[1] / max)`` over both columns so
that they span ``scale_range`` (default -9999, 9999): maximal precision and
no overflow; SHELXL refines the overall scale anyway. Every reflection gets
batch 1 (one scale factor).

The .ins stub a small-molecule user needs before SHELXT/SHELXL: TITL, CELL
(wavelength and cell), ZERR (Z and the cell esds, zero when unknown), LATT
(lattice type, negative for non-centrosymmetric groups), SYMM (the
operators beyond the identity, the centring and the inversion), SFAC and
UNIT from the composition (atoms per asymmetric unit times Z), HKLF 4, END.
"""

from __future__ import annotations

import io
import re

import gemmi
import numpy as np

from gonio.core.export.text import format_table

_LATT = {"P": 1, "I": 2, "R": 3, "F": 4, "A": 5, "B": 6, "C": 7}


def shelx_scale(I, sigI, scale_range=(-9999.0, 9999.0)) -> float:
    """The DIALS factor that makes I and sigma span ``scale_range``."""
    lo = min(float(np.min(I)), float(np.min(sigI)))
    hi = max(float(np.max(I)), float(np.max(sigI)))
    scales = [scale_range[1] / hi] if hi > 0 else []
    if lo < 0:
        scales.append(scale_range[0] / lo)
    return min(scales) if scales else 1.0


def hklf4_text(hkl, I, sigI, scale: float = 1.0) -> str:
    """HKLF 4 records (3I4, 2F8.2, I4) and the terminating zero line."""
    hkl = np.asarray(hkl, dtype=np.int64)
    buf = io.StringIO()
    buf.write(format_table((hkl[:, 0], hkl[:, 1], hkl[:, 2], np.asarray(I) * scale,
                            np.asarray(sigI) * scale, np.ones(len(hkl))),
                           [0, 0, 0, 2, 2, 0], [4, 4, 4, 8, 8, 4]))
    buf.write(f"{0:4d}{0:4d}{0:4d}{0:8.2f}{0:8.2f}{0:4d}\n")
    return buf.getvalue()


def parse_composition(formula: str) -> list[tuple[str, float]]:
    """'C3H7NO2S' -> [('C', 3), ('H', 7), ('N', 1), ('O', 2), ('S', 1)]."""
    parts = re.findall(r"([A-Z][a-z]?)(\d*\.?\d*)", formula)
    if not parts or "".join(e + n for e, n in parts) != formula.replace(" ", ""):
        raise ValueError(f"{formula!r} is not a chemical formula such as C3H7NO2S")
    return [(e, float(n) if n else 1.0) for e, n in parts]


def shelx_symm(sg: gemmi.SpaceGroup) -> list[str]:
    """SYMM operators: beyond identity, centring translations and the inversion."""
    ops = sg.operations()
    kept: list[gemmi.Op] = []
    seen: set[str] = set()
    inversion = None
    if ops.is_centrosymmetric():
        inversion = next(op for op in ops.sym_ops if op.rot == [[-gemmi.Op.DEN if i == j else 0
                                                                  for j in range(3)] for i in range(3)])
    for op in ops.sym_ops:
        if op.triplet() in seen:
            continue
        seen.add(op.triplet())
        if inversion is not None:
            seen.add((inversion * op).wrap().triplet())
        if op.rot != gemmi.Op().rot:
            kept.append(op)
    return [op.triplet().upper().replace(",", ", ") for op in kept]


def ins_text(sg: gemmi.SpaceGroup, cell: gemmi.UnitCell, wavelength: float,
             cell_esd=None, composition: str = "CH") -> str:
    """The .ins stub (module docstring)."""
    z = len(sg.operations().sym_ops) * len(sg.operations().cen_ops)
    latt = _LATT[sg.centring_type()] * (1 if sg.operations().is_centrosymmetric() else -1)
    esd = list(cell_esd) if cell_esd is not None else [0.0] * 6
    elements = parse_composition(composition)
    lines = [f"TITL {sg.number} in {sg.hm.replace(' ', '')}",
             "CELL {:8.5f} {:8.4f} {:8.4f} {:8.4f} {:8.3f} {:8.3f} {:8.3f}".format(
                 wavelength, *cell.parameters),
             "ZERR {:8d} {:8.4f} {:8.4f} {:8.4f} {:8.3f} {:8.3f} {:8.3f}".format(z, *esd),
             f"LATT {latt}"]
    lines += [f"SYMM {s}" for s in shelx_symm(sg)]
    lines.append("SFAC " + " ".join(e.upper() for e, _ in elements))
    lines.append("UNIT " + " ".join(f"{n * z:g}" for _, n in elements))
    lines += ["HKLF 4", "END"]
    return "\n".join(lines) + "\n"
