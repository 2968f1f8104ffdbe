"""Operation (pure): line alignment of two texts for display — blocks, rows, hunks, folds.

This module turns two versions of a text into what a side-by-side or unified diff view shows,
without rendering anything and without any I/O:

* ``decode_lines`` splits content into lines, or says it is binary (``backend.diff.looks_binary``).
* ``diff_blocks`` aligns two line lists into ``Block`` runs (equal, replace, delete, insert). The
  common prefix and suffix are cut first, so a small edit in a 20,000-line file costs almost
  nothing; the middle goes through ``difflib.SequenceMatcher``.
* ``DiffLayout`` maps those blocks onto display rows for one mode (``"split"`` pairs the lines
  of a replace block side by side, ``"unified"`` lists removed then added lines), folds long
  unchanged runs down to ``context`` lines on each side, and knows where each hunk starts. It
  stores *segments* (runs of rows of one kind), not rows, so it is as cheap for a 20,000-line
  file as for a 20-line one; ``row(i)`` finds any row by binary search.
* ``intraline`` finds the changed words of a pair of lines (the word/char emphasis).

Invariants: every line of both sides appears in exactly one row unless it is inside a fold;
expanding every fold shows every line; rows never cross block boundaries.
"""

from __future__ import annotations

import enum
import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from backend.diff import looks_binary

__all__ = [
    "MAX_INTRALINE_CHARS",
    "Block",
    "DiffLayout",
    "Row",
    "RowKind",
    "Side",
    "count_changes",
    "decode_lines",
    "describe_side",
    "diff_blocks",
    "intraline",
]

MAX_INTRALINE_CHARS = 2000
"""Lines longer than this get no word emphasis (the whole line is marked instead)."""

MIN_SIMILARITY = 0.3
"""Below this ratio of shared characters a pair of lines is too different for word emphasis."""

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")


class RowKind(enum.StrEnum):
    """What one display row shows."""

    EQUAL = "equal"
    """The same line on both sides."""
    CHANGED = "changed"
    """A removed line and its replacement side by side (split mode only)."""
    DELETED = "deleted"
    """A line only on the left (A) side."""
    INSERTED = "inserted"
    """A line only on the right (B) side."""
    FOLD = "fold"
    """Unchanged lines folded away; ``count`` says how many."""


@dataclass(frozen=True, slots=True)
class Block:
    """A run of lines: ``a[a0:a1]`` became ``b[b0:b1]``."""

    tag: str
    """``equal``, ``replace``, ``delete`` or ``insert`` (difflib's opcode names)."""
    a0: int
    a1: int
    b0: int
    b1: int


@dataclass(frozen=True, slots=True)
class Row:
    """One display row.

    ``a``/``b`` are 0-based line indexes into each side (None where the side is empty).
    For a DELETED or INSERTED row that came from a replace block in unified mode, ``partner``
    is the index of the line on the other side it replaced, for word emphasis.
    """

    kind: RowKind
    a: int | None
    b: int | None
    partner: int | None = None
    fold: int = -1
    """For FOLD rows: the fold id (pass it to ``DiffLayout.expand``)."""
    count: int = 0
    """For FOLD rows: how many unchanged lines are hidden."""


@dataclass(frozen=True, slots=True)
class Side:
    """What is known about one side of a file diff before any alignment."""

    size: int
    sha256: str
    binary: bool


def describe_side(data: bytes) -> Side:
    """Size, SHA-256 and binary flag of one side's content."""
    return Side(len(data), hashlib.sha256(data).hexdigest(), looks_binary(data))


def decode_lines(data: bytes) -> list[str] | None:
    """The lines of ``data`` without line ends, or None when it looks binary.

    A final newline does not make an extra empty line. Invalid UTF-8 past the sniffed head is
    replaced with U+FFFD.
    """
    if looks_binary(data):
        return None
    if not data:
        return []
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def diff_blocks(a: Sequence[str], b: Sequence[str]) -> list[Block]:
    """Align two line lists into blocks covering both completely, in order.

    Patience alignment (as ``git diff --patience``): lines that occur exactly once on each side
    are anchors, the longest run of anchors in the same order on both sides (a longest
    increasing subsequence, O(n log n)) is matched, and the gaps between anchors are aligned
    the same way, recursively. Common prefixes and suffixes are matched directly at every
    level, so a small edit in a 20,000-line file costs almost nothing. A gap without unique
    lines goes through ``difflib.SequenceMatcher`` (autojunk on for long gaps, so very common
    lines such as blank ones cannot make it quadratic).
    """
    pairs = _match_pairs(a, b)
    blocks: list[Block] = []
    i = j = 0
    k = 0
    n = len(pairs)
    while k < n:
        pi, pj = pairs[k]
        if pi > i or pj > j:
            blocks.append(Block(_tag(pi - i, pj - j), i, pi, j, pj))
        run = 1
        while k + run < n and pairs[k + run] == (pi + run, pj + run):
            run += 1
        blocks.append(Block("equal", pi, pi + run, pj, pj + run))
        i, j = pi + run, pj + run
        k += run
    if i < len(a) or j < len(b):
        blocks.append(Block(_tag(len(a) - i, len(b) - j), i, len(a), j, len(b)))
    return _merge(blocks)


def _tag(na: int, nb: int) -> str:
    return "replace" if na and nb else "delete" if na else "insert"


def _match_pairs(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Matched (a index, b index) line pairs, increasing on both sides."""
    out: list[tuple[int, int]] = []
    stack = [(0, len(a), 0, len(b))]
    while stack:
        a0, a1, b0, b1 = stack.pop()
        while a0 < a1 and b0 < b1 and a[a0] == b[b0]:
            out.append((a0, b0))
            a0 += 1
            b0 += 1
        while a0 < a1 and b0 < b1 and a[a1 - 1] == b[b1 - 1]:
            a1 -= 1
            b1 -= 1
            out.append((a1, b1))
        if a0 >= a1 or b0 >= b1:
            continue
        anchors = _unique_anchors(a, b, a0, a1, b0, b1)
        if not anchors:
            sm = SequenceMatcher(None, a[a0:a1], b[b0:b1], autojunk=(a1 - a0) + (b1 - b0) > 400)
            for bi, bj, size in sm.get_matching_blocks():
                out.extend((a0 + bi + t, b0 + bj + t) for t in range(size))
            continue
        ia, ib = a0, b0
        for ai, bj in anchors:
            if ai > ia or bj > ib:
                stack.append((ia, ai, ib, bj))
            out.append((ai, bj))
            ia, ib = ai + 1, bj + 1
        if ia < a1 or ib < b1:
            stack.append((ia, a1, ib, b1))
    out.sort()
    return out


def _unique_anchors(
    a: Sequence[str], b: Sequence[str], a0: int, a1: int, b0: int, b1: int
) -> list[tuple[int, int]]:
    """The longest in-order chain of lines that occur once in ``a[a0:a1]`` and in ``b[b0:b1]``."""
    count_a: dict[str, int] = {}
    pos_a: dict[str, int] = {}
    for i in range(a0, a1):
        line = a[i]
        c = count_a.get(line)
        if c is None:
            count_a[line] = 1
            pos_a[line] = i
        else:
            count_a[line] = c + 1
    count_b: dict[str, int] = {}
    pos_b: dict[str, int] = {}
    for j in range(b0, b1):
        line = b[j]
        if line in count_a:
            c = count_b.get(line)
            if c is None:
                count_b[line] = 1
                pos_b[line] = j
            else:
                count_b[line] = c + 1
    # In order of first appearance in a, which for lines unique in a is their position.
    seq = [
        (pos_a[line], pos_b[line])
        for line, c in count_a.items()
        if c == 1 and count_b.get(line) == 1
    ]
    if not seq:
        return []
    tails: list[int] = []
    tail_at: list[int] = []
    back = [-1] * len(seq)
    for k, (_i, j) in enumerate(seq):
        p = bisect_left(tails, j)
        if p == len(tails):
            tails.append(j)
            tail_at.append(k)
        else:
            tails[p] = j
            tail_at[p] = k
        back[k] = tail_at[p - 1] if p else -1
    chain = []
    k = tail_at[-1]
    while k >= 0:
        chain.append(seq[k])
        k = back[k]
    chain.reverse()
    return chain


def _merge(blocks: list[Block]) -> list[Block]:
    """Join neighbours of the same tag and turn delete+insert pairs into one replace."""
    out: list[Block] = []
    for blk in blocks:
        if blk.a0 == blk.a1 and blk.b0 == blk.b1:
            continue
        if out:
            prev = out[-1]
            same = prev.tag == blk.tag
            changes = prev.tag != "equal" and blk.tag != "equal"
            if same or changes:
                tag = prev.tag if same else "replace"
                out[-1] = Block(tag, prev.a0, blk.a1, prev.b0, blk.b1)
                continue
        out.append(blk)
    return out


def count_changes(blocks: Sequence[Block]) -> tuple[int, int]:
    """(lines added, lines removed) in a list of blocks."""
    added = removed = 0
    for blk in blocks:
        if blk.tag != "equal":
            added += blk.b1 - blk.b0
            removed += blk.a1 - blk.a0
    return added, removed


def intraline(a: str, b: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The changed character spans of a line and its replacement, word by word.

    Returns ``(spans_in_a, spans_in_b)``, each a list of ``(start, end)`` offsets. Both are
    empty when the lines are too long or too different for emphasis to help (the row colour
    already says the whole line changed).
    """
    if len(a) > MAX_INTRALINE_CHARS or len(b) > MAX_INTRALINE_CHARS:
        return [], []
    ta = _TOKEN.findall(a)
    tb = _TOKEN.findall(b)
    sm = SequenceMatcher(None, ta, tb, autojunk=False)
    same = 0
    sa: list[tuple[int, int]] = []
    sb: list[tuple[int, int]] = []
    # Character offsets of each token start (and the end), for both sides.
    oa = _offsets(ta)
    ob = _offsets(tb)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            same += oa[i2] - oa[i1]
            continue
        if i2 > i1:
            _add_span(sa, oa[i1], oa[i2])
        if j2 > j1:
            _add_span(sb, ob[j1], ob[j2])
    total = len(a) + len(b)
    if total and 2 * same / total < MIN_SIMILARITY:
        return [], []
    return sa, sb


def _offsets(tokens: list[str]) -> list[int]:
    out = [0]
    n = 0
    for t in tokens:
        n += len(t)
        out.append(n)
    return out


def _add_span(spans: list[tuple[int, int]], start: int, end: int) -> None:
    if spans and spans[-1][1] == start:
        spans[-1] = (spans[-1][0], end)
    else:
        spans.append((start, end))


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Segment:
    """``length`` consecutive rows of one kind; row k shows a0+k / b0+k (or -1: no side)."""

    kind: RowKind
    a0: int
    b0: int
    length: int
    partner0: int = -1
    """First partner line index (unified replace), or -1."""
    partners: int = 0
    """How many of the rows have a partner."""
    fold: int = -1
    count: int = 0


class DiffLayout:
    """The display rows of a file diff in one mode, with folds and hunks.

    Args:
        blocks: from ``diff_blocks``.
        mode: ``"split"`` (side by side) or ``"unified"``.
        context: unchanged lines kept visible around each change.
        expanded: ids of folds to show in full.
        min_fold: folds hiding fewer lines than this are not made (the lines are shown).
    """

    def __init__(
        self,
        blocks: Sequence[Block],
        *,
        mode: str = "split",
        context: int = 3,
        expanded: Collection[int] = (),
        min_fold: int = 4,
    ) -> None:
        if mode not in ("split", "unified"):
            raise ValueError(f"mode must be 'split' or 'unified', not {mode!r}")
        self.mode = mode
        self.context = context
        self.blocks = tuple(blocks)
        self.expanded = frozenset(expanded)
        segs: list[_Segment] = []
        hunks: list[int] = []
        folds: dict[int, int] = {}
        row = 0
        has_changes = any(b.tag != "equal" for b in self.blocks)
        last = len(self.blocks) - 1
        gap_before_hunk = True
        for i, blk in enumerate(self.blocks):
            if blk.tag == "equal":
                n = blk.a1 - blk.a0
                head = 0 if i == 0 else context
                tail = 0 if i == last else context
                hidden = n - head - tail
                if has_changes and i not in self.expanded and hidden >= min_fold:
                    if head:
                        segs.append(_Segment(RowKind.EQUAL, blk.a0, blk.b0, head))
                    folds[i] = row + head
                    segs.append(
                        _Segment(
                            RowKind.FOLD, blk.a0 + head, blk.b0 + head, 1, fold=i, count=hidden
                        )
                    )
                    if tail:
                        segs.append(_Segment(RowKind.EQUAL, blk.a1 - tail, blk.b1 - tail, tail))
                    row += head + 1 + tail
                    gap_before_hunk = True
                else:
                    segs.append(_Segment(RowKind.EQUAL, blk.a0, blk.b0, n))
                    row += n
                    # A short unchanged gap (at most 2*context lines) joins two changes into
                    # one hunk, as in a unified diff.
                    if n > 2 * context:
                        gap_before_hunk = True
                continue
            if gap_before_hunk:
                hunks.append(row)
                gap_before_hunk = False
            na, nb = blk.a1 - blk.a0, blk.b1 - blk.b0
            if mode == "split":
                k = min(na, nb)
                if k:
                    segs.append(_Segment(RowKind.CHANGED, blk.a0, blk.b0, k))
                if na > k:
                    segs.append(_Segment(RowKind.DELETED, blk.a0 + k, -1, na - k))
                if nb > k:
                    segs.append(_Segment(RowKind.INSERTED, -1, blk.b0 + k, nb - k))
                row += max(na, nb)
            else:
                k = min(na, nb)
                if na:
                    segs.append(
                        _Segment(RowKind.DELETED, blk.a0, -1, na, partner0=blk.b0, partners=k)
                    )
                if nb:
                    segs.append(
                        _Segment(RowKind.INSERTED, -1, blk.b0, nb, partner0=blk.a0, partners=k)
                    )
                row += na + nb
        self._segs = segs
        self._starts: list[int] = []
        acc = 0
        for sg in segs:
            self._starts.append(acc)
            acc += sg.length
        self.height = acc
        """The number of display rows."""
        self.hunks: tuple[int, ...] = tuple(hunks)
        """The row where each hunk starts, in order."""
        self.folds: dict[int, int] = folds
        """Fold id → the row it is shown on."""

    def row(self, y: int) -> Row:
        """The row at index ``y`` (0 ≤ y < height)."""
        if not 0 <= y < self.height:
            raise IndexError(y)
        i = bisect_right(self._starts, y) - 1
        sg = self._segs[i]
        k = y - self._starts[i]
        if sg.kind is RowKind.FOLD:
            return Row(RowKind.FOLD, sg.a0, sg.b0, fold=sg.fold, count=sg.count)
        a = sg.a0 + k if sg.a0 >= 0 else None
        b = sg.b0 + k if sg.b0 >= 0 else None
        partner = sg.partner0 + k if sg.partner0 >= 0 and k < sg.partners else None
        return Row(sg.kind, a, b, partner)

    def rows(self, start: int = 0, end: int | None = None) -> list[Row]:
        """Rows ``start`` to ``end`` (exclusive), clipped to the layout."""
        stop = self.height if end is None else min(end, self.height)
        return [self.row(y) for y in range(max(0, start), stop)]

    def expand(self, fold: int) -> DiffLayout:
        """The same layout with one more fold opened."""
        return DiffLayout(
            self.blocks,
            mode=self.mode,
            context=self.context,
            expanded=self.expanded | {fold},
        )

    def expand_all(self) -> DiffLayout:
        """The same layout with every fold opened."""
        return DiffLayout(
            self.blocks,
            mode=self.mode,
            context=self.context,
            expanded=self.expanded | set(range(len(self.blocks))),
        )

    def with_mode(self, mode: str) -> DiffLayout:
        """The same diff in another mode (open folds stay open)."""
        return DiffLayout(self.blocks, mode=mode, context=self.context, expanded=self.expanded)

    def next_hunk(self, y: int) -> int | None:
        """The first hunk starting after row ``y``, or None."""
        i = bisect_right(self.hunks, y)
        return self.hunks[i] if i < len(self.hunks) else None

    def prev_hunk(self, y: int) -> int | None:
        """The last hunk starting before row ``y``, or None."""
        i = bisect_right(self.hunks, y - 1) - 1
        return self.hunks[i] if i >= 0 else None

    def hunk_index(self, y: int) -> int:
        """Which hunk (0-based) row ``y`` is in or after; -1 before the first."""
        return bisect_right(self.hunks, y) - 1

    def find(self, old: Row) -> int:
        """The row showing the same line as ``old`` (a row of another layout of this diff).

        Looks for ``old``'s B line (or its A line when it has none); a line hidden in a fold
        gives the fold's row. 0 when nothing matches.
        """
        side_b = old.b is not None
        want = old.b if side_b else old.a
        if want is None:
            return 0
        for start, sg in zip(self._starts, self._segs, strict=True):
            first = sg.b0 if side_b else sg.a0
            if first < 0:
                continue
            span = sg.count if sg.kind is RowKind.FOLD else sg.length
            if first <= want < first + span:
                return start if sg.kind is RowKind.FOLD else start + (want - first)
        return 0

    def fold_at(self, y: int) -> int | None:
        """The fold id shown at row ``y``, or None."""
        if not 0 <= y < self.height:
            return None
        r = self.row(y)
        return r.fold if r.kind is RowKind.FOLD else None
