"""Simulation parameters: presets, self-description and clear errors."""

from dataclasses import fields

import numpy as np
import pytest

from gonio.core.errors import GonioError
from gonio.core.simulate import PRESETS, SimulationParams, simulate
from gonio.core.simulate.params import resolve


def test_every_parameter_describes_itself():
    described = SimulationParams.describe()
    assert [d["field"] for d in described] == [f.name for f in fields(SimulationParams)]
    for d in described:
        assert d["help"] and "units" in d
    units = {d["name"]: d["units"] for d in described}
    assert units["osc"] == "deg" and units["distance"] == "mm" and units["wavelength"] == "A"
    assert units["header.distance"] == "mm"  # the command-line name of header_distance
    kinds = {d["name"]: d["kind"] for d in described}
    assert kinds["unit_cell"] == "floats:6" and kinds["format"] == "choice"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_simulate(name):
    res = simulate(SimulationParams(preset=name, image_size=(96, 96), n_images=2, nproc=1))
    p = res.params
    assert res.images.shape[:2] == (2, len(res.experiments[0].detector))
    assert res.experiments[0].crystal.space_group.hm == \
        __import__("gemmi").SpaceGroup(PRESETS[name]["space_group"]).hm
    assert len(res.experiments) == p.n_lattices
    assert p.wavelength == PRESETS[name]["wavelength"]


def test_electron_preset_has_the_documented_header_errors():
    p = resolve(SimulationParams(preset="ed_c2", n_images=3))
    assert p.n_images == 3 and p.distance == 1762.0 and p.header_distance == 2193.0
    res = simulate(p.replace(image_size=(128, 128)))
    assert res.experiments[0].detector[0].distance == pytest.approx(1762.0)
    assert res.header_experiments[0].detector[0].distance == pytest.approx(2193.0)
    assert np.allclose(res.experiments[0].goniometer.rotation_axis, [-1, 0, 0])
    assert np.allclose(res.header_experiments[0].goniometer.rotation_axis, [1, 0, 0])
    assert res.experiments[0].beam.polarization_fraction == 0.5
    assert res.experiments[0].crystal.unit_cell.parameters == pytest.approx(
        (99.06, 31.01, 54.30, 90, 107.7, 90))


@pytest.mark.parametrize("kw, words", [
    ({"preset": "lysosyme"}, "unknown simulation preset"),
    ({"format": "tiff"}, "format="),
    ({"wavelength": 5.0}, "wavelength"),
    ({"space_group": "P 7"}, "space group"),
    ({"n_lattices": 3}, "n_lattices"),
    ({"detector": "multipanel", "format": "cbf"}, "nexus"),
    ({"osc": 0.0}, "osc"),
    ({"osc": 1e9}, "beyond what simulate makes"),  # ran for minutes
    ({"n_images": 10**9, "output": "/nonexistent"}, "at most 100000 images"),
    ({"n_images": 4000, "osc": 1.0, "output": "/nonexistent"}, "3600.0 deg in all"),
    ({"unit_cell": (10, 10, 10)}, "six numbers"),
    ({"intensities": "/nonexistent/file.mtz"}, "does not exist"),
    ({"sigma_m": 0.0}, "sigma_m > 0"),
    ({"image_size": (4, 4)}, "image_size"),
    ({"image_size": (4096, 4096), "n_images": 100}, "output=<folder>"),
    ({"header_distance": 0.0}, "header.distance=0.0 mm must be positive"),  # LinAlgError
    ({"background": -1.0}, "background=-1.0 must not be negative"),  # numpy's Poisson error
    ({"seed": -1}, "seed=-1 must be 0 or more"),  # numpy's ValueError
    ({"gain": 0.0}, "gain=0.0 ADU per photon must be positive"),
    ({"prefix": "../image"}, "prefix='../image' is not a plain file-name start"),
    ({"prefix": "\u00fc"}, "is not a plain file-name start"),  # UnicodeEncodeError in the header
    ({"intensities": "/"}, "is a folder"),  # IsADirectoryError
])
def test_bad_input_gives_a_clear_error(kw, words, tmp_path):
    with pytest.raises(GonioError, match=words):
        simulate(SimulationParams(**{"image_size": (32, 32), "n_images": 1, **kw}))


def test_intensities_from_a_list(tmp_path):
    g = np.arange(-6, 7)
    hkl = np.array(np.meshgrid(g, g, g, indexing="ij")).reshape(3, -1).T
    hkl = hkl[(np.abs(hkl[:, 2]) != 2) & (np.abs(hkl).sum(axis=1) > 0)]  # |l| = 2 left out
    value = 1.0 + np.abs(hkl) @ np.array([1.0, 2.0, 3.0])
    table = tmp_path / "i.hkl"
    np.savetxt(table, np.column_stack([hkl, value]), fmt="%d %d %d %.1f")
    res = simulate(SimulationParams(image_size=(256, 256), n_images=10, osc=1.0,
                                    space_group="P 1", unit_cell=(20, 20, 20, 90, 90, 90),
                                    intensities=str(table), d_min=3.5, distance=60.0, nproc=1))
    t = res.truth
    h = t["miller_index"]
    expected = np.where(np.abs(h[:, 2]) == 2, 0.0, 1.0 + np.abs(h) @ np.array([1.0, 2.0, 3.0]))
    assert len(t) > 30 and (np.abs(h[:, 2]) == 2).any()
    assert np.array_equal(t["F2"], expected)


def test_from_preset_keeps_explicit_values_equal_to_defaults():
    p = SimulationParams.from_preset("ed_c2", format="cbf", n_images=4)
    assert p.format == "cbf" and p.n_images == 4 and p.distance == 1762.0
    assert resolve(p) == p  # already resolved: nothing changes
    # the plain dataclass route cannot see format="cbf" (it is the default) and the preset wins
    assert resolve(SimulationParams(preset="ed_c2", format="cbf")).format == "smv"
    with pytest.raises(GonioError, match="unknown simulation preset"):
        SimulationParams.from_preset("lysosyme")


def test_intensities_from_mtz(tmp_path):
    import gemmi

    cell = gemmi.UnitCell(30, 40, 50, 90, 90, 90)
    sg = gemmi.SpaceGroup("P 21 21 21")
    asu = np.asarray(gemmi.make_miller_array(cell, sg, 4.0), dtype=float)
    values = 10.0 + np.arange(len(asu), dtype=float)
    mtz = gemmi.Mtz()
    mtz.spacegroup, mtz.cell = sg, cell
    mtz.add_dataset("sim")
    for label, kind in [("H", "H"), ("K", "H"), ("L", "H"), ("IMEAN", "J")]:
        mtz.add_column(label, kind)
    mtz.set_data(np.column_stack([asu, values]).astype(np.float32))
    path = tmp_path / "in.mtz"
    mtz.write_to_file(str(path))
    res = simulate(SimulationParams(image_size=(128, 128), n_images=4, space_group="P 21 21 21",
                                    unit_cell=(30, 40, 50, 90, 90, 90), intensities=str(path),
                                    d_min=4.0, distance=60.0, nproc=1))
    t = res.truth
    from gonio.core.simulate.structure import orbit_keys

    k_asu = orbit_keys(asu.astype(int), sg)
    lookup = dict(zip(k_asu.tolist(), values))
    expected = np.array([lookup.get(k, 0.0) for k in orbit_keys(t["miller_index"], sg).tolist()])
    assert len(t) > 20
    assert np.allclose(t["F2"], expected) and (expected > 0).all()


def test_replace_keeps_an_applied_preset():
    p = SimulationParams.from_preset("ed_c2", format="cbf").replace(n_images=2)
    assert resolve(p).format == "cbf" and resolve(p).n_images == 2


def test_nothing_of_the_users_is_written_over(tmp_path):
    """An output that is a file, or a file of another kind under an image's name, is
    refused before anything is written; the simulation's own files are replaced."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    small = {"image_size": (32, 32), "n_images": 2}
    with pytest.raises(GonioError, match="is a file; simulate writes its images into a folder"):
        simulate(SimulationParams(output=str(notes), **small))
    folder = tmp_path / "sim"
    folder.mkdir()
    (folder / "image_00002.cbf").write_text("mine")
    with pytest.raises(GonioError, match="is a file gonio did not write, not a CBF image"):
        simulate(SimulationParams(output=str(folder), **small))
    assert sorted(p.name for p in folder.iterdir()) == ["image_00002.cbf"]
    assert notes.read_text() == (folder / "image_00002.cbf").read_text() == "mine"
    (folder / "image_00002.cbf").unlink()
    for fmt in ("cbf", "nexus"):
        for _ in range(2):  # the second run replaces the first's files
            simulate(SimulationParams(output=str(folder), format=fmt, **small))
    (folder / "truth.refl").write_text("mine")
    with pytest.raises(GonioError, match="truth.refl already exists"):
        simulate(SimulationParams(output=str(folder), **small))
