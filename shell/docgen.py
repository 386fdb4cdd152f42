"""Write the command reference (docs/commands.md) from the parameter definitions.

    python -m gonio.shell.docgen > docs/commands.md
"""

from __future__ import annotations

import sys

from gonio.shell.commands import COMMANDS
from gonio.shell.params import format_value, range_text


def reference() -> str:
    out = ["# Command reference", "",
           "Generated from the parameter definitions by `python -m gonio.shell.docgen`; "
           "do not edit by hand. Any unambiguous trailing part of a parameter name is accepted "
           "(`goniometer.fix=None`); parameters can also come from `.phil` files in brace syntax.",
           ""]
    for c in COMMANDS:
        title = c.name + (f" ({', '.join(c.aliases)})" if c.aliases else "")
        out += [f"## {title}", "", c.summary + ".", ""]
        if c.usage:
            out += [f"Usage: `{c.name} {c.usage}`", ""]
        if c.description:
            out += [c.description, ""]
        params = list(c.paramset)
        if params:
            out += ["| parameter | type | default | units | range | expert | help |",
                    "|---|---|---|---|---|---|---|"]
            for p in params:
                typ = p.type + (f" ({'/'.join(p.choices)})" if p.choices else "")
                bounds = range_text(p, with_units=False)
                out.append(f"| `{p.name}` | {typ} | `{format_value(p, p.default)}` | {p.units} | "
                           f"{bounds} | {p.expert_level or ''} | {p.help.replace('|', '/')} |")
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(reference())
