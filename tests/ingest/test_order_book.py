"""The local order book: Bybit's snapshot/delta rules, checked against a reference model."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.bybit.book import BookGap, LocalBook
from ingest.bybit.parse import BookUpdate

Level = tuple[Decimal, Decimal]


def update(u: int, bids=(), asks=(), snapshot=False) -> BookUpdate:
    return BookUpdate("BTCUSDT", snapshot, tuple(bids), tuple(asks), u, None, 0)


def reference(updates: list[BookUpdate]) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    """The book as the venue means it: plain dicts, snapshot replaces, size 0 deletes."""
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    for up in updates:
        if up.snapshot or up.update_id == 1:
            bids, asks = {}, {}
        for side, levels in ((bids, up.bids), (asks, up.asks)):
            for price, size in levels:
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
    return bids, asks


prices = st.integers(1, 60).map(lambda i: Decimal(i) / 2)  # a small grid, so deltas hit existing levels
sizes = st.one_of(st.just(Decimal("0")), st.integers(1, 10_000).map(lambda i: Decimal(i) / 1000))
levels = st.lists(st.tuples(prices, sizes), max_size=8)


@st.composite
def streams(draw) -> list[BookUpdate]:
    start = draw(st.integers(2, 10_000))
    out = [update(start, draw(levels), draw(levels), snapshot=True)]
    for u in range(start + 1, start + 1 + draw(st.integers(0, 40))):
        out.append(update(u, draw(levels), draw(levels)))
    return out


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(1, 30))
def test_any_valid_delta_sequence_gives_the_reference_book(stream, n):
    book = LocalBook("BTCUSDT")
    for up in stream:
        assert book.apply(up)
    bids, asks = reference(stream)
    assert dict(book.bids) == bids and dict(book.asks) == asks
    top_bids, top_asks = book.top(n)
    assert top_bids == sorted(bids.items(), reverse=True)[:n]
    assert top_asks == sorted(asks.items())[:n]
    assert book.update_id == stream[-1].update_id


@given(streams(), st.integers(2, 5), st.data())
def test_a_gap_in_update_ids_is_detected_never_applied(stream, jump, data):
    book = LocalBook("BTCUSDT")
    for up in stream:
        book.apply(up)
    before = (dict(book.bids), dict(book.asks))
    gapped = update(stream[-1].update_id + jump, data.draw(levels), data.draw(levels))
    with pytest.raises(BookGap):
        book.apply(gapped)
    assert (dict(book.bids), dict(book.asks)) == before


def test_u_equal_1_resets_like_a_snapshot_and_repeats_are_ignored():
    book = LocalBook("BTCUSDT")
    book.apply(update(500, [(Decimal("10"), Decimal("1"))], [(Decimal("11"), Decimal("1"))], snapshot=True))
    assert not book.apply(update(500, [(Decimal("9"), Decimal("1"))]))  # the same id again: already applied
    book.apply(update(1, [(Decimal("20"), Decimal("2"))], [(Decimal("21"), Decimal("2"))]))  # service restart
    assert dict(book.bids) == {Decimal("20"): Decimal("2")} and dict(book.asks) == {Decimal("21"): Decimal("2")}
    book.apply(update(2, asks=[(Decimal("21"), Decimal("0"))]))
    assert not book.asks


def test_a_delta_before_any_snapshot_is_a_gap():
    with pytest.raises(BookGap, match="before any snapshot"):
        LocalBook("BTCUSDT").apply(update(7, [(Decimal("1"), Decimal("1"))]))
