"""DIALS .refl (msgpack) reading and writing, against the DIALS files in shared/data."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import msgpack
import numpy as np
import pytest

from gonio.core.errors import GonioError
from gonio.core.io.dials_refl import (
    ReflectionFileError,
    read_refl,
    refl_from_bytes,
    refl_to_bytes,
    write_refl,
)
from gonio.core.reflection_table import Flags, ReflectionTable, Shoeboxes

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFL_FILES = [
    "x4_xds/indexed.refl",
    "x4_xds/integrated.refl",
    "myd88/strong.refl",
    "l_cysteine_wedges/11_integrated.refl",
    "l_cysteine_wedges/23_integrated.refl",
]

# numpy form of each DIALS column type (gonio.core.reflection_table docstring)
EXPECTED_FORM = {
    "bool": (np.bool_, ()),
    "int": (np.int32, ()),
    "std::size_t": (np.uint64, ()),
    "double": (np.float64, ()),
    "vec2<double>": (np.float64, (2,)),
    "vec3<double>": (np.float64, (3,)),
    "mat3<double>": (np.float64, (9,)),
    "int6": (np.int32, (6,)),
    "cctbx::miller::index<>": (np.int32, (3,)),
}


def data_file(rel: str) -> Path:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"shared test data not found: {path} (see shared/data/README.md)")
    return path


def unpack(b: bytes):
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


# ---------------------------------------------------------------------------
# real DIALS files
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("rel", REFL_FILES)
def test_real_file_columns_have_dials_types(rel):
    path = data_file(rel)
    raw = unpack(path.read_bytes())
    t = read_refl(path)
    header = raw[2]
    assert len(t) == header["nrows"]
    assert t.keys() == list(header["data"])  # file order kept
    assert t.experiment_identifiers == header["identifiers"]
    for name, (type_name, _) in header["data"].items():
        col = t[name]
        if type_name == "Shoebox<>":
            assert isinstance(col, Shoeboxes) and len(col) == len(t)
            continue
        dtype, row_shape = EXPECTED_FORM[type_name]
        assert col.dtype == dtype, name
        assert col.shape == (len(t), *row_shape), name
        assert col.flags.writeable, name


@pytest.mark.parametrize("rel", REFL_FILES)
def test_real_file_round_trip_is_byte_identical(rel, tmp_path):
    path = data_file(rel)
    raw = path.read_bytes()
    t = read_refl(path)
    out = tmp_path / "copy.refl"
    write_refl(t, out)
    written = out.read_bytes()
    assert unpack(written) == unpack(raw)
    assert written == raw
    again = read_refl(out)
    assert again.keys() == t.keys()
    for name in t.keys():
        a, b = t[name], again[name]
        if isinstance(a, Shoeboxes):
            assert a == b
        else:
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    assert again == t


def test_myd88_strong_spots_match_their_shoeboxes():
    """646 strong spots; intensity, n_signal and centroid recomputed from the shoeboxes."""
    t = read_refl(data_file("myd88/strong.refl"))
    assert len(t) == 646
    assert t.experiment_identifiers == {0: "af7738a0-5e34-4303-8c75-45b458aa70b3"}
    assert t.get_flags(Flags.strong).all()
    assert np.all(t["id"] == 0)
    sb = t["shoebox"]
    assert sb.allocated.all()
    assert np.array_equal(sb.bbox, t["bbox"])
    assert np.array_equal(sb.panel, t["panel"])
    assert set(np.unique(sb.mask)) == {0, 5}  # DIALS Valid | Foreground
    # DIALS sums foreground (data - background) pixels: recompute from the pixels
    row = np.repeat(np.arange(len(sb)), np.diff(sb.offset))
    fg = (sb.mask & 5) == 5
    signal = np.where(fg, sb.data.astype(np.float64) - sb.background, 0.0)
    assert np.allclose(np.bincount(row, signal, len(sb)), t["intensity.sum.value"], rtol=0,
                       atol=1e-6)
    assert np.array_equal(np.bincount(row, fg, len(sb)), t["n_signal"])
    assert t["intensity.sum.value"][:5].tolist() == [10316.0, 9038.0, 1119.0, 1734.0, 49015.0]
    # centroids: pixel centres (x+0.5, y+0.5, z+0.5) weighted by signal
    for i in (0, 1, 100, 645):
        data, background, mask = sb.get(i)
        x0, x1, y0, y1, z0, z1 = sb.bbox[i]
        z, y, x = np.meshgrid(np.arange(z0, z1) + 0.5, np.arange(y0, y1) + 0.5,
                              np.arange(x0, x1) + 0.5, indexing="ij")
        w = np.where((mask & 5) == 5, data.astype(np.float64) - background, 0.0)
        centroid = [(w * c).sum() / w.sum() for c in (x, y, z)]
        assert np.allclose(centroid, t["xyzobs.px.value"][i], atol=1e-9)
    assert t["xyzobs.px.value"][0] == pytest.approx([316.86293137, 63.40965491, 2.69067468])


def test_x4_indexed_geometry_columns():
    t = read_refl(data_file("x4_xds/indexed.refl"))
    assert len(t) == 654
    for name in ("miller_index", "xyzcal.mm", "s1", "rlp", "entering", "shoebox"):
        assert name in t
    expt = json.loads(data_file("x4_xds/indexed.expt").read_text())
    assert t.experiment_identifiers == {0: expt["experiment"][0]["identifier"]}
    # |s1| = 1 / wavelength for every reflection
    wavelength = expt["beam"][0]["wavelength"]
    assert np.allclose(np.linalg.norm(t["s1"], axis=1), 1 / wavelength, rtol=1e-12)
    assert t["miller_index"][:3].tolist() == [[4, 3, -24], [-9, 12, -21], [0, 5, -23]]
    assert t.get_flags(Flags.indexed).sum() == np.any(t["miller_index"] != 0, axis=1).sum()


def test_x4_integrated_has_no_identifiers_and_partial_shoeboxes():
    t = read_refl(data_file("x4_xds/integrated.refl"))
    assert len(t) == 2269
    assert t.experiment_identifiers == {}
    assert t["partial_id"].dtype == np.uint64
    # 1991 predictions numbered 0..1990, then 278 rows whose shoeboxes carry pixels
    assert np.array_equal(t["partial_id"][:1991], np.arange(1991))
    sb = t["shoebox"]
    assert np.array_equal(np.flatnonzero(sb.allocated), np.arange(1991, 2269))
    assert np.all(np.diff(sb.offset)[~sb.allocated] == 0)
    assert t.get_flags(Flags.predicted).sum() == 1991
    assert t.get_flags(Flags.integrated_sum).sum() == 1679


@pytest.mark.parametrize("rel,n", [("l_cysteine_wedges/11_integrated.refl", 92),
                                   ("l_cysteine_wedges/23_integrated.refl", 69)])
def test_l_cysteine_wedges(rel, n):
    t = read_refl(data_file(rel))
    assert len(t) == n
    expt = json.loads(data_file(rel.replace(".refl", ".expt")).read_text())
    assert t.experiment_identifiers == {0: expt["experiment"][0]["identifier"]}
    assert np.allclose(np.linalg.norm(t["s1"], axis=1), 1 / expt["beam"][0]["wavelength"])


# ---------------------------------------------------------------------------
# synthetic tables
# ---------------------------------------------------------------------------
def hand_shoeboxes() -> Shoeboxes:
    """Three shoeboxes: 2x3x4 pixels, one never allocated, one 1x1x2 at negative x."""
    bbox = [(10, 14, 20, 23, 0, 2), (0, 5, 0, 5, 0, 1), (-1, 1, 7, 8, 3, 4)]
    n0, n2 = 24, 2
    data = np.concatenate([np.arange(n0) * 1.5, [7.25, -1.0]])
    background = np.concatenate([np.full(n0, 0.5), [1.0, 2.0]])
    mask = np.concatenate([np.arange(n0) % 6, [37, 1]])
    offset = [0, n0, n0, n0 + n2]
    return Shoeboxes([0, 3, 1], bbox, data, background, mask, offset, [True, False, True])


def every_type_table(n_rows: int = 3) -> ReflectionTable:
    rng = np.random.default_rng(7)
    n = n_rows
    cols = {
        "flags": np.array([Flags.indexed | Flags.strong, 0, Flags.integrated_sum][:n]),
        "id": np.arange(n) % 2,
        "entering": np.arange(n) % 2 == 0,
        "d": rng.random(n) * 3,
        "partial_id": rng.random((n, 2)),
        "s1": rng.random((n, 3)),
        "ub_matrix": rng.random((n, 9)),
        "bbox": rng.integers(-5, 100, (n, 6)),
        "miller_index": rng.integers(-30, 30, (n, 3)),
        "label": np.array(["a", "", "βeta ☃"][:n], dtype=object),
        "nan_col": np.array([np.nan, np.inf, -0.0][:n]),
    }
    if n == 3:
        cols["shoebox"] = hand_shoeboxes()
    return ReflectionTable(cols, {0: "abc", 1: "def-123"})


def test_every_column_type_round_trips(tmp_path):
    t = every_type_table()
    path = tmp_path / "all.refl"
    write_refl(t, path)
    back = read_refl(path)
    assert back == t
    assert back.keys() == t.keys()
    types = {k: v[0] for k, v in unpack(path.read_bytes())[2]["data"].items()}
    assert types == {
        "flags": "std::size_t", "id": "int", "entering": "bool", "d": "double",
        "partial_id": "vec2<double>", "s1": "vec3<double>", "ub_matrix": "mat3<double>",
        "bbox": "int6", "miller_index": "cctbx::miller::index<>", "label": "std::string",
        "nan_col": "double", "shoebox": "Shoebox<>",
    }
    assert list(back["label"]) == ["a", "", "βeta ☃"]
    data, background, mask = back["shoebox"].get(0)
    assert data.shape == (2, 3, 4) and data[1, 2, 3] == 23 * 1.5
    assert mask[0, 1, 0] == 4 and background.dtype == np.float32
    assert back["shoebox"].get(2)[2].ravel().tolist() == [37, 1]
    assert back["shoebox"].get(1)[0].size == 0


def test_shoebox_bytes_follow_dials_layout():
    raw = unpack(refl_to_bytes(ReflectionTable({"shoebox": hand_shoeboxes()})))
    type_name, (n, blob) = raw[2]["data"]["shoebox"]
    assert (type_name, n) == ("Shoebox<>", 3)
    assert len(blob) == 3 * 29 + 12 * (24 + 2)
    panel, *bbox, marker = struct.unpack_from("<I6iB", blob, 0)
    assert (panel, bbox, marker) == (0, [10, 14, 20, 23, 0, 2], 1)
    data = np.frombuffer(blob, "<f4", 24, 29)
    mask = np.frombuffer(blob, "<i4", 24, 29 + 96)
    assert data[5] == 7.5 and mask[5] == 5
    second = 29 + 24 * 12
    assert struct.unpack_from("<I6iB", blob, second) == (3, 0, 5, 0, 5, 0, 1, 0)
    assert struct.unpack_from("<I6iB", blob, second + 29)[:2] == (1, -1)


def test_dials_version_2_file_with_uint8_masks_reads():
    """Newer DIALS writes layout version 2: shoebox marker 2 and one-byte masks."""
    data = np.array([1.0, 2.0, 3.0, 4.0], "<f4")
    blob = (struct.pack("<I6iB", 2, 0, 2, 5, 7, 1, 2, 2) + data.tobytes()
            + bytes([5, 3, 1, 0]) + np.full(4, 0.25, "<f4").tobytes()
            + struct.pack("<I6iB", 0, 0, 1, 0, 1, 0, 1, 0))
    obj = ["dials::af::reflection_table", 2,
           {"identifiers": {}, "nrows": 2, "data": {"shoebox": ["Shoebox<>", [2, blob]]}}]
    t = refl_from_bytes(msgpack.packb(obj, use_bin_type=True))
    sb = t["shoebox"]
    assert sb.allocated.tolist() == [True, False]
    assert sb.panel.tolist() == [2, 0]
    d, b, m = sb.get(0)
    assert d.shape == (1, 2, 2) and d.ravel().tolist() == [1, 2, 3, 4]
    assert m.dtype == np.int32 and m.ravel().tolist() == [5, 3, 1, 0]
    assert b.ravel().tolist() == [0.25] * 4
    # gonio writes it back as version 1 (int32 masks), which every DIALS reads
    out = unpack(refl_to_bytes(t))
    assert out[1] == 1 and len(out[2]["data"]["shoebox"][1][1]) == 29 + 12 * 4 + 29
    assert refl_from_bytes(refl_to_bytes(t)) == t


def test_empty_tables_round_trip():
    zero_rows = every_type_table(0)
    assert len(zero_rows) == 0
    back = refl_from_bytes(refl_to_bytes(zero_rows))
    assert back == zero_rows and back["s1"].shape == (0, 3)
    no_columns = refl_from_bytes(refl_to_bytes(ReflectionTable()))
    assert len(no_columns) == 0 and no_columns.keys() == []
    empty_shoeboxes = hand_shoeboxes().select(np.zeros(3, bool))
    t = ReflectionTable({"shoebox": empty_shoeboxes})
    assert refl_from_bytes(refl_to_bytes(t)) == t


def test_integer_columns_are_narrowed_or_refused():
    t = ReflectionTable({"n": np.array([1, -2], np.int64), "u": np.array([3, 4], np.uint16)})
    back = refl_from_bytes(refl_to_bytes(t))
    assert back["n"].dtype == np.int32 and back["n"].tolist() == [1, -2]
    assert back["u"].dtype == np.uint64
    with pytest.raises(ReflectionFileError, match="outside the range"):
        refl_to_bytes(ReflectionTable({"n": np.array([2**40])}))
    with pytest.raises(ReflectionFileError, match="no DIALS column type"):
        refl_to_bytes(ReflectionTable({"c": np.zeros((2, 4))}))
    with pytest.raises(ReflectionFileError, match="not all strings"):
        refl_to_bytes(ReflectionTable({"c": np.array(["a", None], dtype=object)}))
    numpy_strings = ReflectionTable({"c": np.array(["ab", "c"])})  # dtype <U2
    assert refl_from_bytes(refl_to_bytes(numpy_strings))["c"].tolist() == ["ab", "c"]


def test_write_is_atomic(tmp_path):
    path = tmp_path / "t.refl"
    write_refl(every_type_table(), path)
    before = path.read_bytes()
    bad = ReflectionTable({"c": np.zeros((3, 5))})
    with pytest.raises(ReflectionFileError):
        write_refl(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.refl"]  # no temp file left
    write_refl(ReflectionTable({"d": [1.0]}), path)  # overwrite in place
    assert read_refl(path)["d"].tolist() == [1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["t.refl"]


def test_inconsistent_shoeboxes_are_refused():
    sb = hand_shoeboxes()
    sb.bbox[0, 1] = 9  # x1 < x0
    with pytest.raises(ReflectionFileError, match="shoebox 0 has a bounding box"):
        refl_to_bytes(ReflectionTable({"shoebox": sb}))
    sb = hand_shoeboxes()
    sb.bbox[2, 1] = 2  # volume no longer matches the stored pixels
    with pytest.raises(ReflectionFileError, match="shoebox 2 holds 2 pixels"):
        refl_to_bytes(ReflectionTable({"shoebox": sb}))


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_truncated_file(tmp_path):
    raw = data_file("myd88/strong.refl").read_bytes()
    path = tmp_path / "cut.refl"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ReflectionFileError, match="cut.refl.*truncated or corrupt") as e:
        read_refl(path)
    assert isinstance(e.value, GonioError)


def test_not_msgpack(tmp_path):
    path = tmp_path / "notes.refl"
    path.write_text("hello, this is not a reflection file\n")
    with pytest.raises(ReflectionFileError, match="notes.refl is not a DIALS reflection file"):
        read_refl(path)
    with pytest.raises(ReflectionFileError, match="Python pickle"):
        refl_from_bytes(b"\x80\x04\x95" + bytes(20))
    with pytest.raises(ReflectionFileError, match="no such reflection file"):
        read_refl(tmp_path / "missing.refl")


def test_wrong_magic():
    for obj in (["dials::af::experiment_list", 1, {}], {"a": 1}, 42):
        with pytest.raises(ReflectionFileError, match="msgpack but not a DIALS reflection"):
            refl_from_bytes(msgpack.packb(obj))


def table_obj(version=1, **data):
    return ["dials::af::reflection_table", version,
            {"identifiers": {0: "x"}, "nrows": 2, "data": data}]


def test_unknown_version():
    b = msgpack.packb(table_obj(3, d=["double", [2, bytes(16)]]), use_bin_type=True)
    with pytest.raises(ReflectionFileError, match="layout version 3; gonio reads versions 1 and 2"):
        refl_from_bytes(b, source="new.refl")


@pytest.mark.parametrize("column,message", [
    (["FrameSlicedShoebox<>", [2, b"\x03"]], "type 'FrameSlicedShoebox<>', which gonio does not"),
    (["double", [2, bytes(15)]], "holds 15 bytes, 16 expected"),
    (["double", [3, bytes(24)]], "has 3 rows but the table has 2"),
    (["double", [2, [1.0, 2.0]]], "not stored as binary"),
    (["std::string", [2, bytes(64)]], "std::string column"),
    (["Shoebox<>", [2, struct.pack("<I6iB", 0, 0, 1, 0, 1, 0, 1, 0)]], "end inside shoebox 1"),
    (["Shoebox<>", [2, struct.pack("<I6iB", 0, 0, 1, 0, 1, 0, 1, 7) * 2]], "marker 7"),
    (["Shoebox<>", [2, struct.pack("<I6iB", 0, 3, 1, 0, 1, 0, 1, 0) * 2]], "bounding box"),
    (["Shoebox<>", [2, struct.pack("<I6iB", 0, 0, 1, 0, 1, 0, 1, 0) * 2 + b"x"]],
     "1 bytes are left over"),
    (["Shoebox<>", [2, struct.pack("<I6iB", 0, 0, 9, 0, 9, 0, 9, 1) * 2]], "end inside shoebox 0"),
])
def test_bad_columns(column, message):
    b = msgpack.packb(table_obj(c=column), use_bin_type=True)
    with pytest.raises(ReflectionFileError, match=message):
        refl_from_bytes(b, source="bad.refl")


def test_bad_header():
    obj = table_obj(d=["double", [2, bytes(16)]])
    del obj[2]["nrows"]
    with pytest.raises(ReflectionFileError, match="no valid 'nrows'"):
        refl_from_bytes(msgpack.packb(obj, use_bin_type=True))
    obj = table_obj()
    obj[2]["extra"] = 1
    with pytest.raises(ReflectionFileError, match="unknown entries extra"):
        refl_from_bytes(msgpack.packb(obj, use_bin_type=True))


def test_selected_rows_keep_their_shoeboxes():
    """A selection (repeats, any order) writes and reads back with the right pixels."""
    t = read_refl(data_file("x4_xds/integrated.refl"))
    rows = np.array([2268, 5, 2000, 2000, 1991, 0])
    sub = refl_from_bytes(refl_to_bytes(t.select(rows)))
    assert len(sub) == 6 and sub["shoebox"].allocated.tolist() == [1, 0, 1, 1, 1, 0]
    for k, i in enumerate(rows):
        for got, want in zip(sub["shoebox"].get(k), t["shoebox"].get(i)):
            assert np.array_equal(got, want)
        assert np.array_equal(sub["xyzcal.px"][k], t["xyzcal.px"][i])
