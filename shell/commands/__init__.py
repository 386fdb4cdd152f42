"""The gonio commands: declared here, implemented in the modules they name.

Parameter lists are functions so that nothing is built until a command is
used; the run functions are imported on first use.
"""

from __future__ import annotations

import difflib

from gonio.core.errors import GonioError
from gonio.shell.command import Command
from gonio.shell.commands.process import ProcessCommand
from gonio.shell.params import Param


class UnknownCommandError(GonioError):
    pass


def _no_params() -> list[Param]:
    return []


def _import_params() -> list[Param]:
    return [
        Param("input.template", "str", None, "an image template, e.g. /data/th_8_2_####.cbf "
              "(files can also be given as positional words)", allow_none=True),
        Param("input.image_range", "ints", None, "first,last image to import from the template",
              length=2, allow_none=True),
        Param("geometry.detector.distance", "float", None, "sample-to-detector distance, replacing "
              "the header's (moves the detector along its normal)", units="mm", min=0,
              min_exclusive=True, allow_none=True),
        Param("geometry.detector.fast_slow_beam_centre", "floats", None, "beam centre as (fast, slow) "
              "pixel coordinates", units="px", length=2, allow_none=True),
        Param("geometry.detector.mosflm_beam_centre", "floats", None, "beam centre in the mosflm "
              "convention (slow, fast) in mm", units="mm", length=2, allow_none=True),
        Param("geometry.detector.panel.trusted_range", "floats", None, "trusted range of pixel "
              "values (min, max); values at or below min are invalid", length=2, allow_none=True,
              expert_level=1),
        Param("geometry.beam.wavelength", "float", None, "wavelength, replacing the header's",
              units="A", min=0, min_exclusive=True, allow_none=True),
        Param("geometry.goniometer.axis", "floats", None, "rotation axis in the lab frame; its sign "
              "is the rotation sense (e.g. -107,-122,0)", length=3, allow_none=True),
        Param("geometry.scan.oscillation", "floats", None, "start angle and oscillation width",
              units="deg", length=2, allow_none=True),
        Param("geometry.from", "choice", "imported", "overrides without files start from the "
              "models as last imported on this branch (the header with this value changed), "
              "or from the current (refined) ones", choices=("imported", "current")),
    ]


def _save_params() -> list[Param]:
    return [
        Param("output.prefix", "str", None, "write PREFIX.expt and PREFIX.refl (default: named after "
              "the newest table: imported, strong, indexed, ...)", allow_none=True),
        Param("output.table", "str", None, "which reflection table to write (default: the newest)",
              allow_none=True),
    ]


def _show_params() -> list[Param]:
    return [Param("show_all", "bool", False, "also list every panel of a multi-panel detector")]


def _history_params() -> list[Param]:
    return [Param("script", "bool", False, "print the current branch as a gonio script instead"),
            Param("all", "bool", False, "draw every branch in full (--all); by default side "
                  "branches of the current one are folded to one line each")]


def _ab_params() -> list[Param]:
    return []


def _findspots_params() -> list[Param]:
    from gonio.shell.commands.findspots import params

    return params()


def _index_params() -> list[Param]:
    from gonio.shell.commands.index import params

    return params()


def _rbs_params() -> list[Param]:
    from gonio.shell.commands.rbs import rbs_params

    return rbs_params()


def _reindex_params() -> list[Param]:
    from gonio.shell.commands.rbs import reindex_params

    return reindex_params()


def _beam_search_params() -> list[Param]:
    from gonio.shell.commands.beam_search import params

    return params()


def _refine_params() -> list[Param]:
    from gonio.shell.commands.refine import params

    return params()


def _simulate_params() -> list[Param]:
    from gonio.shell.commands.simulate import params

    return params()


def _params_of(module: str):
    """A params function that imports ``gonio.shell.commands.<module>`` only when called."""

    def load() -> list[Param]:
        import importlib

        return importlib.import_module(f"gonio.shell.commands.{module}").params()

    return load


COMMANDS: list[Command] = [
    Command("import", "import images, DIALS .expt/.refl or XDS.INP/SPOT.XDS (or re-import with "
            "new geometry)", "gonio.shell.commands.importing:run", _import_params,
            usage="[files or template...] [overrides]", takes_words=True),
    Command("show", "show the models like dials.show (beam, detector, scan, goniometer, crystals)",
            "gonio.shell.commands.show:run", _show_params, step=False),
    Command("findspots", "find strong spots on every image (dials.find_spots)",
            "gonio.shell.commands.findspots:run", _findspots_params, aliases=("find_spots",)),
    Command("search_beam_position", "find the beam centre from the strong spots when the header's is "
            "off (Sauter et al. 2004)", "gonio.shell.commands.beam_search:run", _beam_search_params),
    Command("find_rotation_axis", "the rotation-axis azimuth from the strong spots of 3D-ED data "
            "(Gorelik et al.), applied as a new import step",
            "gonio.shell.commands.find_rotation_axis:run", _params_of("find_rotation_axis")),
    Command("generate_mask", "a pixel mask (border, resolution, ice rings, untrusted shapes, or "
            "a mask file) that findspots and integrate then use (dials.generate_mask)",
            "gonio.shell.commands.generate_mask:run", _params_of("generate_mask")),
    Command("index", "find the lattice, assign indices and refine a static model (dials.index)",
            "gonio.shell.commands.index:run", _index_params),
    Command("refine_bravais_settings", "Bravais lattices compatible with the P1 solution, each refined",
            "gonio.shell.commands.rbs:run_rbs", _rbs_params, aliases=("rbs",)),
    Command("reindex", "change of basis of crystals and Miller indices (an rbs solution, an operator, "
            "or a reference)", "gonio.shell.commands.rbs:run_reindex", _reindex_params),
    Command("refine", "refine the models: static, then scan-varying (smoothed over the scan) "
            "when the scan allows (dials.refine)",
            "gonio.shell.commands.refine:run", _refine_params),
    Command("integrate", "predict every reflection and measure its intensity by summation and 3D "
            "profile fitting (dials.integrate)", "gonio.shell.commands.integrate:run",
            _params_of("integrate")),
    Command("symmetry", "the Laue group and space group from the intensities; reindex into it "
            "(dials.symmetry)", "gonio.shell.commands.symmetry:run", _params_of("symmetry")),
    Command("scale", "scale the integrated intensities with a physical model; merging statistics "
            "(dials.scale)", "gonio.shell.commands.scale:run", _params_of("scale")),
    Command("merge", "merge symmetry equivalents into merged.mtz, with French-Wilson amplitudes "
            "(dials.merge)", "gonio.shell.commands.merge:run", _params_of("merge")),
    Command("export", "write the reflections for other programs: MTZ, XDS_ASCII, SHELX, mmCIF "
            "(dials.export)", "gonio.shell.commands.export:run", _params_of("export"),
            takes_words=True),
    ProcessCommand("process", "the whole pipeline, import to export, each step recorded as if "
                   "typed (dials.process, xia2); step parameters as index.max_lattices=2",
                   "gonio.shell.commands.process:run", step=False,
                   usage="[images or template...] [step.param=value...] [stop_after=STEP]",
                   takes_words=True),
    Command("report", "write one self-contained HTML report of the session: history tree, models "
            "and the plots of every step (dials.report)", "gonio.shell.commands.report:run",
            _params_of("report"), step=False, usage="[output=FILE] [compare=A,B]"),
    Command("view", "pictures: an image with spots and predictions (PNG), the reciprocal lattice "
            "(3D HTML), the spot-finding threshold stages", "gonio.shell.commands.view:run",
            _params_of("view"), step=False, usage="image=N | lattice | threshold image=N",
            takes_words=True),
    Command("simulate", "write a simulated rotation sweep with known truth",
            "gonio.shell.commands.simulate:run", _simulate_params),
    Command("split", "keep only some experiments (split experiments=0,2, a new step), or "
            "write one file pair per experiment (dials.split_experiments)",
            "gonio.shell.commands.split:run", _params_of("split"),
            usage="[experiments=N,M] [output.prefix=split]"),
    Command("save", "write DIALS files of the current state (PREFIX.expt, PREFIX.refl)",
            "gonio.shell.commands.save:run", _save_params, step=False,
            stray_hint="did you mean output.prefix={word}?"),
    Command("history", "the step tree with each step's parameters and key figures",
            "gonio.shell.commands.history:run_history", _history_params, step=False,
            takes_words=True),
    Command("undo", "move back to the previous step", "gonio.shell.commands.history:run_undo",
            _no_params, step=False, stray_hint="goto N moves to step N."),
    Command("redo", "move forward again after undo", "gonio.shell.commands.history:run_redo",
            _no_params, step=False, stray_hint="goto N moves to step N."),
    Command("goto", "move to step N", "gonio.shell.commands.history:run_goto", _no_params,
            step=False, usage="N", takes_words=True),
    Command("diff", "what changed between two steps (models and figures)",
            "gonio.shell.commands.history:run_diff", _ab_params, step=False, usage="A B",
            takes_words=True),
    Command("forget", "drop step N and every step made from it (a branch you no longer want); "
            "`gonio gc` then frees its disk space", "gonio.shell.commands.history:run_forget",
            _no_params, step=False, usage="N", takes_words=True),
    Command("help", "list commands, or show one command's parameters", "gonio.shell.commands.help:run",
            _no_params, step=False, usage="[command or parameter] [expert_level=N]",
            takes_words=True),
]


def _try_command() -> Command:
    """``try`` takes other commands' lines as its words (gonio.shell.commands.try_)."""
    from gonio.shell.commands.try_ import TryWords

    return Command("try", "what-if branches: run a step once per value of one parameter "
                   "(v1|v2|...) from the current step and compare them in one table",
                   "gonio.shell.commands.try_:run", _no_params, step=False,
                   usage="STEP param=v1|v2|... [then STEP2 ...]", _paramset=TryWords("try", []),
                   takes_words=True)


COMMANDS.append(_try_command())

_BY_NAME = {c.name: c for c in COMMANDS} | {a: c for c in COMMANDS for a in c.aliases}


def command_names() -> list[str]:
    return sorted(_BY_NAME)


def lookup(name: str) -> Command:
    if name in _BY_NAME:
        return _BY_NAME[name]
    close = difflib.get_close_matches(name, list(_BY_NAME), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UnknownCommandError(f"'{name}' is not a gonio command.{hint} Type 'help' for the list of commands.")
