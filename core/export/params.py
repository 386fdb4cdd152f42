"""Parameters of export (names and defaults as in dials.export)."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param as _p

FORMATS = ("mtz", "xds_ascii", "shelx", "mmcif", "json")




@dataclass
class ExportParams:
    """Write the reflections for other programs (dials.export)."""

    format: str = _p("mtz", "Output format: mtz (unmerged, for POINTLESS/AIMLESS), xds_ascii "
                     "(XDS_ASCII.HKL, for XSCALE), shelx (HKLF 4 + .ins), mmcif (unmerged "
                     "PDBx diffrn_refln), json (reciprocal-lattice points for viewers).",
                     "format", choices=list(FORMATS), primary=True)
    intensity: list = _p([], "Which intensities: scale, profile, sum, profile+sum or "
                         "profile+sum+scale (default: scale for scaled data, else profile+sum).",
                         "intensity", choices=["profile", "sum", "scale"])
    split_experiments: bool = _p(False, "One file per experiment (NAME_0.ext, NAME_1.ext, ...); "
                                 "xds_ascii always splits several experiments.",
                                 "split_experiments")
    mtz_hklout: str | None = _p(None, "MTZ file name (default scaled.mtz after scaling, "
                                "integrated.mtz before).", "mtz.hklout")
    partiality_threshold: float = _p(0.99, "Keep reflections whose (combined) partiality is at "
                                     "least this.", "mtz.partiality_threshold", min=0, max=1)
    combine_partials: bool = _p(True, "Combine partials of one reflection (same partial_id) "
                                "into one, with the summed partiality.", "mtz.combine_partials")
    min_isigi: float | None = _p(-5.0, "Leave out reflections with I/sigma below this "
                                 "(implausible values).", "mtz.min_isigi")
    filter_ice_rings: bool = _p(False, "Leave out reflections flagged in ice rings.",
                                "mtz.filter_ice_rings")
    d_min: float | None = _p(None, "Leave out reflections with d below this.", "mtz.d_min",
                             units="A", min=0, min_exclusive=True)
    force_static_model: bool = _p(False, "Batch headers from the static crystal model even when "
                                  "a scan-varying one exists.", "mtz.force_static_model")
    crystal_name: str = _p("XTAL", "Crystal name in the MTZ.", "mtz.crystal_name")
    project_name: str = _p("DIALS", "Project name in the MTZ.", "mtz.project_name")
    best_unit_cell: tuple | None = _p(None, "Cell for d and the file headers (default: the "
                                      "mean over the experiments).", "mtz.best_unit_cell",
                                      units="A,deg", type="unit_cell")
    wavelength_tolerance: float = _p(1e-4, "Experiments whose wavelengths differ by less than "
                                     "this share an MTZ dataset.", "mtz.wavelength_tolerance",
                                     units="A", min=0)
    xds_ascii_hklout: str = _p("DIALS.HKL", "XDS_ASCII file name (dials.export's default).",
                               "xds_ascii.hklout")
    shelx_hklout: str = _p("dials.hkl", "SHELX HKLF 4 file name.", "shelx.hklout")
    shelx_ins: str = _p("dials.ins", "SHELX instruction (.ins) file name.", "shelx.ins")
    shelx_composition: str = _p("CH", "Contents of the asymmetric unit for SFAC/UNIT, e.g. "
                                "C3H7NO2S.", "shelx.composition")
    shelx_scale: bool = _p(True, "Scale I and sigma to use the whole F8.2 field.", "shelx.scale")
    shelx_scale_range: tuple = _p((-9999.0, 9999.0), "Smallest and largest value after scaling.",
                                  "shelx.scale_range", type="floats", length=2)
    mmcif_hklout: str | None = _p(None, "mmCIF file name (default scaled.cif after scaling, "
                                  "integrated.cif before).", "mmcif.hklout")
    json_filename: str = _p("rlp.json", "JSON file name.", "json.filename")
    json_compact: bool = _p(True, "Compact JSON (no indentation).", "json.compact")
    json_n_digits: int = _p(6, "Decimals of the reciprocal-lattice coordinates.",
                            "json.n_digits", min=1)
