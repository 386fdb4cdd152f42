"""The interactive prompt: completion of commands, parameter names and paths; history file."""

from __future__ import annotations

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory

from gonio.shell.commands import command_names, lookup

PROMPT = "gonio> "


class GonioCompleter(Completer):
    """Command names first; then parameter names (any unambiguous trailing part) and paths."""

    def __init__(self):
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event):
        text = document.text_before_cursor
        words = text.split(" ")
        if len(words) == 1:
            for name in command_names():
                if name.startswith(words[0]):
                    yield Completion(name, start_position=-len(words[0]))
            return
        word = words[-1]
        if "=" in word:
            return
        try:
            names = lookup(words[0]).paramset.completion_names()
        except Exception:
            names = []
        for n in names:
            if n.startswith(word) and word:
                yield Completion(n + "=", start_position=-len(word))
        sub = Document(word, len(word))
        yield from self.paths.get_completions(sub, complete_event)


def repl(session) -> int:
    hist = session.folder / ".gonio" / "command_history"
    prompt = PromptSession(history=FileHistory(str(hist)), completer=GonioCompleter(),
                           complete_while_typing=False)
    head = session.head
    print(f"gonio: session in {session.folder} at step {head or 0}. Type 'help' for the commands, "
          "Ctrl-D to leave.")
    while True:
        try:
            line = prompt.prompt(PROMPT)
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        if line.strip() in ("exit", "quit"):
            return 0
        try:
            result = session.run_line(line)
        except KeyboardInterrupt:
            reset = getattr(session.progress, "reset", None)
            if reset is not None:
                reset()  # end a progress bar's line
            print("Interrupted: nothing was recorded.")
            continue
        if result.text:
            print(result.text)
