"""XDS_ASCII, SHELX HKLF 4 + .ins, mmCIF and rlp JSON exports, read back independently."""

from __future__ import annotations

import json

import gemmi
import numpy as np
import pytest

from gonio.core.export.files import export_files
from gonio.core.export.params import ExportParams
from gonio.core.export.shelx import parse_composition
from tests.merge_export_data import dataset


@pytest.fixture(scope="module")
def data():
    return dataset(n_sweeps=2, seed=31, n_unique_dmin=2.5)


def _files(data, **kw):
    expts, table, _ = data
    return dict(export_files(expts, table, ExportParams(**kw)).files)


def _scaled_I(table):
    return table["intensity.scale.value"] / table["inverse_scale_factor"]


def test_xds_ascii_read_by_gemmi(data, tmp_path):
    expts, table, _ = data
    files = _files(data, format="xds_ascii")
    assert sorted(files) == ["DIALS_0.HKL", "DIALS_1.HKL"]
    total = 0
    for i, e in enumerate(expts):
        path = tmp_path / f"x{i}.HKL"
        path.write_bytes(files[f"DIALS_{i}.HKL"])
        xa = gemmi.read_xds_ascii(str(path))
        assert xa.spacegroup_number == 19
        assert xa.cell_constants == pytest.approx([40, 50, 60, 90, 90, 90], abs=1e-3)
        assert xa.wavelength == pytest.approx(0.9795)
        sel = table["id"] == i
        assert xa.data_size == sel.sum()
        assert np.sort(xa.iobs_array) == pytest.approx(np.sort(_scaled_I(table)[sel]), rel=1e-6,
                                                       abs=6e-4)  # 8 significant digits of the largest
        # ZD is the frame coordinate (from 0) of the calculated position
        assert np.sort(xa.zd_array) == pytest.approx(np.sort(table["xyzcal.px"][sel, 2]), abs=1e-3)
        text = files[f"DIALS_{i}.HKL"].decode()
        assert f"!STARTING_ANGLE= {e.scan.oscillation[0]:f}" in text
        assert "!DATA_RANGE= 1 50" in text
        total += xa.data_size
    assert total == len(table)


def test_xds_ascii_psi_is_an_angle_and_rlp_the_lp_factor(data):
    text = _files(data, format="xds_ascii")["DIALS_0.HKL"].decode()
    rows = np.array([line.split() for line in text.splitlines() if not line.startswith("!")],
                    dtype=float)
    assert rows.shape[1] == 13
    assert rows[:, 8] == pytest.approx(0.8)  # RLP = LP / QE of the data
    assert np.all(np.abs(rows[:, 12]) <= 180) and rows[:, 12].std() > 30


def test_shelx_hklf4_fixed_columns_and_ins(data):
    expts, table, _ = data
    files = _files(data, format="shelx", shelx_composition="C3H7NO2S")
    lines = files["dials.hkl"].decode().splitlines()
    assert lines[-1] == "   0   0   0    0.00    0.00   0"
    rows = lines[:-1]
    assert all(len(r) == 32 for r in rows)
    hkl = np.array([[int(r[0:4]), int(r[4:8]), int(r[8:12])] for r in rows])
    I = np.array([float(r[12:20]) for r in rows])
    sig = np.array([float(r[20:28]) for r in rows])
    assert {int(r[28:32]) for r in rows} == {1}
    assert {tuple(h) for h in hkl.tolist()} == {tuple(h) for h in table["miller_index"].tolist()}
    # scaled up so that the largest |value| fills the 9999 range (DIALS's rule), ratios kept
    ref = _scaled_I(table)
    k = 9999.0 / max(ref.max(), (np.sqrt(table["intensity.scale.variance"])
                                 / table["inverse_scale_factor"]).max())
    assert max(I.max(), sig.max()) == pytest.approx(9999.0, abs=0.01)
    assert np.sort(I) == pytest.approx(np.sort(ref * k), abs=0.0051)
    ins = files["dials.ins"].decode().splitlines()
    assert ins[0] == "TITL 19 in P212121"
    assert ins[1].split()[1:] == ["0.97950", "40.0000", "50.0000", "60.0000", "90.000", "90.000",
                                  "90.000"]
    assert ins[2].split()[:2] == ["ZERR", "4"]
    assert ins[3] == "LATT -1"
    assert [x for x in ins if x.startswith("SYMM")] == [
        "SYMM -X+1/2, -Y, Z+1/2", "SYMM X+1/2, -Y+1/2, -Z", "SYMM -X, Y+1/2, -Z+1/2"]
    assert "SFAC C H N O S" in ins and "UNIT 12 28 4 8 4" in ins and ins[-2:] == ["HKLF 4", "END"]


def test_composition_parsing():
    assert parse_composition("C3H7NO2S") == [("C", 3), ("H", 7), ("N", 1), ("O", 2), ("S", 1)]
    with pytest.raises(ValueError):
        parse_composition("c3h7")


def test_mmcif_read_by_gemmi(data):
    expts, table, _ = data
    doc = gemmi.cif.read_string(_files(data, format="mmcif")["scaled.cif"].decode())
    b = doc.sole_block()
    assert float(b.find_value("_cell.length_b")) == pytest.approx(50.0)
    assert int(b.find_value("_symmetry.Int_Tables_number")) == 19
    assert float(b.find_value("_diffrn_radiation_wavelength.wavelength")) == pytest.approx(0.9795)
    t = b.find("_diffrn_refln.", ["index_h", "index_k", "index_l", "intensity_net",
                                  "intensity_sigma", "pdbx_image_id", "pdbx_scan_id",
                                  "pdbx_scale_value"])
    assert len(t) == len(table)
    I = np.array([float(r[3]) for r in t])
    assert np.sort(I) == pytest.approx(np.sort(_scaled_I(table)), rel=1e-6, abs=6e-4)
    images = np.array([int(r[5]) for r in t])
    scans = np.array([int(r[6]) for r in t])
    assert images[scans == 1].max() <= 50 and images[scans == 2].min() >= 101
    scan = b.find("_diffrn_scan.", ["id", "image_id_begin", "image_id_end", "scan_angle_begin"])
    assert [(r[1], r[2]) for r in scan] == [("1", "50"), ("101", "150")]
    assert float(scan[1][3]) == pytest.approx(expts[1].scan.oscillation[0])


def test_rlp_json(data):
    expts, table, _ = data
    d = json.loads(_files(data, format="json")["rlp.json"])
    rlp = np.array(d["rlp"]).reshape(-1, 3)
    assert len(rlp) == len(table) and d["experiment_id"] is None
    assert np.all(np.linalg.norm(rlp, axis=1) > 0)
    assert d["experiments"]["__id__"] == "ExperimentList"
    assert len(d["imageset_id"]) == len(table)
