"""Settings of `finsignal backfill` (`FINSIGNAL_BACKFILL_*`); the sources' own settings say where and how politely."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ingest.settings import ComponentSettings

Source = Literal["bybit", "filings"]


class BackfillSettings(ComponentSettings):
    """What history to fetch. Endpoints, symbols, intervals and rate limits come from `BybitSettings` and
    `FilingsSettings`, so a backfill asks the same hosts, as politely, as the live ingestors."""

    section: ClassVar[str] = "backfill"

    sources: list[Source] = Field(default_factory=lambda: ["bybit", "filings"],
                                  description="remote sources to backfill; filings is skipped (and the manifest "
                                  "says so) while FINSIGNAL_FILINGS_USER_AGENT is unset, unless named explicitly")
    companies: list[str] = Field(default_factory=list, description=(
        "EDGAR companies by CIK or ticker (per-CIK submissions JSON); empty: every company, from the quarterly "
        "full index (form.idx), filtered by forms"))
    forms: list[str] | None = Field(None, description="EDGAR form types (8-K also takes 8-K/A); unset: "
                                    "FINSIGNAL_FILINGS_FORMS")
    edgar_data_url: str = Field("https://data.sec.gov", description="host of the submissions JSON "
                                "(/submissions/CIK##########.json)")
    acceptance: Literal["index", "submissions"] = Field("index", description=(
        "where a filing's acceptance time comes from: its -index.htm page (New York time, authoritative; one "
        "more request per filing), or the submissions JSON's acceptanceDateTime, whose trailing Z is New York "
        "time for some filers and UTC for others, so the later of both readings is taken (never early, up "
        "to 5 h late)"))
    kline_chunk: int = Field(1000, ge=1, le=1000, description="candles per request and per resumable part")
    concurrency: int = Field(4, ge=1, description="requests in flight per source (the rate limiters still apply)")
    attempts: int = Field(5, ge=1, description="tries of one EDGAR request before the filing is listed as missing")
