"""Settings of the EDGAR filings ingestor (`FINSIGNAL_FILINGS_*`)."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from ingest.settings import ComponentSettings

# SEC fair-access policy: declare who you are as "Company Name contact@example.com".
_USER_AGENT = re.compile(r"^\S.*\s[^@\s]+@[^@\s]+\.[^@\s]+$")


class FilingsConfigError(ValueError):
    """The filings ingestor cannot start with this configuration."""


class FilingsSettings(ComponentSettings):
    """What to poll on EDGAR and how politely."""

    section: ClassVar[str] = "filings"

    user_agent: str | None = Field(None, description='required by the SEC: "Company contact@email"')
    base_url: str = Field("https://www.sec.gov", description="EDGAR host; the feed and archives hang off it")
    tickers_url: str = Field("https://www.sec.gov/files/company_tickers.json",
                             description="SEC's CIK -> ticker file; empty string to rely on cik_tickers only")
    forms: list[str] = Field(default_factory=lambda: ["8-K", "10-Q", "10-K"], description="getcurrent type filter")
    document_forms: list[str] = Field(
        default_factory=lambda: ["8-K", "8-K/A", "10-Q", "10-Q/A", "10-K", "10-K/A"],
        description="forms whose primary document is fetched and its text published",
    )
    count: int = Field(40, description="entries per getcurrent request (EDGAR serves 10, 20, 40, 80 or 100)")
    poll_interval_s: float = Field(30.0, gt=0)
    max_requests_per_s: int = Field(8, ge=1, le=9, description="all EDGAR requests together; the SEC allows < 10/s")
    workers: int = Field(4, ge=1, description="filings whose documents are fetched concurrently")
    backoff_s: float = Field(60.0, ge=0, description="first pause after 403/429/503; doubles, capped at 10 min")
    timeout_s: float = Field(30.0, gt=0)
    document_attempts: int = Field(3, ge=1)
    max_body_chars: int = Field(400_000, ge=1_000, description="longer filing texts are cut (Kafka's 1 MiB limit)")
    max_document_bytes: int = Field(30 * 1024 * 1024, ge=1024)
    cik_tickers: dict[str, str] = Field(default_factory=dict, description="CIK -> ticker, wins over the SEC file")
    redis_url: str | None = Field(None, description="dedupe state; unset means FINSIGNAL_REDIS_URL, else memory")
    dedupe_ttl_s: int = Field(90 * 24 * 3600, ge=60)
    queue_size: int = Field(1_000, ge=1)

    def require_user_agent(self) -> str:
        """The declared User-Agent, or `FilingsConfigError`: EDGAR blocks anonymous clients."""
        ua = (self.user_agent or "").strip()
        if not ua:
            raise FilingsConfigError(
                'FINSIGNAL_FILINGS_USER_AGENT is not set; the SEC requires "Company contact@email" '
                "(https://www.sec.gov/os/accessing-edgar-data)")
        if not _USER_AGENT.match(ua):
            raise FilingsConfigError(f'FINSIGNAL_FILINGS_USER_AGENT={ua!r} is not of the form "Company contact@email"')
        return ua
