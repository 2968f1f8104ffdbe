"""backend.textdiff: alignment covers both sides, layouts fold and expand without losing a
line, hunks, intraline spans, decoding."""

from __future__ import annotations

import random

import pytest

from backend.textdiff import (
    Block,
    DiffLayout,
    RowKind,
    count_changes,
    decode_lines,
    describe_side,
    diff_blocks,
    intraline,
)


def _check_cover(a: list[str], b: list[str], blocks: list[Block]) -> None:
    """Blocks tile both sides in order, and equal blocks really are equal."""
    ia = ib = 0
    for blk in blocks:
        assert (blk.a0, blk.b0) == (ia, ib)
        if blk.tag == "equal":
            assert a[blk.a0 : blk.a1] == b[blk.b0 : blk.b1]
        ia, ib = blk.a1, blk.b1
    assert (ia, ib) == (len(a), len(b))


def _seen(layout: DiffLayout) -> tuple[list[int], list[int]]:
    a: list[int] = []
    b: list[int] = []
    for r in layout.rows():
        if r.kind is RowKind.FOLD:
            a.extend(range(r.a, r.a + r.count))
            b.extend(range(r.b, r.b + r.count))
            continue
        if r.a is not None:
            a.append(r.a)
        if r.b is not None:
            b.append(r.b)
    return a, b


@pytest.mark.parametrize("seed", range(12))
def test_random_edits_cover_both_sides_in_every_layout(seed: int) -> None:
    rng = random.Random(seed)
    a = [f"line {rng.randrange(40)}" for _ in range(rng.randrange(0, 300))]
    b = list(a)
    for _ in range(rng.randrange(0, 20)):
        op = rng.random()
        k = rng.randrange(len(b) + 1)
        if op < 0.4 and b and k < len(b):
            b[k] = b[k] + " changed"
        elif op < 0.7 and b and k < len(b):
            del b[k]
        else:
            b.insert(k, f"new {rng.randrange(1000)}")
    blocks = diff_blocks(a, b)
    _check_cover(a, b, blocks)
    added, removed = count_changes(blocks)
    assert len(a) - removed == len(b) - added  # the unchanged lines, counted from each side
    for mode in ("split", "unified"):
        layout = DiffLayout(blocks, mode=mode, context=2)
        # Folded or not, every line of each side shows up exactly once, in order.
        sa, sb = _seen(layout)
        assert sa == list(range(len(a))) and sb == list(range(len(b)))
        full = layout.expand_all()
        assert not full.folds
        fa, fb = _seen(full)
        assert fa == sa and fb == sb
        if mode == "split":
            assert full.height == sum(max(x.a1 - x.a0, x.b1 - x.b0) for x in blocks)
        else:
            assert full.height == len(a) + added
        # Every hunk starts on a changed row; consecutive hunks are ordered.
        for h in layout.hunks:
            assert layout.row(h).kind in (RowKind.CHANGED, RowKind.DELETED, RowKind.INSERTED)
        assert list(layout.hunks) == sorted(set(layout.hunks))


def test_prefix_and_suffix_are_matched_directly() -> None:
    a = [f"l{i}" for i in range(20_000)]
    b = list(a)
    b[10_000] = "changed"
    blocks = diff_blocks(a, b)
    assert [x.tag for x in blocks] == ["equal", "replace", "equal"]
    assert blocks[1] == Block("replace", 10_000, 10_001, 10_000, 10_001)
    layout = DiffLayout(blocks)
    assert layout.height == 1 + 3 + 1 + 3 + 1  # fold, context, change, context, fold
    assert layout.hunks == (4,)
    assert layout.row(0).kind is RowKind.FOLD and layout.row(0).count == 9_997


def test_folds_expand_one_at_a_time_and_find_keeps_the_line() -> None:
    a = [f"l{i}" for i in range(100)]
    b = list(a)
    b[10] = "x"
    b[80] = "y"
    layout = DiffLayout(diff_blocks(a, b), context=3)
    assert len(layout.folds) == 3 and len(layout.hunks) == 2
    middle = sorted(layout.folds)[1]
    row = layout.folds[middle]
    assert layout.fold_at(row) == middle
    opened = layout.expand(middle)
    assert middle not in opened.folds and len(opened.folds) == 2
    assert opened.height == layout.height + layout.row(row).count - 1
    # The change at line 80 is found again in the other layout and in unified mode.
    r80 = opened.row(opened.hunks[1])
    assert r80.b == 80
    assert layout.row(layout.find(r80)).b == 80
    uni = opened.with_mode("unified")
    assert uni.row(uni.find(r80)).b == 80
    assert uni.next_hunk(uni.hunks[0]) == uni.hunks[1]
    assert uni.prev_hunk(uni.hunks[1]) == uni.hunks[0]
    assert uni.next_hunk(uni.hunks[1]) is None and uni.prev_hunk(0) is None


def test_unified_rows_carry_their_partner_for_word_emphasis() -> None:
    a = ["keep", "old one", "old two", "keep2"]
    b = ["keep", "new one", "keep2"]
    uni = DiffLayout(diff_blocks(a, b), mode="unified")
    rows = uni.rows()
    deleted = [r for r in rows if r.kind is RowKind.DELETED]
    inserted = [r for r in rows if r.kind is RowKind.INSERTED]
    assert [(r.a, r.partner) for r in deleted] == [(1, 1), (2, None)]
    assert [(r.b, r.partner) for r in inserted] == [(1, 1)]
    split = DiffLayout(diff_blocks(a, b), mode="split")
    kinds = [r.kind for r in split.rows()]
    assert kinds == [RowKind.EQUAL, RowKind.CHANGED, RowKind.DELETED, RowKind.EQUAL]


def test_intraline_marks_the_changed_words_only() -> None:
    a = "    total = compute(x, y=5)"
    b = "    total = calc(x, y=6)"
    sa, sb = intraline(a, b)
    assert [a[s:e] for s, e in sa] == ["compute", "5"]
    assert [b[s:e] for s, e in sb] == ["calc", "6"]
    # Nothing in common: no emphasis (the row colour says enough).
    assert intraline("alpha beta", "1234 + 5678") == ([], [])
    assert intraline("x" * 5000, "y" * 5000) == ([], [])


def test_decode_and_describe() -> None:
    assert decode_lines(b"") == []
    assert decode_lines(b"a\nb\n") == ["a", "b"]
    assert decode_lines(b"a\nb") == ["a", "b"]
    assert decode_lines(b"a\r\nb\r\n") == ["a\r", "b\r"]
    assert decode_lines(b"\x00\x01binary") is None
    side = describe_side(b"hello")
    assert side.size == 5 and not side.binary
    assert side.sha256.startswith("2cf24dba")
    assert describe_side(b"\x00" * 10).binary


def test_mode_is_checked() -> None:
    with pytest.raises(ValueError):
        DiffLayout([], mode="sideways")
