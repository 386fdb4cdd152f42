"""Read XDS input files: XDS.INP (geometry, cell, space group) and SPOT.XDS.

XDS (Kabsch 2010, Acta Cryst. D66, 125) describes the experiment in its own
laboratory frame; gonio converts it to the DIALS frame as dxtbx does (via
rstbx's coordinate_frame_converter): the rotation R that takes the
rotation axis to +x and the direction towards the source (-beam) to +z is
applied to every vector. The detector origin (corner of the first pixel) is

    origin = R (F * N - (ORGX - 0.5) * QX * X - (ORGY - 0.5) * QY * Y)

with X, Y the detector axes, N = X x Y and F = DETECTOR_DISTANCE: XDS
counts pixel coordinates so that the centre of the first pixel is at 1.0,
half a pixel beyond the DIALS value 0.5 (the convention dxtbx uses, and the
one James Holton's simulator writes next to a DIALS origin).

SPOT.XDS lists x, y (pixels), z (frame), intensity and, after IDXREF, h k
l. The frame coordinate z uses the DIALS convention already (image n spans
z in [n-1, n)). For x, y the spot centroids of the x4 data set in
../shared/data (SPOT.XDS against DIALS's own strong spots on the first 9
images, 210 matched spots) are 0.42 and 0.47 px *smaller* in XDS, not
larger, so gonio adds 0.5 px to SPOT.XDS x and y (the measured relation;
dials.import_xds copies them unchanged). XDS gives no centroid variances:
gonio sets 0.25 (px^2, px^2, frame^2), i.e. a half-pixel standard error.

UNTRUSTED_RECTANGLE= x1 x2 y1 y2 excludes pixels x1 < x < x2, y1 < y < y2
(1-based), which is the DIALS mask rectangle (x1, y1, x2 - 1, y2 - 1)
(0-based, half-open) — e.g. the Pilatus gap 487 495 -> 487..494.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import gemmi
import numpy as np

from gonio.core.errors import GonioError
from gonio.core.formats.attenuation import mu_per_mm
from gonio.core.models.beam import Beam
from gonio.core.models.detector import PARALLAX, SIMPLE, Detector, Panel
from gonio.core.models.experiment import Experiment, ExperimentList
from gonio.core.models.goniometer import Goniometer
from gonio.core.models.imageset import ImageSetRef
from gonio.core.models.scan import Scan
from gonio.core.reflection_table import Flags, ReflectionTable

#: centroid variance (px^2, px^2, frame^2) given to SPOT.XDS spots (XDS lists none)
SPOT_XDS_VARIANCE = 0.25
#: DIALS px = SPOT.XDS px + this, for x and y (measured on the x4 data set, see above)
SPOT_XDS_PIXEL_SHIFT = 0.5
_KEYWORD = re.compile(r"([A-Z][A-Z0-9_'()./\-]*=)")


class XDSFileError(GonioError):
    """An XDS file gonio cannot use."""


@dataclass
class XDSInput:
    """What XDS.INP says: the experiment plus the cell and space group, if given."""

    experiments: ExperimentList
    unit_cell: gemmi.UnitCell | None = None
    space_group: gemmi.SpaceGroup | None = None
    keywords: dict = field(default_factory=dict)


def parse_xds_inp(text: str) -> dict[str, list[list[str]]]:
    """Keyword -> list of value lists (a keyword may repeat, e.g. UNTRUSTED_RECTANGLE)."""
    out: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        line = line.split("!", 1)[0]
        parts = _KEYWORD.split(line)
        for k in range(1, len(parts) - 1, 2):
            out.setdefault(parts[k][:-1], []).append(parts[k + 1].split())
    return out


def align_reference_frame(a, a_target, b, b_target) -> np.ndarray:
    """The rotation taking ``a`` to ``a_target`` and ``b`` into the (a_target, b_target) plane."""

    def frame(u, v):
        e1 = np.asarray(u, float) / np.linalg.norm(u)
        e2 = np.asarray(v, float) - (np.asarray(v, float) @ e1) * e1
        e2 /= np.linalg.norm(e2)
        return np.column_stack([e1, e2, np.cross(e1, e2)])

    return frame(a_target, b_target) @ frame(a, b).T


def read_xds_inp(path: str | os.PathLike) -> XDSInput:
    """Experiments (geometry, scan, template, mask), cell and space group from XDS.INP."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise XDSFileError(f"The XDS input file {path} does not exist.")
    with open(path, errors="replace") as f:
        kw = parse_xds_inp(f.read())

    def get(key, n=1, default=None, cast=float):
        if key not in kw or len(kw[key][-1]) < n:
            if default is not None:
                return default
            raise XDSFileError(
                f"{path} lacks {key}= (needed for the geometry); add it or import "
                "the images instead."
            )
        v = [cast(x) for x in kw[key][-1][:n]]
        return v[0] if n == 1 else np.array(v)

    try:
        return _build(path, kw, get)
    except ValueError as e:
        raise XDSFileError(f"A value in {path} could not be read: {e}.") from None


def _build(path, kw, get) -> XDSInput:
    beam_dir = get("INCIDENT_BEAM_DIRECTION", 3, np.array([0.0, 0.0, 1.0]))
    axis = get("ROTATION_AXIS", 3, np.array([1.0, 0.0, 0.0]))
    X = get("DIRECTION_OF_DETECTOR_X-AXIS", 3, np.array([1.0, 0.0, 0.0]))
    Y = get("DIRECTION_OF_DETECTOR_Y-AXIS", 3, np.array([0.0, 1.0, 0.0]))
    X, Y = X / np.linalg.norm(X), Y / np.linalg.norm(Y)
    N = np.cross(X, Y)
    to_source = -beam_dir / np.linalg.norm(beam_dir)
    R = align_reference_frame(axis, [1.0, 0.0, 0.0], to_source, [0.0, 0.0, 1.0])

    nx, ny = int(get("NX", cast=int)), int(get("NY", cast=int))
    qx, qy = get("QX"), get("QY")
    orgx, orgy = get("ORGX"), get("ORGY")
    distance = get("DETECTOR_DISTANCE")
    wavelength = get("X-RAY_WAVELENGTH")
    origin = distance * N - (orgx - 0.5) * qx * X - (orgy - 0.5) * qy * Y

    detector_name = " ".join(kw.get("DETECTOR", [[""]])[-1]).upper()
    pad = detector_name in ("PILATUS", "EIGER")
    thickness = get("SENSOR_THICKNESS", default=0.0)
    material = "Si" if pad or "SILICON" in kw else ""
    mu = get("SILICON", default=0.0) or (mu_per_mm(material, wavelength) if thickness > 0 else 0.0)
    mask = []
    for x1, x2, y1, y2 in (map(int, map(float, r[:4])) for r in kw.get("UNTRUSTED_RECTANGLE", [])):
        f0, s0, f1, s1 = max(x1, 0), max(y1, 0), min(x2 - 1, nx), min(y2 - 1, ny)
        if f1 > f0 and s1 > s0:
            mask.append((f0, s0, f1, s1))
    panel = Panel(
        fast_axis=R @ X,
        slow_axis=R @ Y,
        origin=R @ origin,
        image_size=(nx, ny),
        pixel_size=(qx, qy),
        trusted_range=(
            get("MINIMUM_VALID_PIXEL_VALUE", default=0.0) - 1.0,
            get("OVERLOAD", default=65535.0),
        ),
        thickness=thickness,
        material=material,
        mu=mu,
        px_mm_strategy=PARALLAX if mu > 0 and thickness > 0 else SIMPLE,
        type="SENSOR_PAD" if pad else "SENSOR_UNKNOWN",
        mask=mask,
    )
    beam = Beam(
        direction=R @ to_source,
        wavelength=wavelength,
        polarization_fraction=get("FRACTION_OF_POLARIZATION", default=0.999),
        polarization_normal=R @ get("POLARIZATION_PLANE_NORMAL", 3, np.array([0.0, 1.0, 0.0])),
    )
    goniometer = Goniometer(rotation_axis_datum=R @ (axis / np.linalg.norm(axis)))

    first, last = (int(v) for v in get("DATA_RANGE", 2, cast=int))
    width = get("OSCILLATION_RANGE")
    start_frame = int(get("STARTING_FRAME", default=float(first)))
    start_angle = get("STARTING_ANGLE", default=0.0)
    scan = Scan(
        image_range=(first, last), oscillation=(start_angle + (first - start_frame) * width, width)
    )

    template = " ".join(kw.get("NAME_TEMPLATE_OF_DATA_FRAMES", [[""]])[-1][:1])
    if template:
        template = template.replace("?", "#")
        if template.endswith("h5"):
            template = template.replace("######", "master")
        if not os.path.isabs(template):
            template = os.path.join(os.path.dirname(os.path.abspath(path)), template)
    imageset = ImageSetRef(kind="ImageSequence", template=template)

    cell = None
    if "UNIT_CELL_CONSTANTS" in kw:
        c = get("UNIT_CELL_CONSTANTS", 6)
        if np.all(c[:3] > 0):
            cell = gemmi.UnitCell(*c)
    sg = None
    if "SPACE_GROUP_NUMBER" in kw:
        number = int(get("SPACE_GROUP_NUMBER", cast=int))
        if number > 0:
            sg = gemmi.find_spacegroup_by_number(number)
    experiments = ExperimentList(
        [
            Experiment(
                beam=beam,
                detector=Detector([panel]),
                goniometer=goniometer,
                scan=scan,
                imageset=imageset,
            )
        ]
    )
    return XDSInput(experiments, cell, sg, {k: v for k, v in kw.items()})


def read_spot_xds(
    path: str | os.PathLike, experiments: ExperimentList | None = None
) -> ReflectionTable:
    """The spots of SPOT.XDS as a DIALS strong-spot table (see the module notes)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise XDSFileError(f"The spot file {path} does not exist.")
    try:
        rows = np.loadtxt(path, ndmin=2)
    except ValueError as e:
        raise XDSFileError(
            f"{path} is not a SPOT.XDS file (x y z intensity [h k l] per line): {e}."
        ) from None
    if rows.size == 0:
        rows = np.zeros((0, 4))
    if rows.shape[1] not in (4, 7):
        raise XDSFileError(
            f"{path} has {rows.shape[1]} columns; SPOT.XDS has 4 (x y z "
            "intensity) or 7 (with h k l)."
        )
    n = len(rows)
    xyz = rows[:, :3].copy()
    xyz[:, :2] += SPOT_XDS_PIXEL_SHIFT
    t = ReflectionTable(
        {
            "xyzobs.px.value": xyz,
            "xyzobs.px.variance": np.full((n, 3), SPOT_XDS_VARIANCE),
            "intensity.sum.value": rows[:, 3].copy(),
            "id": np.zeros(n, dtype=np.int32),
            "panel": np.zeros(n, dtype=np.uint64),
            "flags": np.full(n, Flags.strong, dtype=np.uint64),
        }
    )
    if rows.shape[1] == 7:
        t["miller_index.xds"] = np.rint(rows[:, 4:7]).astype(np.int32)
    if experiments:
        t.experiment_identifiers = {0: experiments[0].identifier}
    return t
