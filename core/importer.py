"""Import diffraction images into experiments (the ``dials.import`` step).

Inputs are image files (globs already expanded by the shell, or expanded
here when they name no file), templates with ``#`` for the image number
(``th_8_2_####.cbf``), folders (every image inside), and NeXus/Eiger
master files. Formats are recognised by content (:mod:`gonio.core.formats`).

Files are grouped into sweeps by template (same folder, prefix, number of
digits and extension) and format. A group whose images rotate (non-zero
oscillation width) becomes one Experiment with an ``ImageSequence`` (the
absolute template), a Scan and a Goniometer; images without rotation
(stills) become one Experiment each with an ``ImageSet``. No pixel data are
read: for a sweep every file must exist and the numbering be contiguous,
and the headers of the first and last image are read and must describe the
same detector and a consistent rotation (reading every header costs about
half a millisecond per uncompressed or gzip file but 100 ms per bzip2 file,
so gonio reads two, as dxtbx reads one for a template).

Several sweeps become several experiments; their beams, detectors and goniometers
are shared (one object) where they agree within the tolerances of dials.import
(:func:`share_models`), scans never.

Geometry overrides (:class:`ImportOverrides`) are applied as dxtbx applies
the ``geometry.*`` options of ``dials.import``: a new distance moves the
detector along its normal, keeping the in-plane position (so the beam
centre stays for a beam along the normal); a beam centre moves the
detector origin in the panel plane so that the beam meets the panel there.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import numpy as np

from gonio.core.errors import GonioError
from gonio.core.formats import NXmx, identify, supported_formats
from gonio.core.formats.base import ImageFormatError
from gonio.core.formats.reader import template_path
from gonio.core.models.beam import Beam
from gonio.core.models.detector import Detector
from gonio.core.models.experiment import Experiment, ExperimentList
from gonio.core.models.goniometer import Goniometer
from gonio.core.models.imageset import ImageSetRef
from gonio.core.models.scan import Scan

_COMPRESSION_SUFFIXES = (".gz", ".bz2")


class ImageImportError(GonioError):
    """A problem with the images given to import."""


@dataclass
class ImportOverrides:
    """Geometry that replaces what the image headers say (None = keep the header's).

    distance: mm; fast_slow_beam_centre: (fast, slow) px; mosflm_beam_centre:
    (slow, fast) mm as Mosflm writes it; wavelength: A; goniometer_axis: the
    rotation axis in the lab frame, its sign giving the rotation sense;
    oscillation: (start, width) deg; trusted_range: (min, max) counts.
    """

    distance: float | None = None
    fast_slow_beam_centre: tuple[float, float] | None = None
    mosflm_beam_centre: tuple[float, float] | None = None
    wavelength: float | None = None
    goniometer_axis: tuple[float, float, float] | None = None
    oscillation: tuple[float, float] | None = None
    trusted_range: tuple[float, float] | None = None

    def validate(self) -> None:
        if self.distance is not None and not self.distance > 0:
            raise GonioError(
                f"distance={self.distance} mm: the sample-detector distance must be "
                "positive (in mm)."
            )
        if self.wavelength is not None and not self.wavelength > 0:
            raise GonioError(
                f"wavelength={self.wavelength} A: the wavelength must be positive (in A)."
            )
        if self.goniometer_axis is not None:
            a = np.asarray(self.goniometer_axis, dtype=float)
            if a.shape != (3,) or not np.linalg.norm(a) > 0:
                raise GonioError(
                    f"goniometer.axis={self.goniometer_axis}: give three numbers "
                    "not all zero, e.g. goniometer.axis=1,0,0."
                )
        if self.fast_slow_beam_centre is not None and self.mosflm_beam_centre is not None:
            raise GonioError(
                "Both fast_slow_beam_centre and mosflm_beam_centre were given; give "
                "the beam centre once, in one convention."
            )
        if self.trusted_range is not None and not self.trusted_range[0] < self.trusted_range[1]:
            raise GonioError(
                f"trusted_range={self.trusted_range}: the minimum must be below the maximum."
            )


# -- inputs -> files -----------------------------------------------------------------------
def _template_regex(template: str) -> re.Pattern:
    name = os.path.basename(template)
    parts = re.split(r"(#+)", name)
    pattern = "".join(f"(\\d{{{len(p)}}})" if p.startswith("#") else re.escape(p) for p in parts)
    return re.compile(pattern + "$")


def _files_of_template(template: str) -> list[str]:
    folder = os.path.dirname(os.path.abspath(template))
    if not os.path.isdir(folder):
        raise ImageImportError(
            f"The folder {folder} of the template {template} does not exist. Check the path."
        )
    rx = _template_regex(template)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if rx.match(f))
    if not files:
        raise ImageImportError(
            f"No files match the template {template} (each # stands for one digit "
            f"of the image number) in {folder}. Check the name and the number of #."
        )
    return files


def expand_inputs(inputs: list[str]) -> list[tuple[str, bool]]:
    """(absolute path, given explicitly) for every file named by the inputs."""
    out: list[tuple[str, bool]] = []
    for item in inputs:
        item = os.path.expanduser(str(item))
        if "#" in os.path.basename(item) and not os.path.exists(item):
            out += [(f, True) for f in _files_of_template(item)]
        elif os.path.isdir(item):
            names = sorted(n for n in os.listdir(item) if not n.startswith("."))
            files = [f for f in (os.path.join(os.path.abspath(item), n) for n in names)
                     if os.path.isfile(f)]
            if not files:
                raise ImageImportError(
                    f"The folder {os.path.abspath(item)} holds no files (hidden ones and "
                    "sub-folders aside). Give the folder of the images, the image files or "
                    "their template with # for the image number, e.g. /data/x_#####.cbf.")
            out += [(f, False) for f in files]
        elif os.path.exists(item):
            out.append((os.path.abspath(item), True))
        elif any(c in item for c in "*?["):
            matches = sorted(glob.glob(item))
            if not matches:
                raise ImageImportError(f"No files match {item}. Check the path and the pattern.")
            out += [(os.path.abspath(m), True) for m in matches if os.path.isfile(m)]
        else:
            raise ImageImportError(
                f"The file or folder {item} does not exist. Check the path (and "
                "that the disk holding the images is mounted)."
            )
    return out


def split_name(path: str) -> tuple[str, str, str, int] | None:
    """(folder/prefix, digits, suffix, number) of an image file name, None without a number.

    The number is the last run of digits before the extension (and before
    .gz/.bz2): ``thau_3_2_0001.cbf.bz2`` -> ('.../thau_3_2_', '0001', '.cbf.bz2', 1).
    """
    folder, name = os.path.split(path)
    stem, suffix = name, ""
    for c in _COMPRESSION_SUFFIXES:
        if stem.endswith(c):
            stem, suffix = stem[: -len(c)], c
    stem, ext = os.path.splitext(stem)
    m = re.match(r"^(.*?)(\d+)(\D*)$", stem)
    if not m:
        return None
    return os.path.join(folder, m.group(1)), m.group(2), m.group(3) + ext + suffix, int(m.group(2))


# -- grouping -------------------------------------------------------------------------------
@dataclass
class _Group:
    fmt: type
    template: str  # absolute, with #; or the file itself
    files: dict  # number -> path


def _group_files(files: list[tuple[str, bool]]) -> list[_Group]:
    """Group by file name first (no I/O), then identify one file of each group.

    Identifying every file would cost a decompression of each bzip2 file
    (about 0.1 s each); the first and last file of a sweep are read anyway.
    """
    by_name: dict[tuple, dict[int, str]] = {}
    explicit: dict[tuple, bool] = {}
    for path, given in files:
        parts = split_name(path)
        if parts is None:
            key, number = (path,), 1
        else:
            prefix, digits, suffix, number = parts
            key = (prefix, len(digits), suffix)
        by_name.setdefault(key, {})[number] = path
        explicit[key] = explicit.get(key, False) or given
    groups = []
    for key, numbered in by_name.items():
        first = numbered[min(numbered)]
        try:
            fmt = identify(first)
        except ImageFormatError:
            if explicit[key]:
                raise
            continue  # not an image, inside a folder: ignore it
        if fmt.name == NXmx.name:  # each master file holds its own sweep
            groups += [_Group(fmt, p, {1: p}) for _, p in sorted(numbered.items())]
        elif len(key) == 1:
            groups.append(_Group(fmt, first, {1: first}))
        else:
            groups.append(_Group(fmt, key[0] + "#" * key[1] + key[2], numbered))
    if not groups:
        folders = sorted({os.path.dirname(p) for p, given in files if not given})
        where = f" in {', '.join(folders)}" if folders else ""
        raise ImageImportError(
            f"None of the {len(files)} file{'s' if len(files) != 1 else ''}{where} is an image "
            f"gonio can read (it reads {supported_formats()}, optionally gzip or bzip2 "
            "compressed). Give the image files, a folder of them, or their template with # "
            "for the image number, e.g. /data/x_#####.cbf.")
    return groups


def _same_detector(a: Detector, b: Detector) -> bool:
    return len(a) == len(b) and all(
        p.image_size == q.image_size and np.allclose(p.pixel_size, q.pixel_size)
        for p, q in zip(a, b)
    )


# -- overrides ------------------------------------------------------------------------------
def _beam_panel(detector: Detector, beam: Beam) -> int:
    panel, _ = detector.ray_intersection(beam.s0[None, :])
    return int(panel[0]) if panel[0] >= 0 else 0


def set_distance(detector: Detector, distance: float) -> Detector:
    """Move the detector along its normal so that the (first) panel is ``distance`` mm away."""
    p0 = detector[0]
    n = p0.normal if p0.origin @ p0.normal >= 0 else -p0.normal
    shift = (distance - p0.origin @ n) * n
    return detector.replace(panels=[p.replace(origin=p.origin + shift) for p in detector])


def set_beam_centre_mm(detector: Detector, beam: Beam, fast_slow_mm) -> Detector:
    """Move the detector in its plane so the beam meets the beam's panel at (fast, slow) mm."""
    i = _beam_panel(detector, beam)
    p = detector[i]
    bx, by = p.beam_centre_mm(beam.s0)
    shift = (bx - fast_slow_mm[0]) * p.fast_axis + (by - fast_slow_mm[1]) * p.slow_axis
    return detector.replace(panels=[q.replace(origin=q.origin + shift) for q in detector])


def apply_overrides(experiments: ExperimentList, o: ImportOverrides) -> ExperimentList:
    """New experiments with the overrides applied to their models (the inputs are unchanged).

    Experiments that share models keep sharing the overridden copies.
    """
    o.validate()
    memo: dict[tuple, tuple] = {}
    out = ExperimentList()
    for e in experiments:
        if e.beam is None or e.detector is None:
            out.append(e)
            continue
        key = (id(e.beam), id(e.detector), id(e.goniometer), id(e.scan))
        if key not in memo:
            memo[key] = override_models(e.beam, e.detector, e.goniometer, e.scan, o)
        beam, detector, goniometer, scan = memo[key]
        out.append(e.replace(beam=beam, detector=detector, goniometer=goniometer, scan=scan))
    return out


def override_models(
    beam: Beam,
    detector: Detector,
    goniometer: Goniometer | None,
    scan: Scan | None,
    o: ImportOverrides,
):
    """The models with the overrides applied (new objects; the inputs are unchanged)."""
    if o.wavelength is not None:
        beam = beam.replace(wavelength=float(o.wavelength))
    if o.distance is not None:
        detector = set_distance(detector, float(o.distance))
    if o.fast_slow_beam_centre is not None:
        p = detector[_beam_panel(detector, beam)]
        f, s = o.fast_slow_beam_centre
        detector = set_beam_centre_mm(detector, beam, (f * p.pixel_size[0], s * p.pixel_size[1]))
    if o.mosflm_beam_centre is not None:
        slow_mm, fast_mm = o.mosflm_beam_centre
        detector = set_beam_centre_mm(detector, beam, (fast_mm, slow_mm))
    if o.trusted_range is not None:
        detector = detector.replace(
            panels=[p.replace(trusted_range=tuple(o.trusted_range)) for p in detector]
        )
    if o.goniometer_axis is not None and goniometer is not None:
        goniometer = goniometer.with_rotation_axis(o.goniometer_axis)
    if o.oscillation is not None and scan is not None:
        scan = scan.replace(oscillation=tuple(float(x) for x in o.oscillation))
    return beam, detector, goniometer, scan


# -- the step -------------------------------------------------------------------------------
def import_images(
    inputs: list[str],
    image_range: tuple[int, int] | None = None,
    overrides: ImportOverrides | None = None,
) -> ExperimentList:
    """Experiments for the images named by ``inputs`` (headers only, no pixels read).

    ``image_range`` (first, last), inclusive, selects images of every sweep
    by their file number (by frame number, from 1, inside an HDF5 file).
    """
    overrides = overrides or ImportOverrides()
    overrides.validate()
    if not inputs:
        raise ImageImportError(
            "No images given: name image files, a template (name_####.cbf) or a folder."
        )
    if image_range is not None and not (0 <= image_range[0] <= image_range[1]):
        raise ImageImportError(
            f"image_range={image_range[0]},{image_range[1]}: give first,last with first <= last."
        )
    experiments = ExperimentList()
    for group in _group_files(expand_inputs(inputs)):
        experiments.extend(_import_group(group, image_range, overrides))
    return share_models(experiments)


# -- shared models --------------------------------------------------------------------------
#: tolerances of dials.import (``input.tolerance``): unit vectors and rotation matrices
#: 1e-6, wavelength 1e-6 (relative), detector origin 0.05 mm
AXIS_TOLERANCE = 1e-6
ORIGIN_TOLERANCE_MM = 5e-2


def _close(a, b, tol: float = AXIS_TOLERANCE, absolute: bool = False) -> bool:
    """Two to_dict() trees equal: numbers within ``tol`` relative to their size (at least
    1), or within ``tol`` absolutely; the detector origin within ORIGIN_TOLERANCE_MM."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _close(a[k], b[k], ORIGIN_TOLERANCE_MM, True) if k == "origin" else
            _close(a[k], b[k], tol, absolute) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(
            _close(x, y, tol, absolute) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= tol * (1.0 if absolute else max(1.0, abs(a), abs(b)))
    return a == b


def share_models(experiments: ExperimentList) -> ExperimentList:
    """The experiments with equal beams, detectors and goniometers made one shared object.

    As dials.import (dxtbx merges the models of consecutive imagesets that compare equal
    within ``input.tolerance``): sweeps taken on one instrument share one beam and one
    detector, so joint refinement refines one model of each; a goniometer is shared
    only when its axes and setting agree (a different kappa/omega setting is its own
    goniometer). Scans stay one per sweep. Models already shared stay shared.
    """
    seen: dict[str, list] = {"beam": [], "detector": [], "goniometer": []}
    out = ExperimentList()
    for e in experiments:
        kw = {}
        for kind, pool in seen.items():
            model = getattr(e, kind)
            if model is None:
                continue
            same = next((m for m in pool if m is model or
                         _close(m.to_dict(), model.to_dict())), None)
            if same is None:
                pool.append(model)
            elif same is not model:
                kw[kind] = same
        out.append(e.replace(**kw) if kw else e)
    return out


def _within(image_range, lo: int, hi: int, source: str) -> tuple[int, int]:
    """The image range to import: ``image_range`` if it lies within lo..hi, else an error."""
    if image_range is None:
        return lo, hi
    if image_range[0] < lo or image_range[1] > hi:
        raise ImageImportError(
            f"image_range={image_range[0]},{image_range[1]} is outside the images of {source}, "
            f"which are numbered {lo} to {hi}. Give a range within them."
        )
    return tuple(image_range)


def _import_group(g: _Group, image_range, o: ImportOverrides) -> list[Experiment]:
    if g.fmt.name == NXmx.name:
        return _import_hdf5(g, image_range, o)
    numbers = sorted(g.files)
    lo, hi = _within(image_range, numbers[0], numbers[-1], g.template)
    missing = [n for n in range(lo, hi + 1) if n not in g.files]
    if missing:
        shown = ", ".join(str(n) for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ImageImportError(
            f"The images of {g.template} from {lo} to {hi} are not numbered contiguously: "
            f"{len(missing)} missing ({shown}). Import the contiguous parts separately with "
            "image_range, or find the missing files."
        )
    first = g.fmt.read_models(g.files[lo])
    last = g.fmt.read_models(g.files[hi]) if hi != lo else first
    beam, detector, goniometer, scan = first
    if not _same_detector(detector, last[1]):
        raise ImageImportError(
            f"The images of {g.template} come from different detectors: image {lo} is "
            f"{_describe(detector)} but image {hi} is {_describe(last[1])}. Import them "
            "separately (image_range, or separate templates)."
        )
    if o.oscillation is not None:
        scan = scan.replace(oscillation=tuple(float(x) for x in o.oscillation))
    n = hi - lo + 1
    start, width = scan.oscillation
    if width != 0.0 and n > 1 and o.oscillation is None:
        expected = start + (hi - lo) * width
        if abs(last[3].oscillation[0] - expected) > max(1e-3, 0.05 * abs(width)):
            raise ImageImportError(
                f"The rotation in the headers of {g.template} is not continuous: image {lo} "
                f"starts at {start} deg with {width} deg per image, so image {hi} should start at "
                f"{expected:.4f} deg, but its header says {last[3].oscillation[0]} deg. Import "
                "the sweeps separately, or give oscillation=start,width."
            )
    if width == 0.0:
        return _stills(g, range(lo, hi + 1), beam, detector, o)
    epochs = np.linspace(scan.epochs[0], last[3].epochs[0], n) if n > 1 else scan.epochs
    scan = Scan(
        image_range=(lo, hi),
        oscillation=(start, width),
        exposure_time=np.full(n, scan.exposure_time[0]),
        epochs=epochs,
    )
    beam, detector, goniometer, scan = override_models(beam, detector, goniometer, scan, o)
    ref = ImageSetRef(kind="ImageSequence", template=g.template, format=g.fmt.name)
    return [
        Experiment(beam=beam, detector=detector, goniometer=goniometer, scan=scan, imageset=ref)
    ]


def _stills(g: _Group, numbers, beam, detector, o: ImportOverrides) -> list[Experiment]:
    beam, detector, _, _ = override_models(beam, detector, None, None, o)
    out = []
    for n in numbers:
        ref = ImageSetRef(kind="ImageSet", paths=[g.files[n]], format=g.fmt.name)
        out.append(Experiment(beam=beam, detector=detector, imageset=ref))
    return out


def _import_hdf5(g: _Group, image_range, o: ImportOverrides) -> list[Experiment]:
    master = g.template
    beam, detector, goniometer, scan = g.fmt.read_models(master)
    lo, hi = _within(image_range, *scan.image_range, master)
    start, width = scan.oscillation
    scan = Scan(image_range=(lo, hi), oscillation=(start + (lo - 1) * width, width))
    if o.oscillation is not None:
        scan = scan.replace(oscillation=tuple(float(x) for x in o.oscillation))
    if scan.oscillation[1] == 0.0:
        beam, detector, _, _ = override_models(beam, detector, None, None, o)
        return [
            Experiment(
                beam=beam,
                detector=detector,
                imageset=ImageSetRef(
                    kind="ImageSet", template=master, single_file_indices=[k - 1], format=g.fmt.name
                ),
            )
            for k in range(lo, hi + 1)
        ]
    beam, detector, goniometer, scan = override_models(beam, detector, goniometer, scan, o)
    ref = ImageSetRef(kind="ImageSequence", template=master, format=g.fmt.name)
    return [
        Experiment(beam=beam, detector=detector, goniometer=goniometer, scan=scan, imageset=ref)
    ]


def _describe(d: Detector) -> str:
    p = d[0]
    return (
        f"{len(d)} panel(s) of {p.image_size[0]} x {p.image_size[1]} pixels of "
        f"{p.pixel_size[0]:g} mm"
    )


__all__ = [
    "ImportOverrides",
    "apply_overrides",
    "expand_inputs",
    "import_images",
    "override_models",
    "set_beam_centre_mm",
    "set_distance",
    "share_models",
    "split_name",
    "template_path",
]
