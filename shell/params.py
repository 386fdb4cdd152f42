"""Declarative, typed command parameters in the PHIL style DIALS users know.

Every gonio command declares a :class:`ParamSet` of :class:`Param` (full
dotted names such as ``refinement.parameterisation.goniometer.fix``) and
parses the words after its name with :meth:`ParamSet.parse`:

- ``name=value`` where name is the full name or any unambiguous trailing part
  on dot boundaries (``goniometer.fix``, ``fix``); when a short name fits
  several parameters the single ``primary`` one wins, otherwise the error
  lists the candidates. Unknown names get the closest known names.
- ``name = value``, ``name =value`` are accepted too, and numbers following a
  multi-number parameter are taken as its further values
  (``unit_cell=10 20 30 90 90 90`` is ``unit_cell=10,20,30,90,90,90``).
- words ending in ``.phil`` are brace-syntax parameter files
  (:mod:`gonio.shell.phil`), applied in order before the command-line
  values, which therefore win; every other word is positional (file names).

Values: ``None`` (any case) unsets a parameter that allows it, ``Auto`` where
allowed; space groups are read by gemmi and stored as the extended
Hermann-Mauguin symbol (``C2`` -> ``C 1 2 1``); unit cells are six numbers
(a, b, c in A; alpha, beta, gamma in deg); change-of-basis operators are
gemmi triplets in a,b,c (or x,y,z) notation, stored in gemmi's a,b,c form.
All parsed values are plain Python (int, float, bool, str, tuples, None), so
they can be stored as the step's effective parameters.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gonio.core.errors import GonioError
from gonio.shell.phil import NAME_RE, Assignment, PhilSyntaxError, Word, format_phil, parse_phil
from gonio.shell.phil import quote_word as _quote_word

TYPES = frozenset(
    {"int", "float", "bool", "str", "choice", "ints", "floats", "path", "paths",
     "space_group", "unit_cell", "cb_op"}
)  # fmt: skip
_NUMERIC = frozenset({"int", "float", "ints", "floats"})
_NUMBER_TUPLES = frozenset({"ints", "floats", "unit_cell"})
_LITERAL = frozenset({"str", "path", "paths"})  # "Auto" is just text for these
_NUMBER_WORD = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?,?\Z")
_CB_OP_CHARS = re.compile(r"[abcxyz0-9+\-*/.,]+\Z")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


class ParameterError(GonioError):
    """A command-line word or parameter-file line that gonio cannot accept."""


class _Bad(Exception):
    """Internal: what is wrong with one value (wrapped into ParameterError with context)."""


@dataclass(frozen=True)
class Param:
    """One typed parameter of a command.

    ``allow_none`` defaults to True exactly when ``default`` is None, and
    ``allow_auto`` is implied by a default of ``"Auto"``. ``min``/``max`` are
    inclusive unless ``min_exclusive``/``max_exclusive``; for ints/floats they
    apply to every element. ``length`` fixes the number of ints/floats.
    ``multiple`` makes a choice a set of choices (a tuple, in the order of
    ``choices``). On the command line ints, floats, paths and multiple
    choices are separated by commas (or spaces inside quotes).
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    expert_level: int = 0
    units: str = ""
    choices: tuple[str, ...] = ()
    multiple: bool = False
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    allow_none: bool | None = None
    allow_auto: bool = False
    length: int | None = None
    primary: bool = False

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"bad parameter name {self.name!r}")
        if self.type not in TYPES:
            raise ValueError(f"{self.name}: unknown type {self.type!r}; use one of {sorted(TYPES)}")
        if (self.type == "choice") != bool(self.choices):
            raise ValueError(f"{self.name}: choices are required for, and only for, type choice")
        if self.multiple and self.type != "choice":
            raise ValueError(f"{self.name}: multiple=True is for choice parameters")
        if (self.min is not None or self.max is not None) and self.type not in _NUMERIC:
            raise ValueError(f"{self.name}: min/max are for int, float, ints and floats")
        if self.length is not None and self.type not in ("ints", "floats"):
            raise ValueError(f"{self.name}: length is for ints and floats")
        object.__setattr__(self, "choices", tuple(self.choices))
        if self.allow_none is None:
            object.__setattr__(self, "allow_none", self.default is None)
        if self.default == "Auto" and self.type not in _LITERAL:
            object.__setattr__(self, "allow_auto", True)
        try:
            default = self.convert(default_words(self, self.default), self.name)
        except _Bad as e:
            raise ValueError(f"{self.name}: default {self.default!r} is not valid: {e}") from None
        object.__setattr__(self, "default", default)

    @property
    def count(self) -> int | None:
        """Number of values a tuple-typed parameter needs (None: any number)."""
        return 6 if self.type == "unit_cell" else self.length

    def convert(self, words: Sequence[Word], shown: str) -> Any:
        """Typed value from value words; ``shown`` is the name as the user wrote it.

        Raises ``_Bad`` with a message such as ``distance must be > 0 mm``.
        """
        texts = [w.text for w in words]
        single = texts[0].strip() if len(words) == 1 and not words[0].quoted else None
        if single is not None and single.lower() == "none":
            if not self.allow_none:
                raise _Bad(f"{shown} cannot be None")
            return None
        if single is not None and single.lower() == "auto":
            if self.allow_auto:
                return "Auto"
            if self.type not in _LITERAL:
                raise _Bad(f"{shown} cannot be Auto")
        if self.type != "str" and not any(t.strip() for t in texts):
            raise _Bad(f"no value given for {shown}")
        return _CONVERTERS[self.type](self, words, shown)


def default_words(param: Param, value: Any) -> list[Word]:
    """Words that parse back to ``value`` (used to validate defaults)."""
    if param.type == "paths" and value is not None:
        return [Word(t, quoted=True) for t in value]
    text = format_value(param, value)
    literal = param.type in _LITERAL and value is not None and text.lower() in ("none", "auto")
    return [Word(text, quoted=literal or (param.type == "str" and value is not None))]


# ----------------------------------------------------------------- converters


def _items(words: Sequence[Word], seps: str = r"[,\s]+") -> list[str]:
    out: list[str] = []
    for w in words:
        out.extend([w.text] if w.quoted else [s for s in re.split(seps, w.text) if s])
    return out


def _one(words: Sequence[Word], shown: str, what: str) -> str:
    items = _items(words, r"\s+")
    if len(items) != 1:
        raise _Bad(f"{shown} takes one {what}, got {len(items)} words")
    return items[0]


def range_text(p: Param, with_units: bool = True) -> str:
    """The allowed range of a number parameter, as errors and the reference give it ("" for
    a parameter without bounds)."""
    if p.min is None and p.max is None:
        return ""
    units = f" {p.units}" if p.units and with_units else ""
    lo_op = ">" if p.min_exclusive else ">="
    hi_op = "<" if p.max_exclusive else "<="
    if p.min is not None and p.max is not None:
        if not p.min_exclusive and not p.max_exclusive:
            return f"between {p.min:g} and {p.max:g}{units}"
        return f"{lo_op} {p.min:g} and {hi_op} {p.max:g}{units}"
    if p.min is not None:
        return f"{lo_op} {p.min:g}{units}"
    return f"{hi_op} {p.max:g}{units}"


def _in_range(p: Param, x: float) -> bool:
    if p.min is not None and (x < p.min or (p.min_exclusive and x == p.min)):
        return False
    return not (p.max is not None and (x > p.max or (p.max_exclusive and x == p.max)))


def _int(text: str, shown: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _Bad(f"{shown} must be a whole number, got {text!r}") from None


def _float(text: str, shown: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise _Bad(f"{shown} must be a number, got {text!r}") from None
    if not math.isfinite(x):
        raise _Bad(f"{shown} must be a finite number, got {text!r}")
    return x


def _conv_number(p: Param, words: Sequence[Word], shown: str) -> int | float:
    parse = _int if p.type == "int" else _float
    x = parse(_one(words, shown, "number"), shown)
    if not _in_range(p, x):
        raise _Bad(f"{shown} must be {range_text(p)}")
    return x


def _conv_numbers(p: Param, words: Sequence[Word], shown: str) -> tuple:
    parse = _int if p.type == "ints" else _float
    values = tuple(parse(t, shown) for t in _items(words))
    if p.length is not None and len(values) != p.length:
        kind = "whole numbers" if p.type == "ints" else "numbers"
        example = ",".join(str(i + 1) for i in range(p.length))
        raise _Bad(f"{shown} needs exactly {p.length} {kind} (e.g. {example}), got {len(values)}")
    for x in values:
        if not _in_range(p, x):
            raise _Bad(f"every value of {shown} must be {range_text(p)}; got {x:g}")
    return values


def _conv_bool(p: Param, words: Sequence[Word], shown: str) -> bool:
    text = _one(words, shown, "value").lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Bad(f"{shown} must be True or False (yes/no and 1/0 work too), got {text!r}")


def _conv_str(p: Param, words: Sequence[Word], shown: str) -> str:
    return " ".join(w.text for w in words)


def _conv_path(p: Param, words: Sequence[Word], shown: str) -> str:
    if len(words) != 1:
        raise _Bad(f"{shown} takes one path, got {len(words)} words; quote a path with spaces")
    return words[0].text


def _conv_paths(p: Param, words: Sequence[Word], shown: str) -> tuple[str, ...]:
    return tuple(_items(words))


def _conv_choice(p: Param, words: Sequence[Word], shown: str) -> str | tuple[str, ...]:
    items = _items(words, r"[,+\s]+")
    starred = [t.startswith("*") for t in items]
    lower = {c.lower(): c for c in p.choices}
    names = []
    for t in items:
        c = lower.get(t.lstrip("*").lower())
        if c is None:
            close = difflib.get_close_matches(t.lstrip("*"), p.choices, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise _Bad(f"{shown} must be one of {', '.join(p.choices)}; got {t!r}{hint}")
        names.append(c)
    if any(starred):  # PHIL listing style: "*fft3d fft1d real_space_grid_search"
        names = [c for c, s in zip(names, starred) if s]
    if p.multiple:
        return tuple(c for c in p.choices if c in names)
    if len(set(names)) != 1:
        raise _Bad(f"{shown} takes one of {', '.join(p.choices)}; got {len(names)} choices")
    return names[0]


def _conv_space_group(p: Param, words: Sequence[Word], shown: str) -> str:
    text = " ".join(w.text.strip() for w in words)
    if text.isdigit() and not 1 <= int(text) <= 230:
        raise _Bad(f"{shown}: space-group numbers run from 1 to 230, got {text}")
    try:
        import gemmi

        return gemmi.SpaceGroup(text).xhm()
    except (ValueError, RuntimeError):
        raise _Bad(
            f"{shown}: {text!r} is not a space group; give a Hermann-Mauguin symbol "
            "such as P212121 or 'C 1 2 1', or a number from 1 to 230"
        ) from None


def _conv_unit_cell(p: Param, words: Sequence[Word], shown: str) -> tuple[float, ...]:
    values = tuple(_float(t, shown) for t in _items(words))
    if len(values) != 6:
        raise _Bad(f"{shown} needs 6 numbers a,b,c (A),alpha,beta,gamma (deg), got {len(values)}")
    a, b, c, alpha, beta, gamma = values
    if min(a, b, c) <= 0:
        raise _Bad(f"{shown}: the cell lengths a, b, c must be > 0 A")
    if not all(0 < x < 180 for x in (alpha, beta, gamma)):
        raise _Bad(f"{shown}: the cell angles alpha, beta, gamma must be between 0 and 180 deg")
    import gemmi

    volume = gemmi.UnitCell(*values).volume
    if not volume > 0:  # also catches NaN: angles that close no parallelepiped
        raise _Bad(
            f"{shown}: the angles {alpha:g}, {beta:g}, {gamma:g} deg do not make a valid cell "
            "(each angle must be less than the sum of the other two, and all three less than 360)"
        )
    return values


def _conv_cb_op(p: Param, words: Sequence[Word], shown: str) -> str:
    text = "".join("".join(w.text.split()) for w in words)
    hint = "write it like a-2*b,a,c or -b,a+b,c (new axes in terms of the old a, b, c)"
    if not _CB_OP_CHARS.match(text):
        raise _Bad(f"{shown}: {text!r} is not a change-of-basis operator; {hint}")
    text = re.sub(r"(\d)([abcxyz])", r"\1*\2", text)  # "2a" -> "2*a"
    try:
        import gemmi

        op = gemmi.Op(text)
    except (ValueError, RuntimeError):
        raise _Bad(f"{shown}: {text!r} is not a change-of-basis operator; {hint}") from None
    if op.det_rot() == 0:
        raise _Bad(f"{shown}: {text!r} is singular (determinant 0), so it is no change of basis")
    return op.triplet("a")


_CONVERTERS = {
    "int": _conv_number, "float": _conv_number, "ints": _conv_numbers, "floats": _conv_numbers,
    "bool": _conv_bool, "str": _conv_str, "path": _conv_path, "paths": _conv_paths,
    "choice": _conv_choice, "space_group": _conv_space_group, "unit_cell": _conv_unit_cell,
    "cb_op": _conv_cb_op,
}  # fmt: skip


# ----------------------------------------------------------------- formatting


def format_value(param: Param, value: Any) -> str:
    """A value as one would type it on the command line (tuples comma-separated)."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (tuple, list)):
        return ",".join(_scalar_text(v) for v in value)
    return _scalar_text(value)


def _scalar_text(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if v != int(v) or abs(v) >= 1e16 else f"{v:.1f}"
    return str(v)


def _phil_value(param: Param, value: Any) -> str:
    if value is None or value == "Auto" and param.allow_auto:
        return "None" if value is None else "Auto"
    if param.type == "choice":
        chosen = set(value) if param.multiple else {value}
        return " ".join(f"*{c}" if c in chosen else c for c in param.choices)
    if param.type in _LITERAL:
        texts = list(value) if param.type == "paths" else [value]
        return " ".join(_quote_literal(t) for t in texts)
    if param.type == "space_group":
        return _quote_word(value)
    if isinstance(value, (tuple, list)):
        return " ".join(_scalar_text(v) for v in value)
    return format_value(param, value)


def _quote_literal(text: str) -> str:
    if text.lower() in ("none", "auto"):
        return f'"{text}"'
    return _quote_word(text)


def to_phil(values: Mapping[str, Any], params: ParamSet | Iterable[Param]) -> str:
    """The effective parameters in brace syntax; parameters missing from ``values`` take defaults.

    The output parses back (``ParamSet.parse_phil_text``) to the same values.
    Choices are written PHIL-style with the selection starred (``*fft3d fft1d``).
    """
    entries = [(p.name, _phil_value(p, values.get(p.name, p.default))) for p in params]
    return format_phil(entries)


def _about(p: Param) -> str:
    """First sentence of the help text, for error messages."""
    text = p.help.strip().split(". ")[0].rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return f" ({text})" if text else ""


def _type_text(p: Param) -> str:
    if p.type == "choice":
        return ("choices: " if p.multiple else "choice: ") + " | ".join(p.choices)
    text = f"{p.type}[{p.length}]" if p.length else p.type
    bounds = range_text(p, with_units=False)
    return f"{text} {bounds}" if bounds else text


# ----------------------------------------------------------------- parameter sets


@dataclass
class Parsed:
    """Result of parsing a command line.

    ``values`` has every parameter of the set (defaults included) by full
    name: the full effective parameters. ``explicit`` holds the full names the
    user set (command line or file), ``sources`` where each was set
    (``"command line"`` or ``"file.phil:3"``). ``parsed["d_min"]`` resolves
    short names like the command line does.
    """

    values: dict[str, Any]
    explicit: set[str]
    positional: list[str]
    param_files: list[str]
    sources: dict[str, str]
    paramset: ParamSet = field(repr=False)

    def __getitem__(self, name: str) -> Any:
        return self.values[self.paramset.resolve(name).name]


def split_line(line: str) -> list[str]:
    """Shell-split a command line (POSIX quoting: ``unit_cell="10 20 30 90 90 90"`` is one word)."""
    try:
        return shlex.split(line)
    except ValueError as e:
        raise ParameterError(f"cannot split the line: {e}; close the quote and try again") from None


def _trailing_forms(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def scope(prefix: str, *params: Param) -> list[Param]:
    """The given parameters with ``prefix.`` put in front of their names."""
    return [replace(p, name=f"{prefix}.{p.name}") for p in params]


class ParamSet:
    """The parameter definitions of one command (``command`` is its name, for messages)."""

    def __init__(self, command: str, params: Iterable[Param]):
        self.command = command
        self.params: tuple[Param, ...] = tuple(params)
        self.by_name: dict[str, Param] = {}
        self._forms: dict[str, list[Param]] = {}
        for p in self.params:
            if p.name in self.by_name:
                raise ValueError(f"{command}: parameter {p.name} is defined twice")
            self.by_name[p.name] = p
            for form in _trailing_forms(p.name):
                self._forms.setdefault(form, []).append(p)

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def _pick(self, name: str) -> Param | list[Param] | None:
        """The parameter ``name`` means, the ambiguous candidates, or None if unknown."""
        candidates = self._forms.get(name, [])
        if name in self.by_name:
            return self.by_name[name]
        if len(candidates) == 1:
            return candidates[0]
        primary = [p for p in candidates if p.primary]
        if len(primary) == 1:
            return primary[0]
        return candidates or None

    def shortest_name(self, param: Param) -> str:
        """The shortest trailing form of ``param.name`` that resolves to it."""
        for form in reversed(_trailing_forms(param.name)):
            if self._pick(form) is param:
                return form
        return param.name

    def resolve(self, name: str) -> Param:
        """The parameter a (possibly shortened) name refers to; ParameterError if none or several."""
        found = self._pick(name)
        if isinstance(found, Param):
            return found
        if found:
            names = [p.name for p in found]
            listing = ", ".join(names[:-1]) + " or " + names[-1]
            raise ParameterError(
                f"'{name}' is ambiguous for {self.command}: it could be {listing}; "
                f"write more of the name, e.g. {self.shortest_name(found[0])}=..."
            )
        raise ParameterError(self._unknown_message(name))

    def _unknown_message(self, name: str) -> str:
        matches = difflib.get_close_matches(name, list(self._forms), n=4, cutoff=0.6)
        seen: set[str] = set()
        ideas = []
        for form in matches:
            found = self._pick(form)
            for p in [found] if isinstance(found, Param) else found:
                if p.name not in seen:
                    seen.add(p.name)
                    short = self.shortest_name(p)
                    ideas.append(p.name if short == p.name else f"{short} ({p.name})")
        if ideas:
            return f"unknown parameter '{name}' for {self.command}; did you mean {' or '.join(ideas[:3])}?"
        return (
            f"unknown parameter '{name}' for {self.command}; "
            f"'help {self.command}' lists its parameters"
        )

    def completion_names(self) -> list[str]:
        """All full names and all trailing forms that resolve to one parameter, sorted."""
        return sorted(f for f in self._forms if isinstance(self._pick(f), Param))

    # ---- parsing

    def parse(self, tokens: Sequence[str], cwd: str | Path | None = None) -> Parsed:
        """Parse the words after the command name into the full effective parameters.

        Parameter files (``*.phil``, relative to ``cwd``) are applied first, in
        order, then the ``name=value`` words, so the command line wins.
        """
        assignments: list[tuple[str, Param, str, list[Word]]] = []  # (shown, param, token, words)
        files: list[str] = []
        positional: list[str] = []
        for tok in _merge_spaced_equals(tokens, self._absorbs):
            name, eq, value = tok.partition("=")
            if eq and NAME_RE.match(name):
                try:
                    param = self.resolve(name)
                except ParameterError as e:
                    raise ParameterError(f"{tok}: {e}") from None
                assignments.append((name, param, tok, [Word(value)]))
            elif tok.endswith(".phil"):
                files.append(tok)
            else:
                positional.append(tok)
        values = self.defaults()
        explicit: set[str] = set()
        sources: dict[str, str] = {}
        for f in files:
            self._apply_file(f, cwd, values, explicit, sources)
        for shown, param, tok, words in assignments:
            self._set(param, shown, words, tok, "command line", values, explicit, sources)
        return Parsed(values, explicit, positional, files, sources, self)

    def parse_phil_text(self, text: str, source: str = "<text>") -> Parsed:
        """Effective parameters from brace-syntax text alone (e.g. a stored step's to_phil)."""
        values, explicit, sources = self.defaults(), set(), {}
        self._apply_assignments(_parse_phil(text, source), values, explicit, sources)
        return Parsed(values, explicit, [], [], sources, self)

    def _absorbs(self, name: str) -> Param | None:
        """The multi-number parameter ``name`` refers to, if any (for gluing spaced numbers)."""
        found = self._pick(name)
        return found if isinstance(found, Param) and found.type in _NUMBER_TUPLES else None

    def _apply_file(self, f, cwd, values, explicit, sources) -> None:
        path = Path(f) if cwd is None else Path(cwd) / f
        if not path.is_file():
            raise ParameterError(
                f"parameter file '{f}' not found in {path.parent.resolve()}; check the path"
            )
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ParameterError(f"cannot read parameter file '{f}': {e}") from None
        self._apply_assignments(_parse_phil(text, f), values, explicit, sources)

    def _apply_assignments(self, assignments: list[Assignment], values, explicit, sources):
        for a in assignments:
            where = f"{a.source}:{a.line}"
            shown_value = " ".join(_quote_word(w.text) if w.quoted else w.text for w in a.words)
            token = f"{a.name} = {shown_value}"
            try:
                param = self.resolve(a.name)
            except ParameterError as e:
                raise ParameterError(f"{where}: {e}") from None
            self._set(param, a.name, list(a.words), f"{where}: {token}", where,
                      values, explicit, sources)  # fmt: skip

    def _set(self, param, shown, words, token, source, values, explicit, sources) -> None:
        try:
            value = param.convert(words, shown)
        except _Bad as e:
            message = f"{token}: {e}{_about(param)}"
            if not any(w.text.strip() for w in words):
                message += (
                    f"; write {shown}=None to unset it"
                    if param.allow_none
                    else f"; the default is {shown}={format_value(param, param.default)}"
                )
            raise ParameterError(message) from None
        values[param.name] = value
        explicit.add(param.name)
        sources[param.name] = source


def _parse_phil(text: str, source: str) -> list[Assignment]:
    try:
        return parse_phil(text, source)
    except PhilSyntaxError as e:
        raise ParameterError(str(e)) from None


def _merge_spaced_equals(tokens: Sequence[str], absorbs) -> list[str]:
    """Join ``name = value``, ``name =value``, ``name= value`` into one word, and the spaced
    numbers of a multi-number parameter (``unit_cell=10 20 30 90 90 90``)."""
    out: list[str] = []
    toks = list(tokens)
    i = 0
    while i < len(toks):
        tok = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if "=" not in tok and NAME_RE.match(tok) and nxt is not None and nxt.startswith("="):
            tok, i = tok + nxt, i + 2  # "name =value" or "name =" (value follows)
        else:
            i += 1
        if tok.endswith("=") and NAME_RE.match(tok[:-1]) and i < len(toks) and "=" not in toks[i]:
            tok, i = tok + toks[i], i + 1  # "name= value"
        name, eq, value = tok.partition("=")
        param = absorbs(name) if eq and NAME_RE.match(name) else None
        if param is not None:
            items = [s for s in re.split(r"[,\s]+", value) if s]
            if all(_NUMBER_WORD.match(s) for s in items):
                while (
                    i < len(toks)
                    and _NUMBER_WORD.match(toks[i])
                    and (param.count is None or len(items) < param.count)
                ):
                    items.append(toks[i])
                    i += 1
                tok = f"{name}={' '.join(items)}"
        out.append(tok)
    return out


# ----------------------------------------------------------------- help


def format_help(paramset: ParamSet, command_name: str | None = None, expert_level: int = 0) -> str:
    """A table of the parameters up to ``expert_level``: name, type, default, units, help."""
    command_name = command_name or paramset.command
    shown = [p for p in paramset if p.expert_level <= expert_level]
    rows = [
        [p.name, _type_text(p), format_value(p, p.default) or '""', p.units, p.help] for p in shown
    ]
    text = f"Parameters of {command_name}:\n"
    if rows:
        text += _table(rows, ["name", "type", "default", "units", "help"], [None, 30, 24, None, 60])
    else:
        text += "(none)"
    hidden = len(paramset) - len(shown)
    if hidden:
        text += (
            f"\n{hidden} expert parameter{'s' if hidden != 1 else ''} hidden; "
            f"show them with a higher expert_level (now {expert_level})."
        )
    return text + "\n"


def find_everywhere(name: str, commands: Mapping[str, ParamSet]) -> list[tuple[str, Param]]:
    """Every (command, parameter) whose full name is ``name`` or ends with ``.name``."""
    return [
        (command, p)
        for command, ps in commands.items()
        for p in ps
        if p.name == name or p.name.endswith("." + name)
    ]


def format_found(name: str, found: Sequence[tuple[str, Param]]) -> str:
    """Render ``find_everywhere`` results as a table (for ``help d_min``)."""
    if not found:
        return f"No command has a parameter called '{name}'.\n"
    rows = [
        [command, p.name, _type_text(p), format_value(p, p.default) or '""', p.units, p.help]
        for command, p in found
    ]
    headers = ["command", "name", "type", "default", "units", "help"]
    return _table(rows, headers, [None, None, 30, 24, None, 50]) + "\n"


def _table(rows: list[list[str]], headers: list[str], widths: list[int | None]) -> str:
    # Wrap here rather than with tabulate's maxcolwidths, which turns the text "False" into True.
    wrapped = [
        [cell if w is None else textwrap.fill(cell, w) for cell, w in zip(row, widths)]
        for row in rows
    ]
    from tabulate import tabulate

    return tabulate(wrapped, headers=headers, disable_numparse=True)
