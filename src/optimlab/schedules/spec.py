"""SPEC: the text form of a schedule (grammar in :data:`GRAMMAR`), and its parser.

The parser is a small recursive descent over the text (never ``eval``).  Every
error is a ``ValueError`` that gives the character position and the text, e.g.
``expected ')' at position 15 in 'cosine(3e-4, 10' (found end of text)``.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import textwrap
from collections.abc import Callable
from typing import Any

from . import composite, core
from .core import Schedule

__all__ = ["CONSTRUCTORS", "GRAMMAR", "parse"]

#: Constructor name -> function, for every schedule the SPEC text can name.
CONSTRUCTORS: dict[str, Callable[..., Schedule]] = {
    name: getattr(module, name)
    for module in (core, composite)
    for name in module.__all__
    if name != "Schedule"
}


def _synopsis(name: str, function: Callable[..., Schedule]) -> str:
    params = inspect.signature(function).parameters.values()
    return (
        f"{name}("
        + ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
        + ")"
    )


GRAMMAR = (
    """\
SPEC grammar (whitespace allowed between tokens):

    spec   := NAME "(" [arg ("," arg)* [","]] ")"    positional args before keywords
    arg    := [NAME "="] value
    value  := spec | number | list | string | True | False
    list   := "[" [value ("," value)* [","]] "]"
    number := 3 | -2 | 0.5 | .5 | 3e-4 | 1E+4          (1e4 is accepted where an int is due)
    string := 'cos' | "cos"                           (no escapes)

NAME is a constructor, called with the same arguments, order and defaults as
in Python:

"""
    + "\n".join(
        textwrap.fill(_synopsis(n, f), 78, initial_indent="    ", subsequent_indent="        ")
        for n, f in CONSTRUCTORS.items()
    )
    + """

Examples:
    warmup(500, cosine(3e-4, 9500, final_lr=3e-5))
    join([constant(0.1), linear(0.1, 900)], [100])
    multistep(0.1, [30000, 60000], 0.1)

str(schedule) prints this form with defaults left out; parse(str(s)) == s.
"""
)

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = re.compile(r"\s*")
_BOOLEANS = {"True": True, "False": False}
# Deeper nesting than this is not a schedule anyone wrote by hand; the limit
# turns a would-be RecursionError into a positioned ValueError.
_MAX_DEPTH = 50


def parse(text: str) -> Schedule:
    """The schedule a SPEC text describes (see the module docstring for the grammar).

    >>> parse("warmup(100, cosine(0.1, 900))")(100)
    0.1
    """
    if not isinstance(text, str):
        raise ValueError(f"spec must be a string, got spec={text!r}")
    return _Parser(text).spec()


def _excerpt(text: str, where: int, width: int = 100) -> str:
    """``text`` quoted, or the part of a long one around position ``where``: one readable line."""
    if len(text) <= width:
        return repr(text)
    start = max(0, min(where - width // 2, len(text) - width))
    before = "..." if start else ""
    after = "..." if start + width < len(text) else ""
    return f"{before}{text[start : start + width]!r}{after} (characters {start} to {start + width})"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # --- errors and tokens -------------------------------------------------

    def error(self, message: str, pos: int | None = None, found: bool = False) -> ValueError:
        """``message at position N in 'text'``, plus what is there with ``found``."""
        where = self.pos if pos is None else pos
        text = f"{message} at position {where} in {_excerpt(self.text, where)}"
        if found:
            rest = self.text[where:].lstrip()
            text += f" (found {rest[0]!r})" if rest else " (found end of text)"
        return ValueError(text)

    def skip_space(self) -> None:
        self.pos = _SPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos : self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}", found=True)
        self.pos += 1

    def accept(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def name(self) -> str | None:
        self.skip_space()
        match = _NAME.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group()

    # --- grammar -----------------------------------------------------------

    def spec(self) -> Schedule:
        self.skip_space()
        start = self.pos
        value = self.value()
        if not isinstance(value, Schedule):
            raise self.error("expected a schedule such as 'cosine(0.1, 1000)'", start)
        if self.peek():
            raise self.error("unexpected text after the schedule", found=True)
        return value

    def value(self) -> Any:
        char = self.peek()
        if char == "[":
            return self.items()
        if char in ("'", '"'):
            return self.string(char)
        number = _NUMBER.match(self.text, self.pos)
        if number is not None:
            token = number.group()
            # float() reads any number of digits (int() stops at 4300); every
            # number a schedule takes must fit a float
            if math.isinf(float(token)):
                shown = token if len(token) <= 20 else f"{token[:12]}... ({len(token)} characters)"
                raise self.error(f"number {shown} is too large for a float (max 1.8e308)")
            self.pos = number.end()
            return int(token) if token.lstrip("+-").isdigit() else float(token)
        start = self.pos
        word = self.name()
        if word is None:
            raise self.error("expected a value", found=True)
        if word in _BOOLEANS:
            return _BOOLEANS[word]
        return self.call(word, start)

    def items(self) -> list[Any]:
        self.expect("[")
        values: list[Any] = []
        while not self.accept("]"):
            values.append(self.nested(self.value))
            if not self.accept(","):
                self.expect("]")
                break
        return values

    def string(self, quote: str) -> str:
        start = self.pos
        end = self.text.find(quote, start + 1)
        if end < 0:
            raise self.error(f"unterminated string, expected a closing {quote}", start)
        self.pos = end + 1
        return self.text[start + 1 : end]

    def call(self, word: str, start: int) -> Schedule:
        function = CONSTRUCTORS.get(word)
        if function is None:
            close = difflib.get_close_matches(word, CONSTRUCTORS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(CONSTRUCTORS))
            raise self.error(f"unknown schedule {word!r} (known: {known}){hint}", start)
        self.expect("(")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        while not self.accept(")"):
            self.argument(word, args, kwargs)
            if not self.accept(","):
                self.expect(")")
                break
        try:
            bound = inspect.signature(function).bind(*args, **kwargs)
        except TypeError as err:
            raise self.error(f"{word}(): {err}", start) from None
        try:
            return function(*bound.args, **bound.kwargs)
        except ValueError as err:
            raise self.error(f"{word}(): {err}", start) from None

    def argument(self, word: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.skip_space()
        start = self.pos
        keyword = _NAME.match(self.text, self.pos)
        after = _SPACE.match(self.text, keyword.end()).end() if keyword else start
        if keyword and self.text.startswith("=", after):
            key = keyword.group()
            if key in kwargs:
                raise self.error(f"{word}(): argument {key!r} given twice", start)
            self.pos = after + 1
            kwargs[key] = self.nested(self.value)
        elif kwargs:
            raise self.error(f"{word}(): positional argument after keyword arguments", start)
        else:
            args.append(self.nested(self.value))

    def nested(self, read: Callable[[], Any]) -> Any:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(f"nested deeper than {_MAX_DEPTH} levels")
        try:
            return read()
        finally:
            self.depth -= 1
