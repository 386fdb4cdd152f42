"""Tests for brace-syntax parameter files (gonio.shell.phil) and to_phil round trips."""

import pytest

from gonio.shell.params import Param, ParameterError, ParamSet, split_line, to_phil
from gonio.shell.phil import PhilSyntaxError, format_phil, parse_phil


def _refine() -> ParamSet:
    return ParamSet(
        "refine",
        [
            Param(
                "refinement.parameterisation.goniometer.fix",
                "choice",
                ("all",),
                "Goniometer parameters to fix.",
                choices=("all", "in_beam_plane", "out_beam_plane"),
                multiple=True,
                allow_none=True,
            ),
            Param(
                "refinement.parameterisation.beam.fix",
                "choice",
                None,
                "Beam parameters to fix.",
                choices=("all", "in_spindle_plane", "out_spindle_plane", "wavelength"),
                multiple=True,
            ),
            Param(
                "refinement.reflections.outlier.algorithm",
                "choice",
                "mcd",
                "Outlier rejection.",
                choices=("null", "auto", "mcd", "tukey", "sauter_poon"),
            ),
            Param(
                "refinement.reflections.outlier.tukey.iqr_multiplier",
                "float",
                1.5,
                "Tukey fence multiplier.",
                min=0,
            ),
            Param("refinement.target.gradient_only", "bool", False, "Gradient only."),
            Param("refinement.refinery.max_iterations", "int", None, "Cap on iterations.", min=1),
            Param("refinement.output.history", "path", None, "History output."),
            Param("input.reference", "paths", None, "Reference files."),
            Param("crystal.unit_cell", "unit_cell", None, "Cell.", units="A, deg"),
            Param("crystal.space_group", "space_group", None, "Space group."),
            Param("crystal.change_of_basis_op", "cb_op", "a,b,c", "Reindexing operator."),
            Param("crystal.title", "str", None, "Free text."),
            Param("scan.image_range", "ints", None, "Images.", length=2, min=1),
            Param("beam.direction", "floats", (0.0, 0.0, 1.0), "Beam.", length=3),
            Param("nproc", "int", "Auto", "Processes.", min=1),
        ],
    )


NESTED = """\
# restraints for refinement
refinement {
  parameterisation {
    goniometer { fix = None }   # free the goniometer
    beam.fix = wavelength in_spindle_plane
  }
  reflections.outlier {
    algorithm = tukey
    tukey.iqr_multiplier = 3
  }
  refinery
  {
    max_iterations = 20
  }
}
crystal.unit_cell = 78.1 78.1 37.2 90 90 90
crystal { space_group = "P 43 21 2"; title = "lysozyme # not a comment" }
"""


def test_parse_phil_syntax():
    got = parse_phil(NESTED, "restraint.phil")
    assert [(a.name, [w.text for w in a.words], a.line) for a in got] == [
        ("refinement.parameterisation.goniometer.fix", ["None"], 4),
        ("refinement.parameterisation.beam.fix", ["wavelength", "in_spindle_plane"], 5),
        ("refinement.reflections.outlier.algorithm", ["tukey"], 8),
        ("refinement.reflections.outlier.tukey.iqr_multiplier", ["3"], 9),
        ("refinement.refinery.max_iterations", ["20"], 13),
        ("crystal.unit_cell", ["78.1", "78.1", "37.2", "90", "90", "90"], 16),
        ("crystal.space_group", ["P 43 21 2"], 17),
        ("crystal.title", ["lysozyme # not a comment"], 17),
    ]
    assert got[-1].words[0].quoted and not got[0].words[0].quoted


def test_one_line_nested_scopes():
    got = parse_phil("refinement { parameterisation { goniometer { fix = None } } }")
    assert [(a.name, a.words[0].text) for a in got] == [
        ("refinement.parameterisation.goniometer.fix", "None")
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a {\n  b = 1\n", "x.phil:1: scope 'a' opened here is never closed"),
        ("a = 1\n}\n", "x.phil:2: '}' without a matching '{'"),
        ("a = 1\nb 2\n", "x.phil:2: expected '=' or '{' after 'b'"),
        ("a = 1\n\nb =\n", "x.phil:3: no value after 'b ='"),
        ('a = 1\nb = "open\n', "x.phil:2: unterminated quoted string"),
        ("a = 1\n= 2\n", "x.phil:2: expected a parameter or scope name, found '='"),
        ("a..b = 1\n", "x.phil:1: 'a..b' is not a valid name"),
        ("a = b = c\n", "x.phil:1: unexpected '=' in the value of 'a'"),
    ],
)
def test_phil_syntax_errors_carry_file_and_line(text, message):
    with pytest.raises(PhilSyntaxError) as e:
        parse_phil(text, "x.phil")
    assert str(e.value).startswith(message)


def test_file_values_are_typed_and_explicit():
    p = _refine().parse_phil_text(NESTED, "restraint.phil")
    v = p.values
    assert v["refinement.parameterisation.goniometer.fix"] is None
    assert v["refinement.parameterisation.beam.fix"] == ("in_spindle_plane", "wavelength")
    assert v["refinement.reflections.outlier.algorithm"] == "tukey"
    assert v["refinement.reflections.outlier.tukey.iqr_multiplier"] == 3.0
    assert v["refinement.refinery.max_iterations"] == 20
    assert v["crystal.unit_cell"] == (78.1, 78.1, 37.2, 90.0, 90.0, 90.0)
    assert v["crystal.space_group"] == "P 43 21 2"
    assert v["crystal.title"] == "lysozyme # not a comment"
    assert v["nproc"] == "Auto"  # default kept
    assert len(p.explicit) == 8
    assert p.sources["refinement.refinery.max_iterations"] == "restraint.phil:13"


def test_short_names_in_files():
    p = _refine().parse_phil_text("goniometer { fix = in_beam_plane }\nmax_iterations = 5\n")
    assert p.values["refinement.parameterisation.goniometer.fix"] == ("in_beam_plane",)
    assert p.values["refinement.refinery.max_iterations"] == 5


def test_file_value_errors_carry_line():
    with pytest.raises(ParameterError) as e:
        _refine().parse_phil_text(
            "refinement {\n  refinery {\n    max_iterations = 0\n  }\n}\n", "r.phil"
        )
    assert str(e.value) == (
        "r.phil:3: refinement.refinery.max_iterations = 0: "
        "refinement.refinery.max_iterations must be >= 1 (cap on iterations)"
    )
    with pytest.raises(ParameterError) as e:
        _refine().parse_phil_text("a = 1\n\niqr_multiplierr = 2\n", "r.phil")
    assert str(e.value).startswith("r.phil:1: unknown parameter 'a' for refine")
    with pytest.raises(ParameterError) as e:
        _refine().parse_phil_text("# ok\n\niqr_multiplierr = 2\n", "r.phil")
    assert "r.phil:3: unknown parameter 'iqr_multiplierr'" in str(e.value)
    assert "did you mean iqr_multiplier" in str(e.value)


def test_files_on_the_command_line_then_command_line_wins(tmp_path):
    (tmp_path / "restraint.phil").write_text(NESTED)
    (tmp_path / "more.phil").write_text("refinement.refinery.max_iterations = 7\nnproc = 2\n")
    words = split_line("max_iterations=50 restraint.phil more.phil indexed.expt indexed.refl")
    p = _refine().parse(words, cwd=tmp_path)
    assert p.param_files == ["restraint.phil", "more.phil"]
    assert p.positional == ["indexed.expt", "indexed.refl"]
    assert p.values["refinement.refinery.max_iterations"] == 50  # command line beats both files
    assert p.values["nproc"] == 2  # the later file
    assert p.values["refinement.reflections.outlier.algorithm"] == "tukey"
    assert p.sources["nproc"] == "more.phil:2"
    assert p.sources["refinement.refinery.max_iterations"] == "command line"


def test_missing_or_bad_parameter_file(tmp_path):
    with pytest.raises(ParameterError, match="parameter file 'nope.phil' not found"):
        _refine().parse(["nope.phil"], cwd=tmp_path)
    (tmp_path / "bad.phil").write_text("refinement {\n")
    with pytest.raises(ParameterError, match="bad.phil:1: scope 'refinement'"):
        _refine().parse(["bad.phil"], cwd=tmp_path)


def test_to_phil_round_trip_defaults():
    ps = _refine()
    text = to_phil(ps.defaults(), ps)
    assert "    goniometer {\n      fix = *all in_beam_plane out_beam_plane\n    }" in text
    assert "nproc = Auto" in text
    assert ps.parse_phil_text(text).values == ps.defaults()


def test_to_phil_round_trip_every_type():
    ps = _refine()
    values = ps.parse(
        split_line(
            "goniometer.fix=None beam.fix=all,wavelength algorithm=sauter_poon "
            "iqr_multiplier=0.1 gradient_only=yes max_iterations=3 "
            "history='out dir/h.json' reference=a.expt,b.expt unit_cell=40,50.5,60,80,95.25,101 "
            "space_group=R3:H change_of_basis_op=-b,a+b,c "
            "image_range=1,900 direction=0.01,-0.002,1 nproc=4"
        )
    ).values
    values["crystal.title"] = "None"  # the word None as text must survive
    text = to_phil(values, ps)
    assert 'title = "None"' in text
    assert "unit_cell = 40.0 50.5 60.0 80.0 95.25 101.0" in text
    assert "fix = *all in_spindle_plane out_spindle_plane *wavelength" in text
    back = ps.parse_phil_text(text).values
    assert back == values
    assert back["crystal.title"] == "None"  # the text, not None
    assert back["crystal.space_group"] == "R 3:H"
    assert back["beam.direction"] == (0.01, -0.002, 1.0)
    assert back["refinement.output.history"] == "out dir/h.json"


def test_format_phil_groups_scopes():
    text = format_phil([("a.b.c", "1"), ("a.d", "2"), ("a.b.e", "3"), ("f", "4")])
    assert text == "a {\n  b {\n    c = 1\n    e = 3\n  }\n  d = 2\n}\nf = 4\n"
