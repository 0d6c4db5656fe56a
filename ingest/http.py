"""HTTP GET for the ingestors: one shared limiter, statuses mapped to typed errors, bounded bodies.

Callers decide what each error means for them (a Bybit 403 is an IP ban, an EDGAR
503 a rate-limit page): this module only makes sure no error page is ever handed
to a parser as if it were data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from ingest.limits import RateLimiter, retry_after_s
from ingest.metrics import HTTP_RESPONSES

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    """A successful (2xx) or not-modified (304) response; header names are case-insensitive."""

    status: int
    url: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def not_modified(self) -> bool:
        return self.status == 304


class HttpError(Exception):
    """A response that carries no data: the status, the URL and how long the server asked us to wait."""

    def __init__(self, status: int, url: str, retry_after: float | None = None, detail: str = "") -> None:
        super().__init__(f"HTTP {status} from {url}{': ' + detail if detail else ''}")
        self.status = status
        self.url = url
        self.retry_after = retry_after


class Forbidden(HttpError):
    """403: for Bybit an IP ban, for EDGAR an undeclared or throttled client."""


class RateLimited(HttpError):
    """429."""


class Unavailable(HttpError):
    """5xx, including EDGAR's 503 rate-limit page."""


class BodyTooLarge(HttpError):
    """The body exceeded the configured cap; it was not read."""


def _error_for(status: int, url: str, headers: Mapping[str, str], body: bytes) -> HttpError:
    retry = retry_after_s(headers.get("Retry-After"), default=0.0) or None
    detail = body[:200].decode("utf-8", "replace").strip().replace("\n", " ")
    if status == 403:
        return Forbidden(status, url, retry, detail)
    if status == 429:
        return RateLimited(status, url, retry, detail)
    if status >= 500:
        return Unavailable(status, url, retry, detail)
    return HttpError(status, url, retry, detail)


async def get(session: aiohttp.ClientSession, url: str, *, source: str, limiter: RateLimiter | None = None,
              params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
              timeout_s: float = 30.0, max_bytes: int = MAX_BODY_BYTES) -> Response:
    """GET `url` after the limiter allows it; 2xx and 304 return, anything else raises an `HttpError`."""
    if limiter is not None:
        await limiter.acquire()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.get(url, params=params, headers=headers, timeout=timeout, allow_redirects=True) as resp:
        HTTP_RESPONSES.labels(source, str(resp.status)).inc()
        if resp.content_length is not None and resp.content_length > max_bytes:
            raise BodyTooLarge(resp.status, str(resp.url), detail=f"{resp.content_length} bytes")
        body = await resp.content.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise BodyTooLarge(resp.status, str(resp.url), detail=f"more than {max_bytes} bytes")
        if resp.status == 304 or 200 <= resp.status < 300:
            return Response(resp.status, str(resp.url), CIMultiDictProxy(CIMultiDict(resp.headers)), body)
        raise _error_for(resp.status, str(resp.url), resp.headers, body)
