"""Tests for gonio.shell.params: names, typed values, command-line parsing, help."""

import pytest

from gonio.core.errors import GonioError
from gonio.shell.params import (
    Param,
    ParameterError,
    ParamSet,
    find_everywhere,
    format_found,
    format_help,
    scope,
    split_line,
)


def _findspots() -> ParamSet:
    # Names and defaults follow DIALS (spotfinder.filter.*, indexing.*, refinement.*).
    return ParamSet(
        "findspots",
        [
            *scope(
                "spotfinder.filter",
                Param(
                    "d_min",
                    "float",
                    None,
                    "High-resolution limit.",
                    units="A",
                    min=0,
                    min_exclusive=True,
                ),
                Param(
                    "d_max",
                    "float",
                    None,
                    "Low-resolution limit.",
                    units="A",
                    min=0,
                    min_exclusive=True,
                ),
                Param(
                    "max_separation",
                    "float",
                    2.0,
                    "Largest centroid shift allowed.",
                    units="px",
                    expert_level=1,
                ),
            ),
            Param(
                "indexing.d_min",
                "float",
                None,
                "Resolution limit for indexing.",
                units="A",
                primary=True,
            ),
            Param(
                "indexing.method",
                "choice",
                "fft3d",
                "Indexing method.",
                choices=("fft3d", "fft1d", "real_space_grid_search"),
            ),
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
                "refinement.parameterisation.detector.fix",
                "choice",
                None,
                "Detector parameters to fix.",
                choices=("all", "position", "orientation", "distance"),
                multiple=True,
            ),
            Param(
                "geometry.detector.distance",
                "float",
                200.0,
                "The sample-to-detector distance.",
                units="mm",
                min=0,
                min_exclusive=True,
            ),
            Param(
                "scan.oscillation_width",
                "float",
                0.1,
                "Rotation per image.",
                units="deg",
                min=0,
                max=180,
                max_exclusive=True,
                min_exclusive=True,
            ),
            Param("nproc", "int", "Auto", "Number of processes.", min=1),
            Param("image_range", "ints", None, "First and last image.", length=2, min=1),
            Param("beam.direction", "floats", (0.0, 0.0, 1.0), "Beam vector.", length=3),
            Param("unit_cell", "unit_cell", None, "Known cell."),
            Param("space_group", "space_group", None, "Known space group."),
            Param("cb_op", "cb_op", "a,b,c", "Change of basis to apply."),
            Param("output.reflections", "path", "strong.refl", "Output reflections file."),
            Param("mask", "paths", None, "Mask files."),
            Param("title", "str", "", "Free text.", expert_level=2),
            Param("verbose", "bool", False, "Log more."),
        ],
    )


def parse(line: str):
    return _findspots().parse(split_line(line))


def error(line: str) -> str:
    with pytest.raises(ParameterError) as e:
        parse(line)
    return str(e.value)


# --------------------------------------------------------------------- names


def test_parameter_error_is_a_gonio_error():
    assert issubclass(ParameterError, GonioError)


def test_full_and_trailing_names():
    ps = _findspots()
    full = "refinement.parameterisation.goniometer.fix"
    for form in (full, "parameterisation.goniometer.fix", "goniometer.fix"):
        assert ps.resolve(form).name == full
    assert ps.resolve("distance").name == "geometry.detector.distance"
    assert ps.resolve("filter.d_max").name == "spotfinder.filter.d_max"
    assert ps.resolve("d_max").name == "spotfinder.filter.d_max"


def test_ambiguous_short_name_takes_the_primary():
    p = parse("d_min=2.5")
    assert p.values["indexing.d_min"] == 2.5
    assert p.values["spotfinder.filter.d_min"] is None
    assert p["d_min"] == 2.5
    assert p["filter.d_min"] is None


def test_ambiguous_without_primary_lists_full_candidates():
    msg = error("fix=all")
    assert msg.startswith("fix=all: 'fix' is ambiguous for findspots")
    assert "refinement.parameterisation.goniometer.fix" in msg
    assert "refinement.parameterisation.detector.fix" in msg


def test_unknown_name_suggests_closest():
    msg = error("d_maxx=20")
    assert (
        "unknown parameter 'd_maxx' for findspots; did you mean d_max (spotfinder.filter.d_max)?"
        in msg
    )
    msg = error("spotfinder.filtr.d_max=20")
    assert "spotfinder.filter.d_max" in msg
    msg = error("zzzz=1")
    assert "'help findspots' lists its parameters" in msg


def test_names_are_case_sensitive():
    assert "unknown parameter 'D_max'" in error("D_max=3")


def test_exact_full_name_beats_trailing_match():
    ps = ParamSet("x", [Param("indexing.d_min", "float", None), Param("d_min", "float", None)])
    assert ps.resolve("d_min").name == "d_min"
    assert ps.resolve("indexing.d_min").name == "indexing.d_min"


def test_paths_default_with_spaces():
    assert Param("p", "paths", ("a b.cbf", "c.cbf")).default == ("a b.cbf", "c.cbf")


def test_completion_names():
    names = _findspots().completion_names()
    assert "goniometer.fix" in names and "detector.fix" in names
    assert "fix" not in names  # ambiguous, no primary
    assert "d_min" in names  # resolves to the primary
    assert "refinement.parameterisation.goniometer.fix" in names
    assert "distance" in names


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="defined twice"):
        ParamSet("x", [Param("a.b", "int", 1), Param("a.b", "int", 2)])


# --------------------------------------------------------------------- values


def test_defaults_for_every_parameter_and_explicit_set():
    p = parse("distance=150.5 image.cbf other.cbf")
    ps = _findspots()
    assert set(p.values) == {q.name for q in ps}
    assert p.values["geometry.detector.distance"] == 150.5
    assert p.values["indexing.method"] == "fft3d"
    assert p.values["beam.direction"] == (0.0, 0.0, 1.0)
    assert p.values["refinement.parameterisation.goniometer.fix"] == ("all",)
    assert p.explicit == {"geometry.detector.distance"}
    assert p.positional == ["image.cbf", "other.cbf"]
    assert p.sources == {"geometry.detector.distance": "command line"}


def test_later_value_wins_and_spaced_equals():
    p = parse("distance=100 distance = 120 d_max =30 nproc= 4")
    assert p.values["geometry.detector.distance"] == 120.0
    assert p.values["spotfinder.filter.d_max"] == 30.0
    assert p.values["nproc"] == 4


def test_int_and_float_errors():
    assert (
        error("nproc=2.5")
        == "nproc=2.5: nproc must be a whole number, got '2.5' (number of processes)"
    )
    assert error("distance=abc") == (
        "distance=abc: distance must be a number, got 'abc' (the sample-to-detector distance)"
    )
    assert "finite" in error("distance=nan")


def test_range_messages():
    assert (
        error("distance=-5")
        == "distance=-5: distance must be > 0 mm (the sample-to-detector distance)"
    )
    assert error("distance=0").startswith("distance=0: distance must be > 0 mm")
    assert "oscillation_width must be > 0 and < 180 deg" in error("oscillation_width=180")
    assert parse("oscillation_width=179.5").values["scan.oscillation_width"] == 179.5
    assert "nproc must be >= 1" in error("nproc=0")
    assert parse("nproc=1").values["nproc"] == 1


def test_none_and_auto():
    assert parse("nproc=auto").values["nproc"] == "Auto"
    assert parse("nproc=3").values["nproc"] == 3
    assert "nproc cannot be None" in error("nproc=None")
    assert "distance cannot be None" in error("distance=none")
    assert "distance cannot be Auto" in error("distance=Auto")
    p = parse("d_max=NONE goniometer.fix=None")
    assert p.values["spotfinder.filter.d_max"] is None
    assert p.values["refinement.parameterisation.goniometer.fix"] is None
    assert "spotfinder.filter.d_max" in p.explicit
    # for text parameters Auto is just text
    assert parse("title=Auto").values["title"] == "Auto"


def test_empty_value():
    assert error("d_max=") == (
        "d_max=: no value given for d_max (low-resolution limit); write d_max=None to unset it"
    )
    assert "the default is distance=200.0" in error("distance=")
    assert parse("title=").values["title"] == ""


def test_bool():
    for text, value in [("True", True), ("yes", True), ("1", True), ("false", False),
                        ("No", False), ("0", False)]:  # fmt: skip
        assert parse(f"verbose={text}").values["verbose"] is value
    assert "verbose must be True or False" in error("verbose=maybe")


def test_choice():
    assert parse("method=fft1d").values["indexing.method"] == "fft1d"
    assert (
        parse("method=*real_space_grid_search").values["indexing.method"]
        == "real_space_grid_search"
    )
    msg = error("method=fft2d")
    assert "method must be one of fft3d, fft1d, real_space_grid_search; got 'fft2d'" in msg
    assert "did you mean fft3d" in msg
    assert "takes one of" in error("method=fft1d,fft3d")


def test_multiple_choice():
    key = "refinement.parameterisation.detector.fix"
    assert parse("detector.fix=distance,position").values[key] == ("position", "distance")
    assert parse("detector.fix=orientation+distance").values[key] == ("orientation", "distance")
    assert parse("detector.fix='all distance'").values[key] == ("all", "distance")
    assert "must be one of all, position, orientation, distance" in error("detector.fix=tilt")


def test_tuples_and_lengths():
    assert parse("image_range=1,90").values["image_range"] == (1, 90)
    assert parse("image_range='1 90'").values["image_range"] == (1, 90)
    assert parse("image_range=1 90 x.cbf").values["image_range"] == (1, 90)
    p = parse("image_range=1 90 7")  # only two numbers belong to image_range
    assert p.values["image_range"] == (1, 90) and p.positional == ["7"]
    assert "image_range needs exactly 2 whole numbers (e.g. 1,2), got 3" in error(
        "image_range=1,2,3"
    )
    assert "every value of image_range must be >= 1; got 0" in error("image_range=0,5")
    assert parse("beam.direction=0,-1e-3,1").values["beam.direction"] == (0.0, -0.001, 1.0)
    assert "needs exactly 3 numbers" in error("beam.direction=0,1")


def test_paths_and_strings():
    p = parse("output.reflections='my dir/strong.refl' mask=a.pickle,b.pickle title='two words'")
    assert p.values["output.reflections"] == "my dir/strong.refl"
    assert p.values["mask"] == ("a.pickle", "b.pickle")
    assert p.values["title"] == "two words"


def test_space_group():
    assert parse("space_group=C2").values["space_group"] == "C 1 2 1"
    assert parse("space_group=5").values["space_group"] == "C 1 2 1"
    assert parse("space_group=P212121").values["space_group"] == "P 21 21 21"
    assert parse("space_group='P 21 21 21'").values["space_group"] == "P 21 21 21"
    assert parse("space_group=H3").values["space_group"] == "R 3:H"
    assert "'Xyz' is not a space group" in error("space_group=Xyz")
    assert "from 1 to 230, got 231" in error("space_group=231")
    assert "from 1 to 230, got 0" in error("space_group=0")


def test_unit_cell():
    cell = parse("unit_cell=78.1,78.1,37.2,90,90,90").values["unit_cell"]
    assert cell == (78.1, 78.1, 37.2, 90.0, 90.0, 90.0)
    spaced = parse("unit_cell=78.1 78.1 37.2 90 90 90 imported.expt")
    assert spaced.values["unit_cell"] == cell and spaced.positional == ["imported.expt"]
    assert "between 0 and 180 deg" in error("unit_cell=10,20,30,90,90,200")
    assert "do not make a valid cell" in error("unit_cell=10,20,30,170,170,170")
    assert "needs 6 numbers" in error("unit_cell=10,20,30")
    assert "lengths a, b, c must be > 0 A" in error("unit_cell=10,-20,30,90,90,90")


def test_cb_op():
    assert parse("cb_op=a-2*b,a,c").values["cb_op"] == "a-2*b,a,c"
    assert parse("cb_op=a-2b,a,c").values["cb_op"] == "a-2*b,a,c"
    assert parse("cb_op=x,y,z").values["cb_op"] == "a,b,c"
    assert parse("cb_op='-b, a+b, c'").values["cb_op"] == "-b,a+b,c"
    assert parse("cb_op=1/2*a,b,c+1/2").values["cb_op"] == "a/2,b,c+1/2"
    assert "is not a change-of-basis operator" in error("cb_op=a,b")
    assert "is not a change-of-basis operator" in error("cb_op=h,k,l")
    assert "singular" in error("cb_op=a,a,c")


def test_defaults_validated_at_definition():
    with pytest.raises(ValueError, match="default -1"):
        Param("d", "float", -1.0, min=0)
    with pytest.raises(ValueError, match="choices"):
        Param("m", "choice", "x")
    assert Param("sg", "space_group", "C2").default == "C 1 2 1"
    assert Param("n", "int", 3).allow_none is False
    assert Param("n", "int", None).allow_none is True


def test_split_line():
    assert split_line("a=b c") == ["a=b", "c"]
    assert split_line('unit_cell="10 20 30 90 90 90" x.expt') == [
        "unit_cell=10 20 30 90 90 90",
        "x.expt",
    ]
    with pytest.raises(ParameterError, match="close the quote"):
        split_line("title='oops")


# --------------------------------------------------------------------- help


def test_help_table():
    text = format_help(_findspots(), "findspots")
    assert "geometry.detector.distance" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "200.0" in lines["geometry.detector.distance"]
    assert " mm " in lines["geometry.detector.distance"]
    assert "strong.refl" in lines["output.reflections"]
    assert lines["verbose"].split()[:3] == ["verbose", "bool", "False"]
    assert lines["nproc"].split()[:5] == ["nproc", "int", ">=", "1", "Auto"]
    assert "spotfinder.filter.max_separation" not in text  # expert level 1
    assert "title" not in lines
    assert "2 expert parameters hidden" in text
    text1 = format_help(_findspots(), "findspots", expert_level=1)
    assert "spotfinder.filter.max_separation" in text1 and "px" in text1
    assert "1 expert parameter hidden" in text1


def test_find_everywhere():
    commands = {
        "findspots": _findspots(),
        "index": ParamSet("index", [Param("indexing.d_min", "float", None, "Limit.", units="A")]),
        "import": ParamSet("import", [Param("template", "str", None)]),
    }
    found = find_everywhere("d_min", commands)
    assert [(c, p.name) for c, p in found] == [
        ("findspots", "spotfinder.filter.d_min"),
        ("findspots", "indexing.d_min"),
        ("index", "indexing.d_min"),
    ]
    text = format_found("d_min", found)
    assert "spotfinder.filter.d_min" in text and "index" in text
    assert "No command" in format_found("zz", find_everywhere("zz", commands))
