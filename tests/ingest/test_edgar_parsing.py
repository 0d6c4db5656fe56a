"""EDGAR pages: the getcurrent feed, index pages, documents, company tickers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.filings.edgar import (
    EdgarParseError,
    Filer,
    attribute,
    index_filers,
    rebase,
    document_text,
    items_of,
    one_per_accession,
    parse_current_feed,
    primary_document_url,
)
from ingest.filings.service import parse_company_tickers
from tests.ingest.servers import fixture

BASE = "https://www.sec.gov"


def test_feed_entries_carry_the_company_cik_not_the_accession_prefix():
    entries = parse_current_feed(fixture("edgar", "getcurrent_8-K.atom").read_bytes(), BASE)
    assert [(e.form, e.cik, e.accession) for e in entries] == [
        ("8-K", "0000030371", "0001326160-24-000112"),
        ("8-K", "0001326160", "0001326160-24-000112"),
        ("8-K", "0000789019", "0001193125-24-150101"),
        ("8-K", "0000320193", "0000320193-24-000069"),
        ("8-K", "0000003153", "0001193125-24-151488"),
        ("8-K", "0000041091", "0001193125-24-151488"),
    ]
    apple = entries[3]
    assert apple.items == ("2.02", "9.01") and apple.company == "Apple Inc." and apple.role == "Filer"
    assert apple.index_url.endswith("/000032019324000069/0000320193-24-000069-index.htm")
    assert apple.updated_ns == 1717014634 * 1_000_000_000  # 16:30:34-04:00


def test_one_filing_per_accession_preferring_a_listed_filer():
    entries = parse_current_feed(fixture("edgar", "getcurrent_8-K.atom").read_bytes(), BASE)
    kept = one_per_accession(entries, has_ticker=lambda cik: cik == "0001326160")
    assert len(kept) == 4
    duke = next(f for f in kept if f.accession == "0001326160-24-000112")
    assert (duke.cik, duke.company) == ("0001326160", "DUKE ENERGY CORP")
    assert [f.cik for f in duke.filers] == ["0000030371", "0001326160"]


def test_co_registrants_without_a_ticker_go_to_the_parent_not_the_first_listed_subsidiary():
    entries = parse_current_feed(fixture("edgar", "getcurrent_8-K.atom").read_bytes(), BASE)
    # Duke filed it itself: the accession prefix is the parent's CIK, though its subsidiary is listed first.
    duke = next(f for f in one_per_accession(entries) if f.accession == "0001326160-24-000112")
    assert duke.cik == "0001326160"
    # A listed subsidiary wins over an unlisted parent.
    duke = next(f for f in one_per_accession(entries, lambda cik: cik == "0000030371")
                if f.accession == "0001326160-24-000112")
    assert duke.cik == "0000030371"


def test_the_index_page_names_every_filer_the_primary_registrant_first():
    html = fixture("edgar", "index_0001193125-24-151488.htm").read_text()
    filers = index_filers(html)
    assert [(f.cik, f.company, f.role) for f in filers] == [
        ("0000092122", "SOUTHERN CO", "Filer"), ("0000003153", "ALABAMA POWER CO", "Filer"),
        ("0000041091", "GEORGIA POWER CO", "Filer"), ("0000066904", "MISSISSIPPI POWER CO", "Filer"),
        ("0001160661", "SOUTHERN POWER CO", "Filer")]
    acc = "0001193125-24-151488"  # filed by an agent: the prefix names nobody on the filing
    assert attribute(filers, acc, lambda cik: cik == "0000092122", primary_listed_first=True).cik == "0000092122"
    assert attribute(filers, acc, lambda cik: False, primary_listed_first=True).cik == "0000092122"
    assert attribute(filers, acc, lambda cik: cik == "0000041091", primary_listed_first=True).cik == "0000041091"
    assert index_filers(fixture("edgar", "index_0001193125-24-150101.htm").read_text()) == [
        Filer("0000789019", "MICROSOFT CORP", "Filer")]
    assert index_filers(fixture("edgar", "index_0000320193-24-000069.htm").read_text()) == []


def test_a_form_4_stays_with_its_issuer_even_when_the_reporting_owner_is_listed():
    filers = [Filer("0001067983", "BERKSHIRE HATHAWAY INC", "Reporting"), Filer("0000797468", "OCCIDENTAL PETROLEUM CORP", "Issuer")]
    assert attribute(filers, "0000950170-24-012345", lambda cik: True).cik == "0000797468"


@pytest.mark.parametrize("url, base, expected", [
    ("https://www.sec.gov/Archives/edgar/data/1/x-index.htm", "http://127.0.0.1:8080",
     "http://127.0.0.1:8080/Archives/edgar/data/1/x-index.htm"),
    ("https://www.sec.gov/cgi-bin/browse-edgar?action=getcurrent&type=8-K", "https://mirror.example/sec/",
     "https://mirror.example/sec/cgi-bin/browse-edgar?action=getcurrent&type=8-K"),
    ("https://sec.gov/files/company_tickers.json", "http://proxy:3128", "http://proxy:3128/files/company_tickers.json"),
    ("https://www.sec.gov/Archives/a.htm", "https://www.sec.gov", "https://www.sec.gov/Archives/a.htm"),
    ("https://tickers.example/company_tickers.json", "http://127.0.0.1:8080", "https://tickers.example/company_tickers.json"),
])
def test_sec_urls_are_fetched_from_the_configured_base(url, base, expected):
    assert rebase(url, base) == expected


def test_an_empty_feed_is_fine_and_a_rate_limit_page_is_not_a_feed():
    assert parse_current_feed(fixture("edgar", "getcurrent_10-K.atom").read_bytes(), BASE) == []
    with pytest.raises(EdgarParseError):
        parse_current_feed(fixture("edgar", "rate_limited.html").read_bytes(), BASE)


def test_primary_document_is_the_row_typed_as_the_form_with_the_ixbrl_viewer_stripped():
    index = fixture("edgar", "index_0000320193-24-000069.htm").read_text()
    url = primary_document_url(index, "8-K", f"{BASE}/Archives/edgar/data/320193/000032019324000069/x-index.htm")
    assert url == f"{BASE}/Archives/edgar/data/320193/000032019324000069/aapl-20240529.htm"
    assert primary_document_url("<html><body>no table</body></html>", "8-K", BASE) is None


def test_document_text_drops_the_hidden_xbrl_header_and_scripts_and_keeps_items():
    text = document_text(fixture("edgar", "aapl-20240529.htm").read_bytes(), "text/html", "a.htm")
    assert "EntityCentralIndexKey" not in text and "must not appear" not in text
    assert items_of(text) == ("2.02", "9.01")
    assert "FORM 8-K" in text and "Exhibit 99.1" in text


def test_company_tickers_keep_the_first_class_per_cik():
    tickers = parse_company_tickers(fixture("edgar", "company_tickers.json").read_bytes())
    assert tickers["0001326160"] == "DUK" and tickers["0000320193"] == "AAPL"
    with pytest.raises(ValueError):
        parse_company_tickers(b"{}")


companies = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd", "Zs"), whitelist_characters=".,&-"),
                    min_size=1, max_size=40).map(str.strip).filter(bool)


@given(st.sampled_from(["8-K", "10-Q", "10-K", "4", "SC 13D", "8-K/A"]), companies,
       st.integers(1, 9_999_999_999), st.integers(1, 9_999_999_999),
       st.sampled_from(["Filer", "Subject", "Reporting", "Filed by"]))
def test_cik_comes_from_the_title_whatever_the_accession_prefix(form, company, cik, agent, role):
    accession = f"{agent:010d}-24-000001"
    entry = f"""<entry><title>{form} - {company} ({cik:010d}) ({role})</title>
<link rel="alternate" type="text/html" href="{BASE}/Archives/edgar/data/{cik}/{accession.replace('-', '')}/{accession}-index.htm"/>
<summary type="html">Filed</summary><updated>2024-05-29T16:30:34-04:00</updated>
<id>urn:tag:sec.gov,2008:accession-number={accession}</id></entry>"""
    feed = f'<?xml version="1.0" encoding="ISO-8859-1" ?><feed xmlns="http://www.w3.org/2005/Atom"><title>x</title>{entry}</feed>'
    [parsed] = parse_current_feed(feed.encode("utf-8"), BASE)
    assert (parsed.cik, parsed.accession, parsed.form, parsed.role) == (f"{cik:010d}", accession, form, role)
