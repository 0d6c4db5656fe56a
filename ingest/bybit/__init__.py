"""Bybit v5 public market data: REST kline backfill and the public WebSocket, normalized to MarketEvents."""
