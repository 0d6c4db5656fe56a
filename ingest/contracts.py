"""Wire contracts owned by ingestion: documents (news, filings) and market events.

Every message is a frozen pydantic model that rejects unknown fields and carries
`schema_version`, so a consumer can refuse what it does not understand instead of
guessing. Timestamps are integer nanoseconds since the Unix epoch (UTC):
`ts_event` is when the thing happened at the source, `ts_ingest` when we saw it.
Prices and sizes are `Decimal` and travel as JSON strings, so no precision is lost.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, Literal, TypeVar, Union
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

DOCUMENT_SCHEMA_VERSION = 1
MARKET_SCHEMA_VERSION = 1
# Version 2 of Ticker added the option fields (implied volatilities, underlying price, greeks); a version 1
# ticker (older recordings) still decodes, with those fields absent.
TICKER_SCHEMA_VERSION = 2

_TRACKING_PARAMS = frozenset(
    {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "fbclid", "gclid", "ref"}
)

SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9._:/-]*$"
Symbol = Annotated[str, Field(min_length=1, max_length=32, pattern=SYMBOL_PATTERN)]
Nanos = Annotated[int, Field(ge=0, description="nanoseconds since the Unix epoch, UTC")]


class ContractError(ValueError):
    """A message that does not satisfy its wire contract; the text says why."""


class WireModel(BaseModel):
    """Base of every wire message: immutable, strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    def to_bytes(self) -> bytes:
        """Serialize to the JSON bytes that go on the wire."""
        return self.model_dump_json().encode()


M = TypeVar("M", bound=BaseModel)


def decode(model: type[M] | TypeAdapter, raw: bytes | str) -> M:
    """Parse and validate wire bytes, raising `ContractError` with a readable reason."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_json(raw)
        return model.model_validate_json(raw)
    except ValidationError as exc:
        name = getattr(model, "__name__", None) or "message"
        raise ContractError(f"invalid {name}: {_summarize(exc)}") from exc


def _summarize(exc: ValidationError, limit: int = 5) -> str:
    """One line per error, first few only: enough to fix the producer, short enough for a header."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


def canonical_url(url: str) -> str:
    """Normalize a URL so the same article reached by different links gets one id.

    Lower-cases scheme and host, drops fragments, default ports, trailing slashes
    and tracking parameters, and sorts the remaining query parameters.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower() or "https"
    host = (parts.hostname or "").lower()
    if parts.port and not (scheme == "http" and parts.port == 80 or scheme == "https" and parts.port == 443):
        host = f"{host}:{parts.port}"
    # Percent-encode what must be (a space, say) but leave escapes alone, so the result is a fixed point.
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~").rstrip("/") or "/"
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _TRACKING_PARAMS)
    return urlunsplit((scheme, host, path, urlencode(query), ""))


def document_id(
    source: str, *, accession: str | None = None, url: str | None = None, content: str | None = None
) -> str:
    """Deterministic document id: from the accession number, else the canonical URL, else the content.

    The same filing or article ingested twice, by two ingestors or after a restart,
    gets the same id, which is what makes downstream deduplication possible.
    """
    if accession:
        basis = f"accession:{accession.strip()}"  # one filing, whichever feed entry announced it
    elif url:
        basis = f"url:{canonical_url(url)}"
    elif content is not None:
        basis = f"content:{source}:{hashlib.sha256(content.encode()).hexdigest()}"
    else:
        raise ContractError("document_id needs an accession number, a URL or the content")
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


class Document(WireModel):
    """A news article or regulatory filing, as published on the `news` and `filings` topics."""

    schema_version: Literal[1] = DOCUMENT_SCHEMA_VERSION
    id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    kind: Literal["news", "filing"]
    source: Annotated[str, Field(min_length=1, max_length=200)]
    title: Annotated[str, Field(max_length=2_000)] = ""
    body: Annotated[str, Field(max_length=5_000_000)] = ""
    url: Annotated[str, Field(max_length=4_000)] | None = None
    symbols: tuple[Symbol, ...] = ()
    ts_event: Nanos
    ts_ingest: Nanos
    # Filings only: the SEC accession number, filer CIK and form type (8-K, 10-Q, ...).
    accession: Annotated[str, Field(pattern=r"^\d{10}-\d{2}-\d{6}$")] | None = None
    cik: Annotated[str, Field(pattern=r"^\d{1,10}$")] | None = None
    form: Annotated[str, Field(max_length=20)] | None = None

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _has_text(self) -> Document:
        if not (self.title.strip() or self.body.strip()):
            raise ValueError("a document needs a title or a body")
        return self

    @property
    def text(self) -> str:
        """What the model reads: title and body, joined."""
        if self.title and self.body:
            return f"{self.title}\n\n{self.body}"
        return self.title or self.body

    @property
    def key(self) -> bytes:
        """Kafka key: the document id, so re-deliveries of one document stay ordered."""
        return self.id.encode()

    @classmethod
    def create(
        cls,
        *,
        kind: Literal["news", "filing"],
        source: str,
        ts_event: int,
        ts_ingest: int,
        title: str = "",
        body: str = "",
        url: str | None = None,
        symbols: tuple[str, ...] | list[str] = (),
        accession: str | None = None,
        cik: str | None = None,
        form: str | None = None,
    ) -> Document:
        """Build a document whose id is derived from what identifies it."""
        doc_id = document_id(source, accession=accession, url=url, content=f"{title}\n{body}")
        return cls(
            id=doc_id, kind=kind, source=source, title=title, body=body, url=url,
            symbols=tuple(symbols), ts_event=ts_event, ts_ingest=ts_ingest,
            accession=accession, cik=cik, form=form,
        )


Price = Annotated[Decimal, Field(allow_inf_nan=False)]
Size = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class _MarketBase(WireModel):
    schema_version: Literal[1] = MARKET_SCHEMA_VERSION
    exchange: Literal["bybit"] = "bybit"
    category: Literal["spot", "linear", "inverse", "option"]
    symbol: Symbol
    ts_event: Nanos
    ts_ingest: Nanos

    @property
    def key(self) -> bytes:
        """Kafka key: the symbol, so each instrument's events stay in order."""
        return self.symbol.encode()


class Kline(_MarketBase):
    """One candle. `closed` is Bybit's `confirm`: only a closed candle is final."""

    type: Literal["kline"] = "kline"
    interval: Annotated[str, Field(pattern=r"^(1|3|5|15|30|60|120|240|360|720|D|W|M)$")]
    start: Nanos
    end: Nanos
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Size
    turnover: Size
    closed: bool

    @model_validator(mode="after")
    def _consistent(self) -> Kline:
        if self.end < self.start:
            raise ValueError("kline end is before its start")
        if not (self.low <= min(self.open, self.close) and self.high >= max(self.open, self.close)):
            raise ValueError("kline open/close outside its low-high range")
        return self


class Trade(_MarketBase):
    """One public trade."""

    type: Literal["trade"] = "trade"
    trade_id: Annotated[str, Field(min_length=1, max_length=64)]
    price: Price
    size: Size
    side: Literal["Buy", "Sell"]


class BookLevel(WireModel):
    """A price level: price and resting size."""

    price: Price
    size: Size


class OrderBook(_MarketBase):
    """Top-N levels of the local book after an update, bids descending, asks ascending."""

    type: Literal["orderbook"] = "orderbook"
    depth: Annotated[int, Field(gt=0)]
    update_id: Annotated[int, Field(ge=0)]
    seq: Annotated[int, Field(ge=0)] | None = None
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]

    @model_validator(mode="after")
    def _sorted(self) -> OrderBook:
        bids = [lvl.price for lvl in self.bids]
        asks = [lvl.price for lvl in self.asks]
        if bids != sorted(bids, reverse=True) or asks != sorted(asks):
            raise ValueError("book levels out of order")
        if bids and asks and bids[0] >= asks[0]:
            raise ValueError("crossed book: best bid >= best ask")
        return self


class Ticker(_MarketBase):
    """Merged ticker state; fields the venue did not send are absent (null on the wire), never zero.

    Option tickers also carry implied volatilities (fractions: 0.4896 is 48.96%), the underlying's
    price and the greeks; a side of an option's book with nothing resting is absent, not a zero price.
    """

    schema_version: Literal[1, 2] = TICKER_SCHEMA_VERSION  # type: ignore[assignment]
    type: Literal["ticker"] = "ticker"
    last_price: Price | None = None
    bid1_price: Price | None = None
    bid1_size: Size | None = None
    ask1_price: Price | None = None
    ask1_size: Size | None = None
    mark_price: Price | None = None
    index_price: Price | None = None
    high_price_24h: Price | None = None
    low_price_24h: Price | None = None
    volume_24h: Size | None = None
    turnover_24h: Size | None = None
    open_interest: Size | None = None
    funding_rate: Price | None = None
    # schema version 2: options
    bid1_iv: Size | None = None
    ask1_iv: Size | None = None
    mark_iv: Size | None = None
    underlying_price: Price | None = None
    delta: Price | None = None
    gamma: Price | None = None
    vega: Price | None = None
    theta: Price | None = None

    @model_validator(mode="after")
    def _fields_of_its_version(self) -> Ticker:
        if self.schema_version == 1:
            newer = [name for name in TICKER_V2_FIELDS if getattr(self, name) is not None]
            if newer:
                raise ValueError(f"{', '.join(newer)}: not in ticker schema version 1")
        return self


TICKER_V2_FIELDS = ("bid1_iv", "ask1_iv", "mark_iv", "underlying_price", "delta", "gamma", "vega", "theta")


MarketEvent = Annotated[Union[Kline, Trade, OrderBook, Ticker], Field(discriminator="type")]
MARKET_EVENT = TypeAdapter(MarketEvent)


def decode_document(raw: bytes | str) -> Document:
    """Validate a `Document` from wire bytes."""
    return decode(Document, raw)


def decode_market_event(raw: bytes | str) -> Kline | Trade | OrderBook | Ticker:
    """Validate any `MarketEvent` from wire bytes, dispatching on its `type`."""
    try:
        return MARKET_EVENT.validate_json(raw)
    except ValidationError as exc:
        raise ContractError(f"invalid MarketEvent: {_summarize(exc)}") from exc
