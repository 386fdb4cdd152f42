"""Row selection and 3-vector norms: the same numbers as numpy's fancy indexing and
np.linalg.norm, which the faster paths replace."""

import numpy as np
import pytest

from gonio.core.models.vectors import dot3, norms3
from gonio.core.reflection_table import ReflectionTable, take_rows


def test_take_rows_matches_fancy_indexing():
    rng = np.random.default_rng(3)
    cols = {"s1": rng.normal(size=(500, 3)), "bbox": rng.integers(0, 9, (500, 6), np.int32),
            "flags": rng.integers(0, 99, 500).astype(np.uint64)}
    t = ReflectionTable(cols)
    mask = rng.random(500) < 0.4
    index = rng.permutation(500)[:300]
    for sel in (mask, index, index - 500, np.array([], np.int64)):
        picked = t.select(sel)
        for k, v in cols.items():
            assert picked[k].dtype == v.dtype
            assert np.array_equal(picked[k], v[sel])


def test_take_rows_refuses_what_indexing_refuses():
    v = np.zeros((4, 3))
    with pytest.raises(IndexError):
        take_rows(v, np.ones(3, bool))
    with pytest.raises(IndexError):
        take_rows(v, np.array([4]))


def test_norms3_is_numpys_norm_bit_for_bit():
    rng = np.random.default_rng(4)
    for v in (rng.normal(size=(10000, 3)) * 10.0 ** rng.integers(-8, 8, (10000, 1)),
              rng.normal(size=(7, 5, 3)), rng.normal(size=3)):
        assert np.array_equal(norms3(v), np.linalg.norm(v, axis=-1))
    a, b = rng.normal(size=(2, 10000, 3)) * 10.0 ** rng.integers(-8, 8, (2, 10000, 1))
    assert np.array_equal(dot3(a, b), np.sum(a * b, axis=-1))
