"""The command reference in docs/ is generated from the parameter definitions and up to date."""

from pathlib import Path

from gonio.shell.commands import COMMANDS
from gonio.shell.docgen import reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_command_reference_is_current():
    text = (DOCS / "commands.md").read_text()
    assert text == reference(), "regenerate with: python -m gonio.shell.docgen > docs/commands.md"
    for c in COMMANDS:
        assert f"## {c.name}" in text


def test_every_parameter_has_help():
    missing = [f"{c.name}: {p.name}" for c in COMMANDS for p in c.paramset if not p.help.strip()]
    assert not missing, missing


def test_obvious_short_names_never_ambiguous():
    """The DIALS trap: d_min and friends, shared by several parameters of one command,
    resolve to the one that command is about."""
    expected = {("findspots", "d_min"): "spotfinder.filter.d_min",
                ("findspots", "d_max"): "spotfinder.filter.d_max",
                ("index", "method"): "indexing.method",
                ("index", "d_min"): "indexing.fft3d.reciprocal_space_grid.d_min",
                ("simulate", "distance"): "distance"}
    for (command, short), full in expected.items():
        ps = next(c for c in COMMANDS if c.name == command).paramset
        assert ps.resolve(short).name == full
    for c in COMMANDS:
        for p in c.paramset:
            last = p.name.split(".")[-1]
            if last in ("d_min", "d_max", "method", "nproc", "space_group", "unit_cell"):
                c.paramset.resolve(last)  # raises if ambiguous


def test_every_command_line_in_the_docs_parses():
    """Each `gonio> ...` line in docs/ and README names a command and valid parameters."""
    import re

    from gonio.shell.commands import lookup
    from gonio.shell.params import split_line

    bad = []
    for md in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        for line in md.read_text().splitlines():
            m = re.match(r"\s*gonio> (.*)", line)
            if not m:
                continue
            text = re.split(r"\s+#", m.group(1))[0].strip()
            for part in text.split(" / "):  # README: "undo / redo / goto 2"
                words = split_line(part)
                if not words:
                    continue
                try:
                    cmd = lookup(words[0])
                    parsed = cmd.paramset.parse(words[1:])
                    del parsed
                except Exception as e:  # noqa: BLE001
                    bad.append(f"{md.name}: {part!r}: {e}")
    assert not bad, "\n".join(bad)
