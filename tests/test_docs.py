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


def test_d_min_never_ambiguous():
    """The DIALS trap: a short name shared by several parameters resolves for each command."""
    for c in COMMANDS:
        names = c.paramset.completion_names()
        if any(n.endswith("d_min") for n in [p.name for p in c.paramset]):
            if "d_min" in names:
                c.paramset.resolve("d_min")
