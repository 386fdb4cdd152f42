"""reindex: Miller indices, A matrices and space groups change together; predictions stay.

Real DIALS data: ../shared/data/x4_xds/indexed.{expt,refl} (P 4 2 2, 569 indexed spots).
"""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np
import pytest

from gonio.core.errors import GonioError
from gonio.core.lattice.change_of_basis import (
    ChangeOfBasisError,
    change_of_basis_string,
    parse_change_of_basis,
)
from gonio.core.lattice.reindex import ReindexError, reindex, reindex_to_reference

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "x4_xds"


@pytest.fixture(scope="module")
def x4():
    if not (DATA / "indexed.expt").exists():
        pytest.skip(f"real test data not found at {DATA}")
    from gonio.core.io.dials_expt import read_expt
    from gonio.core.io.dials_refl import read_refl

    expts = read_expt(DATA / "indexed.expt")
    refl = read_refl(DATA / "indexed.refl")
    refl = refl.select(refl["id"] >= 0)
    return expts, refl


@pytest.fixture(scope="module")
def x4_p1(x4):
    return reindex(*x4, space_group="P1")


def test_parse_and_format_round_trip():
    P = parse_change_of_basis("a+b,-a+b,c")
    assert np.array_equal(P, [[1, -1, 0], [1, 1, 0], [0, 0, 1]])  # columns a', b', c'
    assert change_of_basis_string(P) == "a+b,-a+b,c"
    # the coordinate form of the same operator: x' = P^-1 x
    assert np.allclose(parse_change_of_basis("x/2+y/2,-x/2+y/2,z"), P)
    assert change_of_basis_string(parse_change_of_basis("a-2*b,a,c")) == "a-2*b,a,c"
    half = parse_change_of_basis("-1/2*a+1/2*b+1/2*c,a/2-b/2+c/2,a/2+b/2-c/2")
    assert np.linalg.det(half) == pytest.approx(0.5)
    assert change_of_basis_string(half) == "-1/2*a+1/2*b+1/2*c,1/2*a-1/2*b+1/2*c,1/2*a+1/2*b-1/2*c"


@pytest.mark.parametrize("text, message", [
    ("a,a,c", "singular"),
    ("-a,b,c", "negative determinant"),
    ("a+b,c", "could not be read"),
    ("p,q,r", "unknown symbols"),
    ("a+1/2,b,c", "origin shift"),
    ("", "not an operator"),
])
def test_invalid_operators(text, message):
    with pytest.raises(ChangeOfBasisError, match=message):
        parse_change_of_basis(text)


def test_miller_indices_follow_cctbx_convention(x4_p1):
    expts, refl = x4_p1
    new_e, new_r = reindex(expts, refl, "b,c,a")
    h, h2 = refl["miller_index"], new_r["miller_index"]
    # a' = b, b' = c, c' = a: h' = h P, i.e. (h', k', l') = (k, l, h)
    assert np.array_equal(h2, h[:, [1, 2, 0]])
    a, b, c = expts[0].crystal.unit_cell.parameters[:3]
    assert new_e[0].crystal.unit_cell.parameters[:3] == pytest.approx((b, c, a))


@pytest.mark.parametrize("op", ["a+b,b,-a+c", "-b,a-b,c+2*a", "a-b,a+b,c"])
def test_reindexing_leaves_predictions_unchanged(x4_p1, op):
    from gonio.core.prediction.rotation import predict_observed

    expts, refl = x4_p1
    new_e, new_r = reindex(expts, refl, op)
    h = refl["miller_index"].astype(float)
    h2 = new_r["miller_index"].astype(float)
    assert not np.array_equal(h, h2)
    r_old = h @ expts[0].crystal.A.T
    r_new = h2 @ new_e[0].crystal.A.T
    assert np.abs(r_new - r_old).max() < 1e-9
    phi = refl["xyzobs.mm.value"][:, 2]
    p_old = predict_observed(expts[0], refl["miller_index"], phi)
    p_new = predict_observed(new_e[0], new_r["miller_index"], phi)
    assert len(p_old) == len(p_new) > 500
    assert np.abs(p_new["xyzcal.px"] - p_old["xyzcal.px"]).max() < 1e-6
    # and back again with the inverse operator
    back_e, back_r = reindex(new_e, new_r, np.linalg.inv(parse_change_of_basis(op)))
    assert np.array_equal(back_r["miller_index"], refl["miller_index"])
    assert np.allclose(back_e[0].crystal.A, expts[0].crystal.A, atol=1e-12)


def test_space_group_transformed_with_the_basis(x4):
    expts, refl = x4
    assert expts[0].crystal.space_group.hm == "P 4 2 2"
    new_e, new_r = reindex(expts, refl, "b,a,-c")  # an operator of 4/mmm: same setting
    assert new_e[0].crystal.space_group.hm == "P 4 2 2"
    e2, _ = reindex(expts, refl, "a-b,a+b,c")  # C-centred supercell of the tetragonal lattice
    assert e2[0].crystal.space_group.hm == "C 4 2 2"
    with pytest.raises(ChangeOfBasisError, match="cannot name"):
        reindex(expts, refl, "b,c,a")  # 4-fold along a: P 4 2 2 in a setting with no symbol


def test_set_space_group(x4_p1):
    expts, refl = x4_p1
    e, r = reindex(expts, refl, space_group="P4")
    assert e[0].crystal.space_group.hm == "P 4"
    assert np.array_equal(r["miller_index"], refl["miller_index"])
    with pytest.raises(ReindexError, match="metric symmetry"):
        reindex(expts, refl, space_group="P6")
    with pytest.raises(ReindexError, match="metric symmetry"):
        reindex(expts, refl, "b,c,a", space_group="P4")  # 4-fold must be along c
    with pytest.raises(ReindexError, match="centring"):
        reindex(expts, refl, space_group="I4")  # indices of a primitive lattice
    with pytest.raises(ReindexError, match="not a space group"):
        reindex(expts, refl, space_group="Q7")


def test_fractional_indices_rejected(x4_p1):
    expts, refl = x4_p1
    with pytest.raises(ChangeOfBasisError, match="fractional Miller indices"):
        reindex(expts, refl, "a/2+b/2,-a/2+b/2,c")
    # fine after going to the C-centred cell first: every index then obeys h + k even
    e, r = reindex(expts, refl, "a-b,a+b,c")
    assert np.all((r["miller_index"][:, 0] + r["miller_index"][:, 1]) % 2 == 0)
    e2, r2 = reindex(e, r, "a/2+b/2,-a/2+b/2,c")
    assert np.array_equal(r2["miller_index"], refl["miller_index"])


def test_nothing_to_do_and_no_crystal(x4_p1):
    expts, refl = x4_p1
    with pytest.raises(ReindexError, match="Nothing to do"):
        reindex(expts, refl)
    bare = type(expts)([e.replace(crystal=None) for e in expts])
    with pytest.raises(GonioError, match="run index first"):
        reindex(bare, refl, "b,a,-c")


def test_reindex_to_reference_by_orientation(x4_p1):
    expts, refl = x4_p1
    data_e, data_r = reindex(expts, refl, "-b,a,c")  # the other choice of tetragonal axes
    out_e, out_r, match = reindex_to_reference(data_e, data_r, expts)
    assert match.method == "orientation"
    assert match.cb_op == "b,-a,c"
    assert np.array_equal(out_r["miller_index"], refl["miller_index"])
    assert np.allclose(out_e[0].crystal.A, expts[0].crystal.A, atol=1e-12)


def test_reindex_to_reference_by_intensity(x4_p1):
    """A P4 crystal (intensities symmetric under 4 but not under the 422 twofolds) indexed
    with the other twin-related choice (b,a,-c) is brought back by intensity correlation."""
    expts, refl = x4_p1
    ref_e, ref_r = reindex(expts, refl, space_group="P4")
    rng = np.random.default_rng(7)
    h = ref_r["miller_index"].astype(np.int64)
    # intensity per P4 class (with Friedel): the same for h, its 4-fold mates and -h
    rots = [np.array(op.rot) // op.DEN for op in gemmi.SpaceGroup("P 4").operations().sym_ops]
    keys = np.max([((s * h @ R + 512) * [1 << 20, 1 << 10, 1]).sum(axis=1)
                   for R in rots for s in (1, -1)], axis=0)
    _, cls = np.unique(keys, return_inverse=True)
    intens = rng.exponential(1000.0, cls.max() + 1)[cls]
    ref_r["intensity.sum.value"] = intens
    data_e, data_r = reindex(ref_e, ref_r, "b,a,-c")
    assert data_e[0].crystal.space_group.hm == "P 4"
    # hide the orientation: the intensity route must not need it
    out_e, out_r, match = reindex_to_reference(data_e, data_r, ref_e, ref_r, max_delta=2.0)
    assert match.method == "intensity"
    ccs = sorted(c["cc"] for c in match.candidates)
    assert len(match.candidates) == 2  # cosets of 4 in 422: the identity and the twofold
    assert ccs[-1] == pytest.approx(1.0) and ccs[0] < 0.7
    assert out_e[0].crystal.space_group.hm == "P 4"
    # every reflection is back on a P4-equivalent of its reference index
    out_keys = np.max([((s * out_r["miller_index"].astype(np.int64) @ R + 512)
                        * [1 << 20, 1 << 10, 1]).sum(axis=1) for R in rots for s in (1, -1)],
                      axis=0)
    assert np.array_equal(out_keys, keys)
    # with the default max_delta = 5 deg the 42.2/39.7 A cell is pseudo-cubic (3.5 deg):
    # 432 / 4 gives 6 candidate operators, and the right one still wins
    _, _, match5 = reindex_to_reference(data_e, data_r, ref_e, ref_r)
    assert len(match5.candidates) == 6
    assert max(c["cc"] for c in match5.candidates) == pytest.approx(1.0)
    assert match5.cb_op in {c["cb_op"] for c in match5.candidates if c["cc"] > 0.999}


def test_reindex_to_reference_errors(x4_p1):
    expts, refl = x4_p1
    other = type(expts)([e.replace(crystal=e.crystal.replace(
        A=e.crystal.A @ np.diag([1.0, 1.0, 1.3]))) for e in expts])
    with pytest.raises(ReindexError, match="orientation does not match"):
        reindex_to_reference(other, refl, expts)
    with pytest.raises(ReindexError, match="cells differ"):
        reindex_to_reference(other, refl, expts, refl)
