"""The merged MTZ of dials.merge, through gemmi.Mtz.

One dataset per wavelength group (column suffix ``_WAVE<n>`` when there is
more than one, before the (+)/(-): ``I_WAVE1(+)``, as DIALS's writer), with the columns in DIALS's order:
IMEAN SIGIMEAN N, F SIGF, I(+) SIGI(+) I(-) SIGI(-), N(+) N(-), F(+) SIGF(+)
F(-) SIGF(-), DANO SIGDANO (the amplitude columns only with truncate, the
anomalous ones only with anomalous). Missing values are NaN (MNF).
"""

from __future__ import annotations

import time

import gemmi
import numpy as np

from gonio.core.merge.merge import MergedDataset, MergeResult


def _columns(ds: MergedDataset, suffix: str = "") -> list[tuple[str, str, np.ndarray]]:
    """(label, type, values); a wavelength suffix goes before (+)/(-) as DIALS writes it."""
    m = ds.merged
    cols = [("IMEAN", "", "J", m.intensity), ("SIGIMEAN", "", "Q", m.sigma),
            ("N", "", "I", m.multiplicity.astype(float))]
    if ds.mean is not None:
        cols += [("F", "", "F", ds.mean.F), ("SIGF", "", "Q", ds.mean.sigF)]
    if m.anomalous:
        cols += [("I", "(+)", "K", m.i_plus), ("SIGI", "(+)", "M", m.sigma_plus),
                 ("I", "(-)", "K", m.i_minus), ("SIGI", "(-)", "M", m.sigma_minus),
                 ("N", "(+)", "I", m.n_plus.astype(float)),
                 ("N", "(-)", "I", m.n_minus.astype(float))]
        if ds.plus is not None:
            cols += [("F", "(+)", "G", ds.plus.F), ("SIGF", "(+)", "L", ds.plus.sigF),
                     ("F", "(-)", "G", ds.minus.F), ("SIGF", "(-)", "L", ds.minus.sigF),
                     ("DANO", "", "D", ds.dano), ("SIGDANO", "", "Q", ds.sigdano)]
    return [(base + suffix + sign, ctype, values) for base, sign, ctype, values in cols]


def merged_mtz(result: MergeResult, crystal_names=("XTAL",), dataset_names=("NATIVE",),
               project_name: str = "AUTOMATIC", title: str = "From gonio merge") -> gemmi.Mtz:
    """A gemmi.Mtz of the merged data (module docstring)."""
    mtz = gemmi.Mtz(with_base=True)
    mtz.title = title
    mtz.history = [f"From gonio merge, run on {time.strftime('%Y-%m-%d at %H:%M:%S %Z')}"]
    mtz.spacegroup = result.space_group
    mtz.cell = result.cell
    n = len(result.datasets)
    names_ok = len(crystal_names) == n and len(dataset_names) == n
    hkl_all = np.unique(np.concatenate([d.merged.miller_index for d in result.datasets]), axis=0)
    key_all = _key(hkl_all)
    blocks = [hkl_all.astype(float)]
    for k, ds in enumerate(result.datasets):
        dset = mtz.add_dataset(dataset_names[k] if names_ok else f"NATIVE{k + 1}" if n > 1
                               else dataset_names[0])
        dset.crystal_name = crystal_names[k] if names_ok else crystal_names[0]
        dset.project_name = project_name
        dset.wavelength = ds.wavelength
        dset.cell = result.cell
        suffix = f"_WAVE{k + 1}" if n > 1 else ""
        rows = np.searchsorted(key_all, _key(ds.merged.miller_index))
        for label, ctype, values in _columns(ds, suffix):
            mtz.add_column(label, ctype)
            col = np.full(len(hkl_all), np.nan)
            col[rows] = values
            blocks.append(col)
    mtz.set_data(np.column_stack(blocks).astype(np.float32))
    mtz.sort()
    return mtz


def _key(hkl: np.ndarray) -> np.ndarray:
    h = np.asarray(hkl, dtype=np.int64) + 512
    return (h[:, 0] << 20) | (h[:, 1] << 10) | h[:, 2]
