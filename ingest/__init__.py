"""Ingestion: sources (news feeds, SEC EDGAR, Bybit) onto Kafka; owns the document and market-event contracts."""

from ingest.contracts import (
    ContractError,
    Document,
    Kline,
    MarketEvent,
    OrderBook,
    Ticker,
    Trade,
    decode_document,
    decode_market_event,
    document_id,
)

__all__ = [
    "ContractError",
    "Document",
    "Kline",
    "MarketEvent",
    "OrderBook",
    "Ticker",
    "Trade",
    "decode_document",
    "decode_market_event",
    "document_id",
]
