"""`finsignal backfill`: real history (Bybit klines, EDGAR filings, a news archive) as a recording."""
