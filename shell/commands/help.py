"""The ``help`` command."""

from __future__ import annotations

from tabulate import tabulate

from gonio.shell.command import Context, Outcome


def run(ctx: Context, parsed) -> Outcome:
    from gonio.shell.commands import _BY_NAME, COMMANDS
    from gonio.shell.params import find_everywhere, format_found, format_help

    words = list(parsed.positional)
    level = 0
    for w in list(words):
        if w.startswith("expert_level="):
            level = int(w.split("=", 1)[1])
            words.remove(w)
    if not words:
        rows = [[c.name + (f" ({', '.join(c.aliases)})" if c.aliases else ""), c.summary]
                for c in COMMANDS]
        text = tabulate(rows, headers=["command", "what it does"], disable_numparse=True)
        text += ("\n\nhelp COMMAND (or COMMAND -h) shows its parameters; help NAME shows where a "
                 "parameter applies; expert_level=1 shows expert parameters.")
        return Outcome(text=text)
    name = words[0]
    if name in _BY_NAME:
        c = _BY_NAME[name]
        head = f"{c.name} {c.usage}".strip() + f"\n    {c.summary}"
        if c.aliases:
            head += f"\n    aliases: {', '.join(c.aliases)}"
        if c.description:
            head += "\n\n" + c.description
        body = format_help(c.paramset, c.name, level) if len(c.paramset) else "(no parameters)"
        return Outcome(text=head + "\n\n" + body)
    found = find_everywhere(name, {c.name: c.paramset for c in COMMANDS})
    return Outcome(text=format_found(name, found))
