"""Full CBF images with imgCIF axis tables (e.g. Diamond I03 with a SmarGon).

The geometry is read from the imgCIF dictionary (Bernstein & Hammersley,
International Tables G 3.7): the ``_axis`` loop (id, type rotation /
translation, equipment, depends_on, vector, offset), the axis settings of
the frame (``_diffrn_scan_frame_axis``, else ``_diffrn_scan_axis`` start
values), the scan increments (``_diffrn_scan_axis.angle_increment``) and
the pixel axes of the array (``_array_structure_list`` gives which axis
set runs fastest, ``_array_structure_list_axis`` the first displacement and
the step in mm).

The imgCIF laboratory frame (X along the principal goniometer axis, Z from
the sample towards the source, Y completing a right-handed set) is the
frame dxtbx and DIALS use, so axis vectors are taken as they are. A point
in a dependent axis' frame maps out through each axis of its chain:
``p -> offset + R(vector, angle) p`` for a rotation and
``p -> offset + p + displacement * vector`` for a translation. As in
dxtbx (via CBFlib), the displacement of the first array element is the
position of the panel's origin corner, which makes a Dectris full CBF
agree with the miniCBF lines of the same header.

Goniometer axes are ordered innermost (next to the crystal) first; the
scan axis is the goniometer axis with a non-zero angle increment.
"""

from __future__ import annotations

import re

import numpy as np

from gonio.core.models.beam import Beam
from gonio.core.models.detector import Detector, Panel
from gonio.core.models.goniometer import Goniometer
from gonio.core.models.rotation import axis_angle_matrix
from gonio.core.models.scan import Scan

from .base import ImageFormat, header_error
from .cbf_binary import binary_layout, check_binary_complete, decode_pixels, read_cbf_header
from .minicbf import pilatus_epoch, pilatus_header, sensor_from_header
from .module_gaps import detector_family, module_gap_mask

_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|\S+")


def cif_items(text: str) -> dict[str, list[str]]:
    """Tag -> list of values for every loop and single item of a CIF header."""
    tokens: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith(";"):  # a text field runs to the next line starting with ';'
            for inner in lines:
                if inner.startswith(";"):
                    break
            tokens.append("?")
            continue
        for tok in _TOKEN.findall(line):
            if tok.startswith("#"):
                break
            tokens.append(tok.strip("'\"") if tok[0] in "'\"" else tok)
    items: dict[str, list[str]] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.lower() == "loop_":
            tags = []
            i += 1
            while i < len(tokens) and tokens[i].startswith("_"):
                tags.append(tokens[i].lower())
                i += 1
            values = []
            while (
                i < len(tokens)
                and not tokens[i].startswith("_")
                and tokens[i].lower() != "loop_"
                and not tokens[i].lower().startswith("data_")
            ):
                values.append(tokens[i])
                i += 1
            for k, tag in enumerate(tags):
                items[tag] = values[k :: len(tags)]
        elif tok.startswith("_") and i + 1 < len(tokens):
            items[tok.lower()] = [tokens[i + 1]]
            i += 2
        else:
            i += 1
    return items


def _float(v: str, default: float = 0.0) -> float:
    try:
        return float(v)
    except ValueError:
        return default


class _Axes:
    """The ``_axis`` table with each axis' setting for this frame."""

    def __init__(self, items: dict, path: str):
        try:
            ids = items["_axis.id"]
            self.type = dict(zip(ids, [t.lower() for t in items["_axis.type"]]))
            self.equipment = dict(zip(ids, [e.lower() for e in items["_axis.equipment"]]))
            self.depends_on = dict(zip(ids, items["_axis.depends_on"]))
            vec = [items[f"_axis.vector[{k}]"] for k in (1, 2, 3)]
            off = [items.get(f"_axis.offset[{k}]", ["0"] * len(ids)) for k in (1, 2, 3)]
        except KeyError as e:
            raise header_error(path, "imgCIF", f"the axis table lacks {e}") from None
        self.ids = ids
        self.vector = {
            a: np.array([_float(vec[k][n]) for k in range(3)]) for n, a in enumerate(ids)
        }
        self.offset = {
            a: np.array([_float(off[k][n]) for k in range(3)]) for n, a in enumerate(ids)
        }
        self.setting = {a: 0.0 for a in ids}
        self.increment = {a: 0.0 for a in ids}
        scan_ids = items.get("_diffrn_scan_axis.axis_id", [])
        for n, a in enumerate(scan_ids):
            if self.type.get(a) == "rotation":
                self.setting[a] = _float(items["_diffrn_scan_axis.angle_start"][n])
                self.increment[a] = _float(items["_diffrn_scan_axis.angle_increment"][n])
            elif a in self.type:
                self.setting[a] = _float(items["_diffrn_scan_axis.displacement_start"][n])
        frame_ids = items.get("_diffrn_scan_frame_axis.axis_id", [])
        for n, a in enumerate(frame_ids):
            key = "angle" if self.type.get(a) == "rotation" else "displacement"
            values = items.get(f"_diffrn_scan_frame_axis.{key}")
            if values and a in self.type:
                self.setting[a] = _float(values[n], self.setting[a])

    def chain(self, axis: str) -> list[str]:
        """``axis`` and the axes it depends on, innermost first."""
        out = []
        while axis and axis not in (".", "?") and axis not in out:
            out.append(axis)
            axis = self.depends_on.get(axis, ".")
        return out

    def position(self, axis: str, displacement: dict[str, float]) -> np.ndarray:
        """Lab point (mm) of the origin of ``axis``' own frame moved by ``displacement``."""
        p = np.zeros(3)
        for a in self.chain(axis):
            if self.type[a] == "rotation":
                p = axis_angle_matrix(self.vector[a], np.deg2rad(self.setting[a])) @ p
            else:
                p = p + displacement.get(a, self.setting[a]) * self.vector[a]
            p = p + self.offset[a]
        return p


class FullCBF(ImageFormat):
    name = "FullCBF"
    description = "full CBF with imgCIF axis definitions"

    @classmethod
    def understand(cls, head: bytes) -> bool:
        return (head.startswith(b"###CBF") or b"data_" in head[:2048]) and (
            b"\n_axis.id" in head or b"_axis.vector[1]" in head
        )

    @classmethod
    def read_models(cls, path: str):
        text, offset = read_cbf_header(path)
        check_binary_complete(path, text, offset)
        items = cif_items(text)
        axes = _Axes(items, path)
        lay = binary_layout(path, text)
        wavelength = _float(items.get("_diffrn_radiation_wavelength.wavelength", ["0"])[0])
        if wavelength <= 0:
            raise header_error(path, "imgCIF", "no _diffrn_radiation_wavelength.wavelength")
        source = [a for a in axes.ids if axes.equipment[a] == "source"]
        direction = axes.vector[source[0]] if source else np.array([0.0, 0.0, 1.0])
        beam = Beam(direction=direction, wavelength=wavelength)
        h = pilatus_header(text)
        detector = Detector([cls._panel(items, axes, lay, h, path, wavelength)])
        goniometer, scan_axis = cls._goniometer(axes)
        start = axes.setting.get(scan_axis, 0.0) if scan_axis else 0.0
        width = axes.increment.get(scan_axis, 0.0) if scan_axis else 0.0
        exposure = _float(items.get("_diffrn_scan_frame.exposure_time", ["0"])[0])
        epoch = pilatus_epoch(items.get("_diffrn_scan_frame.date", [""])[0])
        scan = Scan(
            image_range=(1, 1), oscillation=(start, width), exposure_time=[exposure], epochs=[epoch]
        )
        return beam, detector, goniometer, scan

    @staticmethod
    def _panel(items, axes: _Axes, lay, h, path, wavelength):
        try:
            # precedence 1 is the fastest-changing array index (imgCIF)
            index = [
                int(i)
                for i in items.get(
                    "_array_structure_list.precedence", items["_array_structure_list.index"]
                )
            ]
            sets = items["_array_structure_list.axis_set_id"]
            set_ids = items["_array_structure_list_axis.axis_set_id"]
            set_axes = items["_array_structure_list_axis.axis_id"]
            start = items["_array_structure_list_axis.displacement"]
            step = items["_array_structure_list_axis.displacement_increment"]
        except KeyError as e:
            raise header_error(path, "imgCIF", f"the array axis tables lack {e}") from None
        by_set = {
            s: (set_axes[n], _float(start[n]), _float(step[n])) for n, s in enumerate(set_ids)
        }
        fast_set, slow_set = sets[index.index(1)], sets[index.index(2)]
        fast_axis, f0, df = by_set[fast_set]
        slow_axis, s0, ds = by_set[slow_set]
        # the fast axis' chain contains the slow one (array axes depend on each other)
        inner = fast_axis if slow_axis in axes.chain(fast_axis) else slow_axis
        origin = axes.position(inner, {fast_axis: f0, slow_axis: s0})
        fast = axes.position(inner, {fast_axis: f0 + df, slow_axis: s0}) - origin
        slow = axes.position(inner, {fast_axis: f0, slow_axis: s0 + ds}) - origin
        overload = _float(items.get("_array_intensities.overload", ["0"])[0], 0.0)
        undefined = _float(items.get("_array_intensities.undefined_value", ["-1"])[0], -1.0)
        image_size = (lay["fast"], lay["slow"])
        family = detector_family(image_size) if "Silicon" in h or "CdTe" in h else None
        return Panel(
            fast_axis=fast / np.linalg.norm(fast),
            slow_axis=slow / np.linalg.norm(slow),
            origin=origin,
            image_size=image_size,
            pixel_size=(abs(df), abs(ds)),
            trusted_range=(undefined, overload if overload > 0 else 2.0**31 - 1),
            mask=module_gap_mask(image_size, family) if family else [],
            **sensor_from_header(h, path, wavelength),
        )

    @staticmethod
    def _goniometer(axes: _Axes):
        gonio = [
            a for a in axes.ids if axes.equipment[a] == "goniometer" and axes.type[a] == "rotation"
        ]
        if not gonio:
            return Goniometer(), None
        # innermost = the goniometer axis no other goniometer axis depends on
        dependents = {axes.depends_on[a] for a in gonio}
        innermost = [a for a in gonio if a not in dependents]
        order = [a for a in axes.chain(innermost[0]) if a in gonio] if innermost else gonio
        moving = [a for a in order if axes.increment[a] != 0.0]
        scan_axis = moving[0] if moving else order[-1]
        if len(order) == 1:
            return Goniometer(rotation_axis_datum=axes.vector[order[0]]), scan_axis
        return Goniometer.multi_axis(
            [axes.vector[a] for a in order],
            [axes.setting[a] for a in order],
            list(order),
            order.index(scan_axis),
        ), scan_axis

    @classmethod
    def read_pixels(cls, path: str, index_in_file: int = 0):
        return (decode_pixels(path),)
