"""How a gonio command is declared.

A command is declared once: its name, aliases, parameter definitions, the
function it runs (named as ``"module:function"`` and imported only when the
command runs, so starting the shell imports no science code), and what it
needs from the state. Its run function receives a :class:`Context` and the
parsed parameters and returns an :class:`Outcome`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gonio.shell.params import Param, ParamSet

if TYPE_CHECKING:
    from gonio.store.state import State


@dataclass
class Outcome:
    """What a command produced.

    ``state`` is the new state for a step (None: the state does not change and
    no step is recorded); ``text`` is shown to the user and kept as the step's
    log; ``metrics`` are the key figures stored with the step.
    """

    state: State | None = None
    text: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a running command may use: the current state, the folder, progress.

    The state is decoded on first use (``load_state``), so commands that do
    not need it (help, history) stay instant.
    """

    load_state: Callable[[], State]
    cwd: str
    progress: Callable[[str, int, int], None] = lambda what, done, total: None
    nproc: int = 0
    session: Any = None  # the shell Session, for commands that act on the history
    _state: Any = field(default=None, repr=False)

    @property
    def state(self) -> State:
        if self._state is None:
            self._state = self.load_state()
        return self._state


@dataclass
class Command:
    name: str
    summary: str
    run: str  # "module:function", imported on first use
    params: Callable[[], list[Param]] | list[Param] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    step: bool = True  # records a step in the history when it changes the state
    usage: str = ""  # positional arguments, e.g. "[files...]"
    takes_words: bool = False  # words without "=" (files, step numbers) go to the command
    # else such a word is an error, ending with this hint ({word}: the first such word)
    stray_hint: str = ""
    description: str = ""
    _paramset: ParamSet | None = field(default=None, repr=False)

    @property
    def paramset(self) -> ParamSet:
        if self._paramset is None:
            params = self.params() if callable(self.params) else self.params
            self._paramset = ParamSet(self.name, params)
        return self._paramset

    def function(self) -> Callable[[Context, Any], Outcome]:
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)
