"""Settings of the news ingestor (`FINSIGNAL_NEWS_*`)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ingest.settings import ComponentSettings

# Names that mean an instrument, matched as whole words, case-insensitively. Crypto names map to
# Bybit linear perpetuals, so a headline about bitcoin reaches the strategies trading BTCUSDT.
DEFAULT_NAMES: dict[str, str] = {
    "bitcoin": "BTCUSDT", "btc": "BTCUSDT", "ethereum": "ETHUSDT", "ether": "ETHUSDT", "eth": "ETHUSDT",
    "solana": "SOLUSDT", "xrp": "XRPUSDT", "ripple": "XRPUSDT", "dogecoin": "DOGEUSDT", "cardano": "ADAUSDT",
    "litecoin": "LTCUSDT", "chainlink": "LINKUSDT", "polkadot": "DOTUSDT", "bnb": "BNBUSDT", "toncoin": "TONUSDT",
    "apple": "AAPL", "microsoft": "MSFT", "nvidia": "NVDA", "tesla": "TSLA", "amazon": "AMZN",
    "alphabet": "GOOGL", "google": "GOOGL", "meta platforms": "META", "netflix": "NFLX", "jpmorgan": "JPM",
    "coinbase": "COIN", "microstrategy": "MSTR", "boeing": "BA",
}
# Cashtags that name a coin rather than a listed share: $BTC is the coin, traded as BTCUSDT.
DEFAULT_CASHTAGS: dict[str, str] = {
    "BTC": "BTCUSDT", "ETH": "ETHUSDT", "SOL": "SOLUSDT", "XRP": "XRPUSDT", "DOGE": "DOGEUSDT",
    "ADA": "ADAUSDT", "LTC": "LTCUSDT", "LINK": "LINKUSDT", "DOT": "DOTUSDT", "BNB": "BNBUSDT", "TON": "TONUSDT",
}


class FeedSpec(BaseModel):
    """One feed: where, what to call it (the Document `source` is `feed:<name>`), how often."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    name: str | None = None
    interval_s: float | None = Field(None, gt=0, description="poll interval; unset means the ingestor default")

    @property
    def label(self) -> str:
        from urllib.parse import urlsplit

        return self.name or urlsplit(self.url).hostname or self.url


class NewsSettings(ComponentSettings):
    """Feeds to poll and how symbols are found in them."""

    section: ClassVar[str] = "news"

    feeds: list[FeedSpec] = Field(
        default_factory=lambda: [
            FeedSpec(url="https://www.coindesk.com/arc/outboundfeeds/rss/", name="coindesk"),
            FeedSpec(url="https://cointelegraph.com/rss", name="cointelegraph"),
            FeedSpec(url="https://www.sec.gov/news/pressreleases.rss", name="sec-press"),
            FeedSpec(url="https://www.federalreserve.gov/feeds/press_all.xml", name="fed-press"),
        ],
        description='JSON list of URLs or {"url", "name", "interval_s"} objects',
    )
    poll_interval_s: float = Field(120.0, gt=0)
    timeout_s: float = Field(20.0, gt=0)
    user_agent: str = "finsignal-news/0.1"
    names: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NAMES),
                                  description="name -> symbol, matched as whole words, case-insensitive")
    cashtags: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CASHTAGS),
                                     description="cashtag -> symbol; other cashtags are taken as they are")
    max_body_chars: int = Field(50_000, ge=0, description="longer entry bodies are cut (and the cut is logged)")
    max_feed_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    backoff_base_s: float = Field(5.0, gt=0)
    backoff_cap_s: float = Field(900.0, gt=0)
    redis_url: str | None = Field(None, description="dedupe state; unset means FINSIGNAL_REDIS_URL, else memory")
    dedupe_ttl_s: int = Field(30 * 24 * 3600, ge=60)
    queue_size: int = Field(1_000, ge=1)

    @field_validator("feeds", mode="before")
    @classmethod
    def _urls_as_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"url": v} if isinstance(v, str) else v for v in value]
        return value
