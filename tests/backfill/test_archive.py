"""The news archive reader: column mapping, every timestamp form with its zone, refusals with line numbers,
and the live ingestor's id and dedupe rules; hypothesis properties for the time handling and CSV reading."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.backfill.archive import (
    ArchiveRow,
    ArchiveError,
    ArchiveOptions,
    TimestampError,
    localize,
    parse_timestamp,
    read_archive,
)
from ingest.backfill.news import NewsImport, build_documents, import_archive
from ingest.backfill.store import Store, read_part
from ingest.backfill.window import Window, to_ns
from ingest.contracts import canonical_url, document_id
from ingest.news.settings import NewsSettings

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "backfill" / "news" / "archive_mixed_tz.csv"
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> int:
    return to_ns(dt.datetime(*args, tzinfo=dt.timezone.utc))


# -- timestamps ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2024-05-02T16:45:00-04:00", utc(2024, 5, 2, 20, 45)),
    ("2024-05-02 21:30:00Z", utc(2024, 5, 2, 21, 30)),
    ("2024-05-02T21:30:00.123456+00:00", utc(2024, 5, 2, 21, 30, 0, 123456)),
    ("Fri, 03 May 2024 08:31:00 EDT", utc(2024, 5, 3, 12, 31)),
    ("Fri, 03 May 2024 08:31:00 -0400", utc(2024, 5, 3, 12, 31)),
    ("Fri, 03 May 2024 12:31:00 GMT", utc(2024, 5, 3, 12, 31)),
    ("1714986000", utc(2024, 5, 6, 9)),
    ("1714986000.5", utc(2024, 5, 6, 9) + 500_000_000),
    ("1715072400000", utc(2024, 5, 7, 9)),
    ("1715072400000000", utc(2024, 5, 7, 9)),
    ("1715072400000000001", utc(2024, 5, 7, 9) + 1),
])
def test_timestamps_with_a_zone_are_read_as_that_instant(text, expected):
    assert parse_timestamp(text) == expected


def test_json_numbers_are_epoch_times_and_the_unit_can_be_forced():
    assert parse_timestamp(1714986000) == utc(2024, 5, 6, 9)
    assert parse_timestamp(1714986000, epoch_unit="ms") == 1714986000 * 1_000_000


def test_a_time_without_a_zone_is_refused_unless_a_zone_is_given():
    with pytest.raises(TimestampError, match="no time zone"):
        parse_timestamp("2024-05-08 09:00")
    assert parse_timestamp("2024-05-08 09:00", zone=NEW_YORK) == utc(2024, 5, 8, 13)
    assert parse_timestamp("08/05/2024 09:00", zone=NEW_YORK, time_format="%d/%m/%Y %H:%M") == utc(2024, 5, 8, 13)


def test_ambiguous_and_skipped_local_times_take_the_later_instant():
    # 2024-11-03 01:30 happens twice in New York (EDT, then EST): the later is 06:30 UTC.
    assert parse_timestamp("2024-11-03 01:30", zone=NEW_YORK) == utc(2024, 11, 3, 6, 30)
    # 2024-03-10 02:30 does not exist in New York; the readings are 06:30 (EST) and 07:30 (EDT)... the later.
    assert parse_timestamp("2024-03-10 02:30", zone=NEW_YORK) == utc(2024, 3, 10, 7, 30)


@pytest.mark.parametrize("value", ["not a date", "", None, True, "-5", "2024-13-45T00:00:00Z"])
def test_unreadable_timestamps_say_why(value):
    with pytest.raises(TimestampError):
        parse_timestamp(value)


# from 1971-01-02 local time: in every zone the instant is inside the epoch unit detection range (>= 1971 UTC);
# found by this test: 1971-01-01 00:00 Asia/Kolkata is 1970 in UTC
aware = st.datetimes(min_value=dt.datetime(1971, 1, 2), max_value=dt.datetime(2100, 1, 1),
                     timezones=st.sampled_from([dt.timezone.utc, NEW_YORK, ZoneInfo("Asia/Kolkata"),
                                                ZoneInfo("Europe/London"), ZoneInfo("Australia/Lord_Howe"),
                                                dt.timezone(dt.timedelta(hours=-9, minutes=-30))]))


@settings(max_examples=300, deadline=None)
@given(aware)
def test_every_written_form_of_an_instant_reads_back_as_that_instant(when):
    expected = to_ns(when.astimezone(dt.timezone.utc))
    assert parse_timestamp(when.isoformat()) == expected
    assert parse_timestamp(when.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")) == expected
    assert parse_timestamp(str(expected)) == expected  # 19 digits: nanoseconds
    assert parse_timestamp(str(expected // 1_000_000)) == expected // 1_000_000 * 1_000_000
    rfc = format_datetime(when.replace(microsecond=0))
    assert parse_timestamp(rfc) == to_ns(when.replace(microsecond=0).astimezone(dt.timezone.utc))


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2100, 1, 1)),
       st.sampled_from(["America/New_York", "Europe/London", "Australia/Lord_Howe", "UTC", "Asia/Kolkata"]))
def test_a_local_time_is_never_read_earlier_than_any_reading_of_it(naive, zone_name):
    zone = ZoneInfo(zone_name)
    got = parse_timestamp(naive.isoformat(), zone=zone)
    readings = {to_ns(naive.replace(tzinfo=zone, fold=f).astimezone(dt.timezone.utc)) for f in (0, 1)}
    assert got == max(readings)
    assert localize(naive, zone).replace(tzinfo=None) == naive  # the wall clock is kept


# -- rows ------------------------------------------------------------------------------------------------------


def test_a_csv_with_mixed_time_zones_reads_every_row_at_its_instant_and_refuses_with_line_numbers():
    rows, rejected = read_archive(FIXTURE.read_bytes(), FIXTURE.name, ArchiveOptions())
    by_guid = {r.guid: r for r in rows}
    assert by_guid["wire-1001"].ts == utc(2024, 5, 2, 20, 45)  # -04:00
    assert by_guid["wire-1002"].ts == utc(2024, 5, 2, 21, 30)  # Z
    assert by_guid["wire-1003"].ts == utc(2024, 5, 3, 12, 31)  # RFC 2822, EDT
    assert by_guid["wire-1004"].ts == utc(2024, 5, 3, 12, 5)  # +02:00
    assert by_guid["wire-1005"].ts == utc(2024, 5, 6, 9)  # epoch seconds
    assert by_guid["wire-1006"].ts == utc(2024, 5, 7, 9)  # epoch milliseconds
    assert by_guid["wire-1004"].body.endswith('"the floor held", one desk head said.')
    assert [(r.line, r.reason.split(":")[0]) for r in rejected] == [(9, "timestamp"), (10, "timestamp")]
    assert "no time zone" in rejected[0].reason and "2024-05-08 09:00" in rejected[0].raw


def test_the_same_file_with_a_zone_for_naive_times_keeps_that_row():
    rows, rejected = read_archive(FIXTURE.read_bytes(), FIXTURE.name, ArchiveOptions(timezone="America/New_York"))
    assert {r.guid for r in rows} >= {"wire-1007"} and [r.line for r in rejected] == [10]
    assert next(r for r in rows if r.guid == "wire-1007").ts == utc(2024, 5, 8, 13)


def test_columns_are_mapped_by_option_and_jsonl_is_read_by_extension():
    data = b"\n".join(json.dumps(r).encode() for r in [
        {"when": "2024-05-02T10:00:00Z", "head": "Bitcoin hits a record", "story": "text", "link": "https://x.io/a",
         "tickers": ["btcusdt", "$COIN"]},
        {"when": 1714644000, "head": "Second", "story": "", "link": None},
        "not an object",
    ]) + b"\n{broken json\n"
    options = ArchiveOptions(time="when", title="head", body="story", url="link", symbols="tickers")
    rows, rejected = read_archive(data, "dump.jsonl", options)
    assert [r.title for r in rows] == ["Bitcoin hits a record", "Second"]
    assert rows[0].symbols == ("BTCUSDT", "COIN") and rows[1].url is None
    assert [(r.line, r.reason[:10]) for r in rejected] == [(3, "not a JSON"), (4, "not JSON: ")]


def test_an_archive_without_a_time_or_text_column_is_refused_as_a_whole():
    with pytest.raises(ArchiveError, match="no timestamp column"):
        read_archive(b"headline,url\nx,https://a\n", "a.csv", ArchiveOptions())
    with pytest.raises(ArchiveError, match="no column 'stamp'"):
        read_archive(b"timestamp,headline\n2024-01-01T00:00Z,x\n", "a.csv", ArchiveOptions(time="stamp"))
    with pytest.raises(ArchiveError, match="unknown time zone"):
        ArchiveOptions(timezone="Mars/Olympus").zone()


text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60).filter(str.strip)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(aware, text, st.text(max_size=200)), min_size=1, max_size=20))
def test_any_csv_the_csv_module_writes_reads_back_row_for_row(stories):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["published", "title", "summary"])
    for when, title, body in stories:
        writer.writerow([when.isoformat(), title, body])
    rows, rejected = read_archive(buf.getvalue().encode(), "x.csv", ArchiveOptions())
    assert not rejected
    assert [(r.ts, r.title, r.body) for r in rows] == [
        (to_ns(w.astimezone(dt.timezone.utc)), t.strip(), b.strip()) for w, t, b in stories]


# -- documents: the live ingestor's ids and dedupe rules ----------------------------------------------------------


def test_documents_get_the_live_ids_and_one_story_reached_two_ways_is_kept_once_earliest_first():
    rows, _ = read_archive(FIXTURE.read_bytes(), FIXTURE.name, ArchiveOptions())
    docs, duplicates, invalid = build_documents(rows, "archive:wire", NewsSettings())
    assert duplicates == 1 and not invalid
    apple = next(d for d in docs if d.title.startswith("Apple"))
    assert apple.id == document_id("archive:wire", url="https://www.example-wire.com/markets/apple-buyback-record")
    assert apple.body.startswith("Apple Inc. said")  # line 2 kept, the syndicated copy (same instant) dropped
    assert "BTCUSDT" in next(d for d in docs if d.title.startswith("Bitcoin slides")).symbols  # live symbol rules
    assert all(d.ts_ingest == d.ts_event for d in docs)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["", "?utm_source=x", "/", "#f"]),
                          st.integers(0, 10**6), st.sampled_from([None, "g1", "g2"])), min_size=1, max_size=25))
def test_dedupe_keeps_one_document_per_story_and_it_is_the_earliest(entries):
    rows = [ArchiveRow(i, ts * 10**9 + 1, f"story {path}", "", f"https://n.example/{path}{suffix}", guid, ())
            for i, (path, suffix, ts, guid) in enumerate(entries)]
    docs, duplicates, _ = build_documents(rows, "archive:x", NewsSettings())
    assert len(docs) + duplicates == len(rows)
    assert len({d.id for d in docs}) == len(docs)

    def keys(r: ArchiveRow) -> set[str]:
        return {f"url:{canonical_url(r.url)}"} | ({f"guid:{r.guid}"} if r.guid else set())

    kept = {d.id for d in docs}
    order = sorted(rows, key=lambda r: (r.ts, r.line))
    for i, row in enumerate(order):
        row_id = document_id("archive:x", url=row.url)
        earlier = set().union(*(keys(r) for r in order[:i]))
        if keys(row) & earlier:  # a copy of an earlier row: dropped, and not kept under its id either
            assert row_id not in kept or any(document_id("archive:x", url=r.url) == row_id and
                                             not keys(r) & set().union(*(keys(q) for q in order[:j]))
                                             for j, r in enumerate(order[:i]))
        else:  # nothing earlier shares a key: published, at its own time
            assert row_id in kept and next(d for d in docs if d.id == row_id).ts_event == row.ts


def test_import_applies_the_window_after_dedupe_and_a_second_import_is_a_no_op(tmp_path):
    window = Window.parse("2024-05-01", "2024-06-30")
    store = Store(tmp_path)
    spec = NewsImport(FIXTURE, ArchiveOptions(), source="archive:wire")
    meta = import_archive(spec, window, store, NewsSettings())
    assert (meta["rows"], meta["imported"], meta["duplicates"], meta["outside_window"], meta["rejected"]) == \
        (11, 6, 1, 2, 2)
    assert meta["first"] == "2024-05-02T20:45:00Z" and meta["last"] == "2024-05-07T09:00:00Z"
    part = list(read_part(store.path("news", meta["part"])))
    assert [r["ts"] for r in part] == sorted(r["ts"] for r in part) and len(part) == 6
    rejected = [json.loads(line) for line in Path(meta["rejected_file"]).read_text().splitlines()]
    assert [r["line"] for r in rejected] == [9, 10]
    before = store.path("news", meta["part"]).read_bytes()
    assert import_archive(spec, window, store, NewsSettings()) == meta
    assert store.path("news", meta["part"]).read_bytes() == before
