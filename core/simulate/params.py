"""Parameters of a simulated rotation sweep, and the named presets.

Every field carries ``metadata``: ``help`` (one line), ``units``, ``kind``
(how to parse a value typed on a command line: "int", "float", "bool", "str",
"path", "choice", "space_group", "floats:N" / "ints:N" for N comma-separated
numbers), ``choices`` where there are some, and ``name``, the parameter's
name on the command line (``header.distance`` for the field
``header_distance``). A command layer can list, parse and document them from
``fields(SimulationParams)`` or :meth:`SimulationParams.describe` without a
separate table. ``None`` is allowed wherever the default is ``None``.

Presets: :meth:`SimulationParams.from_preset` applies a preset under exactly
the values given; a plain ``SimulationParams(preset=...)`` gets the preset
under every field that differs from its default (:func:`resolve`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from ..errors import GonioError


class SimulationParamsError(GonioError):
    pass


def _f(default, help, units="", choices=None, kind=None, name=None):
    if kind is None:
        kind = "choice" if choices else {bool: "bool", int: "int", float: "float",
                                         str: "str"}.get(type(default), "float")
    meta = {"help": help, "units": units, "kind": kind}
    if choices:
        meta["choices"] = tuple(choices)
    if name:
        meta["name"] = name
    return field(default=default, metadata=meta)


FORMATS = ("cbf", "smv", "nexus")
DETECTORS = ("pilatus", "eiger", "timepix", "multipanel")

PRESETS: dict[str, dict] = {
    "lysozyme": dict(space_group="P 43 21 2", unit_cell=(79.1, 79.1, 37.9, 90, 90, 90),
                     wavelength=0.9795, distance=200.0, detector="pilatus", osc=0.5,
                     n_images=90, d_min=1.8),
    "insulin": dict(space_group="I 2 3", unit_cell=(78.9, 78.9, 78.9, 90, 90, 90),
                    wavelength=0.9763, distance=220.0, detector="pilatus", osc=0.5,
                    n_images=90, d_min=2.0),
    "orthorhombic": dict(space_group="P 21 21 21", unit_cell=(54.9, 58.6, 67.6, 90, 90, 90),
                         wavelength=1.0332, distance=180.0, detector="eiger", osc=0.2,
                         n_images=100, format="nexus", d_min=1.8),
    "ed_c2": dict(space_group="C 1 2 1", unit_cell=(99.06, 31.01, 54.30, 90, 107.7, 90),
                  wavelength=0.0251, distance=1762.0, header_distance=2193.0,
                  header_axis_reversed=True, detector="timepix", image_size=(516, 516),
                  osc=0.91, n_images=72, format="smv", sigma_m=0.3, sigma_b=0.002,
                  b_factor=30.0, mean_intensity=600.0, solvent_ring=0.0, background=0.3),
    "small_molecule": dict(space_group="P 21 21 21", unit_cell=(5.43, 8.14, 12.04, 90, 90, 90),
                           wavelength=0.6889, distance=60.0, detector="pilatus", osc=1.0,
                           n_images=90, b_factor=2.0, sigma_m=0.2, solvent_ring=0.0,
                           mean_intensity=20000.0, d_min=0.8),
    "two_lattice": dict(space_group="P 21 21 21", unit_cell=(54.9, 58.6, 67.6, 90, 90, 90),
                        wavelength=0.9795, distance=200.0, detector="pilatus", osc=0.5,
                        n_images=90, n_lattices=2, d_min=2.2),
}


@dataclass
class SimulationParams:
    """A rotation sweep to simulate. ``None`` means "choose from the preset / detector"."""

    preset: str | None = _f(None, "start from a named preset (its values, then yours)", "",
                            choices=tuple(PRESETS))
    output: str | None = _f(None, "folder for images and truth files (None: keep in memory)",
                            "", kind="path")
    prefix: str = _f("image", "image file name prefix (name_#####.ext)")
    format: str = _f("cbf", "image file format", "", FORMATS)
    n_images: int = _f(20, "number of images in the sweep", "images")
    osc: float = _f(0.5, "oscillation width per image", "deg")
    phi_start: float = _f(0.0, "rotation angle at the start of the first image", "deg")
    exposure_time: float = _f(0.1, "exposure time per image (header only)", "s")
    # crystal
    space_group: str = _f("P 43 21 2", "space group (any symbol gemmi knows)",
                          kind="space_group")
    unit_cell: tuple = _f((79.1, 79.1, 37.9, 90.0, 90.0, 90.0),
                          "unit cell a, b, c, alpha, beta, gamma", "A, deg", kind="floats:6")
    orientation: tuple | None = _f(None, "crystal orientation as rotations about lab x, y, z "
                                   "(None: random from the seed)", "deg", kind="floats:3")
    d_min: float | None = _f(None, "resolution limit of the crystal (None: the detector corner)",
                             "A")
    b_factor: float = _f(20.0, "overall Wilson B factor of the structure factors", "A^2")
    intensities: str | None = _f(None, "MTZ file (or text file 'h k l I') with intensities; "
                                 "None: Wilson-random on the asymmetric unit", kind="path")
    mean_intensity: float = _f(2000.0, "expected counts of an average full reflection at "
                               "median Lorentz-polarisation, before the B factor", "counts")
    sigma_m: float = _f(0.1, "mosaicity (Gaussian sigma of the reflecting range)", "deg")
    sigma_b: float = _f(0.02, "beam divergence (Gaussian sigma of the spot)", "deg")
    spot_sigma: float = _f(0.8, "extra spot width from crystal and beam size", "px")
    n_lattices: int = _f(1, "number of crystals in the beam (1 or 2)")
    lattice2_rotation: tuple = _f((0.0, 12.0, 31.0), "orientation of the second crystal "
                                  "relative to the first (rotations about x, y, z)", "deg",
                                  kind="floats:3")
    lattice2_scale: float = _f(0.6, "intensity of the second crystal relative to the first")
    crystal_drift: tuple = _f((0.0, 0.0, 0.0), "slow rotation of the crystal(s) over the whole "
                              "scan, as a rotation vector about lab x, y, z (angle grows "
                              "linearly with the image; written as A_at_scan_points)", "deg",
                              kind="floats:3")
    # beam
    wavelength: float = _f(0.9795, "wavelength (0.02 to 2)", "A")
    polarization_fraction: float | None = _f(None, "fraction polarised in the horizontal plane "
                                             "(None: 0.999 for X-rays, 0.5 for electrons)")
    # detector
    detector: str = _f("pilatus", "detector type: pixel size, gaps, overload", "", DETECTORS)
    image_size: tuple | None = _f((1024, 1024), "image size (fast, slow) per panel", "px",
                                  kind="ints:2")
    pixel_size: float | None = _f(None, "pixel size (None: 0.172 Pilatus, 0.075 Eiger, "
                                  "0.055 Timepix)", "mm")
    distance: float = _f(200.0, "sample to detector distance", "mm")
    beam_centre: tuple | None = _f(None, "beam centre (fast, slow) (None: image centre)", "px",
                                  kind="floats:2")
    rotation_axis: tuple | None = _f(None, "true rotation axis in the lab frame (None: +x, or "
                                     "what the header errors imply for CBF/SMV)",
                                     kind="floats:3")
    gaps: bool = _f(True, "mask module gaps as the real detector does")
    gain: float = _f(1.0, "detector gain (ADU per photon)", "ADU")
    background: float = _f(1.0, "constant background per pixel", "photons")
    solvent_ring: float = _f(2.0, "peak height of the solvent ring (d = 3.7 A)", "photons")
    overload: float | None = _f(None, "overload (trusted-range maximum) (None: per detector)",
                                "counts")
    noise: bool = _f(True, "add Poisson noise")
    # deliberate header errors (the truth keeps the real values)
    header_distance: float | None = _f(None, "distance written in the header", "mm",
                                       name="header.distance")
    header_beam_centre_offset: tuple = _f((0.0, 0.0), "beam centre error written in the "
                                          "header (fast, slow)", "px", kind="floats:2",
                                          name="header.beam_centre_offset")
    header_wavelength: float | None = _f(None, "wavelength written in the header", "A",
                                         name="header.wavelength")
    header_axis_reversed: bool = _f(False, "the header's rotation axis has the wrong sense",
                                    name="header.axis_reversed")
    header_axis_rotated: float = _f(0.0, "the header's rotation axis is rotated about the "
                                    "beam by this angle", "deg", name="header.axis_rotated")
    # run
    seed: int = _f(0, "random seed (the same seed gives the same files)")
    nproc: int = _f(2, "threads used to make images")

    def replace(self, **kw) -> SimulationParams:
        """A copy with ``kw`` changed (an applied preset stays applied)."""
        new = replace(self, **kw)
        if getattr(self, "_applied_preset", None) == new.preset and new.preset is not None:
            _mark(new)
        return new

    @classmethod
    def describe(cls) -> list[dict]:
        """One dict per parameter: field, name (on the command line), default, help, units,
        kind and choices."""
        return [{"field": f.name, "name": f.metadata.get("name", f.name), "default": f.default,
                 **{k: v for k, v in f.metadata.items() if k != "name"}} for f in fields(cls)]

    @classmethod
    def from_preset(cls, preset: str | None, **explicit) -> SimulationParams:
        """The preset's values, then the ``explicit`` ones (exactly those, even where they
        equal the plain defaults). The way a command line should build its parameters."""
        if preset is None:
            return cls(**explicit)
        _check_preset(preset)
        return _mark(replace(cls(), **{**PRESETS[preset], **explicit, "preset": preset}))


def _check_preset(name: str) -> None:
    if name not in PRESETS:
        raise SimulationParamsError(
            f"unknown simulation preset {name!r}; choose one of "
            f"{', '.join(sorted(PRESETS))}, or give space_group, unit_cell etc. yourself.")


def resolve(params: SimulationParams) -> SimulationParams:
    """Apply the preset (if any) underneath the fields that differ from the defaults.

    (A field set explicitly to its plain default cannot be told apart here; build such
    parameters with :meth:`SimulationParams.from_preset`, which is exact.)
    """
    if params.preset is None or getattr(params, "_applied_preset", None) == params.preset:
        return params
    _check_preset(params.preset)
    defaults = SimulationParams()
    base = replace(defaults, **PRESETS[params.preset])
    changed = {f.name: getattr(params, f.name) for f in fields(params)
               if getattr(params, f.name) != getattr(defaults, f.name)}
    return _mark(replace(base, **changed))


def _mark(params: SimulationParams) -> SimulationParams:
    """Remember (outside the fields) that the preset is already applied."""
    object.__setattr__(params, "_applied_preset", params.preset)
    return params
