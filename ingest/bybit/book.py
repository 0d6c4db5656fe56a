"""A local order book kept from Bybit snapshots and deltas, with the sequence checks the venue documents.

Rules (Bybit v5, "Orderbook"): a snapshot replaces the book; a message with
`u == 1` is a snapshot after a service restart and replaces it too; in a delta a
size of "0" deletes the level, any other size sets it; update ids follow each
other by one. A missing id, or a delta with no snapshot before it, raises
`BookGap`: the caller resubscribes for a fresh snapshot instead of guessing.
"""

from __future__ import annotations

from decimal import Decimal

from sortedcontainers import SortedDict

from ingest.bybit.parse import BookUpdate


class BookGap(Exception):
    """The book can no longer be trusted: resubscribe for a snapshot."""


class LocalBook:
    """Bids and asks of one instrument; `apply` returns False for a repeated (already applied) update."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: SortedDict = SortedDict()  # price -> size, iterated from the highest price by `top`
        self.asks: SortedDict = SortedDict()
        self.update_id: int | None = None
        self.seq: int | None = None

    @property
    def ready(self) -> bool:
        return self.update_id is not None

    def clear(self) -> None:
        """Forget everything (after a reconnect or a gap)."""
        self.bids.clear()
        self.asks.clear()
        self.update_id = None
        self.seq = None

    def apply(self, update: BookUpdate) -> bool:
        """Apply one push; raise `BookGap` when it does not follow the last one."""
        if update.symbol != self.symbol:
            raise ValueError(f"update for {update.symbol} applied to the {self.symbol} book")
        if update.snapshot or update.update_id == 1:
            self.clear()
            self._set(self.bids, update.bids)
            self._set(self.asks, update.asks)
        else:
            if self.update_id is None:
                raise BookGap(f"{self.symbol}: delta u={update.update_id} before any snapshot")
            if update.update_id == self.update_id:
                return False  # the same update again: already applied
            if update.update_id != self.update_id + 1:
                raise BookGap(f"{self.symbol}: update id jumped from {self.update_id} to {update.update_id}")
            self._set(self.bids, update.bids)
            self._set(self.asks, update.asks)
        self.update_id = update.update_id
        self.seq = update.seq
        return True

    @staticmethod
    def _set(side: SortedDict, levels: tuple[tuple[Decimal, Decimal], ...]) -> None:
        for price, size in levels:
            if size == 0:
                side.pop(price, None)
            else:
                side[price] = size

    def top(self, n: int) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """The best `n` bids (highest first) and asks (lowest first)."""
        bid_prices = self.bids.keys()
        bids = [(p, self.bids[p]) for p in bid_prices[-1: -n - 1: -1]] if n else []
        asks = [(p, self.asks[p]) for p in self.asks.keys()[:n]]
        return bids, asks
