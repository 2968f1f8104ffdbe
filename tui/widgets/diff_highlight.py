"""Syntax highlighting for the diff view: Pygments tokens → per-line spans of a few classes.

No colours here: each span names a class (``keyword``, ``string`` …) that the diff view maps to
its ``diffview--syntax-<class>`` component style, which takes its colour from the theme. Pure
and thread-safe, so it runs in the screen's worker.
"""

from __future__ import annotations

import threading
import time

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_for_filename
from pygments.token import (
    Comment,
    Keyword,
    Literal,
    Name,
    Number,
    Operator,
    String,
    _TokenType,
)
from pygments.util import ClassNotFound

MAX_HIGHLIGHT_CHARS = 4_000_000
"""Files larger than this (in characters) are shown without syntax colours."""

SYNTAX_CLASSES = (
    "keyword",
    "string",
    "comment",
    "number",
    "function",
    "type",
    "builtin",
    "operator",
)
"""Every class a span can have."""

LineSpans = list[tuple[int, int, str]]
"""(start, end, class) character spans of one line."""

_ORDER: tuple[tuple[_TokenType, str], ...] = (
    (Comment, "comment"),
    (String, "string"),
    (Number, "number"),
    (Keyword.Type, "type"),
    (Keyword, "keyword"),
    (Name.Builtin, "builtin"),
    (Name.Function, "function"),
    (Name.Class, "type"),
    (Name.Decorator, "function"),
    (Name.Tag, "keyword"),
    (Name.Attribute, "function"),
    (Literal, "string"),
    (Operator.Word, "keyword"),
)
_cache: dict[_TokenType, str | None] = {}


def _class_of(ttype: _TokenType) -> str | None:
    try:
        return _cache[ttype]
    except KeyError:
        pass
    found = None
    for parent, name in _ORDER:
        if ttype in parent:
            found = name
            break
    _cache[ttype] = found
    return found


def lexer_for(filename: str) -> Lexer | None:
    """The Pygments lexer for a file name, or None when there is none (plain text)."""
    try:
        return get_lexer_for_filename(filename, stripnl=False, ensurenl=False, stripall=False)
    except ClassNotFound:
        return None


def highlight_lines(
    lines: list[str], filename: str, cancel: threading.Event | None = None
) -> list[LineSpans] | None:
    """Spans per line for ``lines`` (the file split on newlines), or None when not highlighted.

    Multi-line constructs (docstrings, block comments) are right, because the whole text is
    lexed at once and the tokens are then cut at line ends. A set ``cancel`` stops the work
    within a few thousand tokens (None is returned): a stale highlight must not keep a core
    and the GIL busy after the selection moved on.
    """
    lexer = lexer_for(filename)
    if lexer is None:
        return None
    total = sum(len(line) + 1 for line in lines)
    if total > MAX_HIGHLIGHT_CHARS:
        return None
    out: list[LineSpans] = [[] for _ in lines]
    text = "\n".join(lines)
    row = 0
    col = 0
    nlines = len(lines)
    for n, (ttype, value) in enumerate(lexer.get_tokens(text)):
        if not n % 1024:
            if cancel is not None and cancel.is_set():
                return None
            # Hand the GIL to the event loop now and then: lexing is pure Python.
            time.sleep(0)
        cls = _class_of(ttype)
        if "\n" not in value:
            if cls is not None and value and row < nlines:
                out[row].append((col, col + len(value), cls))
            col += len(value)
            continue
        parts = value.split("\n")
        for k, part in enumerate(parts):
            if k:
                row += 1
                col = 0
            if cls is not None and part and row < nlines:
                out[row].append((col, col + len(part), cls))
            col += len(part)
    return out
