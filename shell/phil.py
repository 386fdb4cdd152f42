"""Brace-syntax parameter files, as DIALS users know them from PHIL (libtbx.phil).

Syntax only: this module turns text into ``(dotted name, words, line)``
assignments and writes such assignments back as nested scopes. What a name
means and how its words become a typed value is decided in
:mod:`gonio.shell.params`.

Accepted syntax::

    # a comment (anywhere outside quotes, to the end of the line)
    refinement {
      parameterisation.goniometer { fix = None }   # dotted scope names
      reflections.outlier.algorithm = tukey        # dotted assignment
    }
    unit_cell = 10 20 30 90 90 90                  # several words
    title = "two words"; d_min = 2.0               # quotes, ';' separator

An assignment's words run to the end of the line, a ``;`` or a ``}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gonio.core.errors import GonioError

NAME_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
_PUNCT = "{}=;"
_WORD_END = set(" \t\r\f\v{}=;#\"'")
_NEEDS_QUOTES = re.compile(r"[\s{}=;#\"'\\]")


class PhilSyntaxError(GonioError):
    """A parameter file (or text) that is not valid brace syntax."""


@dataclass(frozen=True)
class Word:
    """One value word; ``quoted`` words are taken literally (never split on commas)."""

    text: str
    quoted: bool = False


@dataclass(frozen=True)
class Assignment:
    """``name = words`` found at 1-based ``line`` of ``source``; name is the full dotted path."""

    name: str
    words: tuple[Word, ...]
    line: int
    source: str


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "quoted", "punct", "newline"
    text: str
    line: int


def _fail(source: str, line: int, message: str) -> PhilSyntaxError:
    return PhilSyntaxError(f"{source}:{line}: {message}")


def _tokenize(text: str, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        i, n = 0, len(line)
        while i < n:
            c = line[i]
            if c.isspace():
                i += 1
            elif c == "#":
                break
            elif c in _PUNCT:
                tokens.append(_Token("punct", c, lineno))
                i += 1
            elif c in "\"'":
                chars, j = [], i + 1
                while j < n and line[j] != c:
                    if line[j] == "\\" and j + 1 < n:
                        j += 1
                    chars.append(line[j])
                    j += 1
                if j >= n:
                    raise _fail(source, lineno, f"unterminated quoted string starting {line[i:]!r}")
                tokens.append(_Token("quoted", "".join(chars), lineno))
                i = j + 1
            else:
                j = i
                while j < n and line[j] not in _WORD_END:
                    j += 1
                tokens.append(_Token("word", line[i:j], lineno))
                i = j
        tokens.append(_Token("newline", "\n", lineno))
    return tokens


def parse_phil(text: str, source: str = "<text>") -> list[Assignment]:
    """Parse brace-syntax text into assignments in file order.

    Raises :class:`PhilSyntaxError` with ``source:line:`` on malformed input.
    """
    tokens = _tokenize(text, source)
    scopes: list[tuple[str, int]] = []  # (dotted scope name, line opened)
    out: list[Assignment] = []
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok.kind == "newline" or (tok.kind == "punct" and tok.text == ";"):
            i += 1
            continue
        if tok.kind == "punct" and tok.text == "}":
            if not scopes:
                raise _fail(source, tok.line, "'}' without a matching '{'")
            scopes.pop()
            i += 1
            continue
        if tok.kind != "word":
            raise _fail(source, tok.line, f"expected a parameter or scope name, found {tok.text!r}")
        if not NAME_RE.match(tok.text):
            raise _fail(
                source, tok.line, f"{tok.text!r} is not a valid name (letters, digits, _ and dots)"
            )
        name = tok.text
        j = i + 1
        while j < n and tokens[j].kind == "newline":  # allow 'scope' and '{' on separate lines
            j += 1
        nxt = tokens[j] if j < n else None
        if nxt is not None and nxt.kind == "punct" and nxt.text == "{":
            scopes.append((name, tok.line))
            i = j + 1
            continue
        nxt = tokens[i + 1] if i + 1 < n else None
        if nxt is None or nxt.kind != "punct" or nxt.text != "=":
            raise _fail(source, tok.line, f"expected '=' or '{{' after {name!r}")
        words: list[Word] = []
        j = i + 2
        while j < n:
            t = tokens[j]
            if t.kind == "newline" or (t.kind == "punct" and t.text in ";}"):
                break
            if t.kind == "punct":
                raise _fail(
                    source,
                    t.line,
                    f"unexpected {t.text!r} in the value of {name!r}; quote the value",
                )
            words.append(Word(t.text, quoted=t.kind == "quoted"))
            j += 1
        if not words:
            raise _fail(source, tok.line, f"no value after '{name} ='; write None to unset it")
        full = ".".join([s for s, _ in scopes] + [name])
        out.append(Assignment(full, tuple(words), tok.line, source))
        i = j
    if scopes:
        name, line = scopes[-1]
        raise _fail(source, line, f"scope {name!r} opened here is never closed with '}}'")
    return out


def quote_word(text: str) -> str:
    """Return ``text`` as one phil word, double-quoted when it holds spaces or syntax characters."""
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_phil(entries: list[tuple[str, str]], indent: str = "  ") -> str:
    """Write ``(full dotted name, value text)`` pairs as nested brace scopes.

    Entries sharing a leading path are grouped into one scope; order of first
    appearance is kept. The value text is written verbatim after ``=``.
    """
    tree: dict = {}
    for name, text in entries:
        node = tree
        *scopes, leaf = name.split(".")
        for s in scopes:
            node = node.setdefault((s, "scope"), {})
        node[(leaf, "value")] = text
    lines: list[str] = []

    def emit(node: dict, depth: int) -> None:
        pad = indent * depth
        for (key, kind), sub in node.items():
            if kind == "value":
                lines.append(f"{pad}{key} = {sub}")
            else:
                lines.append(f"{pad}{key} {{")
                emit(sub, depth + 1)
                lines.append(f"{pad}}}")

    emit(tree, 0)
    return "\n".join(lines) + ("\n" if lines else "")
