"""The Redis key layout: one publish touches one Cluster hash slot, names stay readable, prefixes nest."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.redis_client import key_slot
from signals.keys import KEYS, SignalKeys

SYMBOLS = st.from_regex(r"[A-Z0-9][A-Z0-9._:/-]{0,31}", fullmatch=True)
IDS = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)


def test_documented_names():
    assert KEYS.stream("BTCUSDT") == "signals:{BTCUSDT}"
    assert KEYS.seen("BTCUSDT", "ab" * 16) == "finsignal:seen:{BTCUSDT}:" + "ab" * 16
    assert KEYS.latest("BTCUSDT") == "finsignal:latest:{BTCUSDT}"
    assert KEYS.symbols == "finsignal:symbols"
    assert KEYS.channel("BTCUSDT") == "signals.BTCUSDT"


@settings(deadline=None)  # the first example pays for importing redis on a loaded machine
@given(SYMBOLS, IDS, st.sampled_from(["", "shadow:", "shadow:v2:"]))
def test_every_key_of_one_publish_is_in_the_streams_slot(symbol, signal_id, prefix):
    keys = SignalKeys(prefix)
    slot = key_slot(keys.stream(symbol))
    assert key_slot(keys.seen(symbol, signal_id)) == slot
    assert key_slot(keys.latest(symbol)) == slot
    assert key_slot(keys.attempts("momo", symbol)) == slot  # the SDK acks and resets its counter in one MULTI
    assert keys.symbol_of(keys.stream(symbol)) == symbol


def test_the_old_layout_spread_one_publish_over_four_slots():
    old = ["signals:BTCUSDT", "finsignal:seen:" + "ab" * 16, "finsignal:latest", "finsignal:symbols"]
    assert len({key_slot(k) for k in old}) == 4


def test_a_prefix_gives_a_disjoint_layout_of_the_same_shape():
    shadow = SignalKeys("shadow:")
    assert shadow.stream("ETHUSDT") == "shadow:signals:{ETHUSDT}"
    assert shadow.symbols == "shadow:finsignal:symbols"
    assert shadow.channel("ETHUSDT") == "shadow:signals.ETHUSDT"
    try:
        KEYS.symbol_of(shadow.stream("ETHUSDT"))
    except ValueError as exc:
        assert "not a signal stream" in str(exc)
    else:
        raise AssertionError("a shadow stream must not parse as a default-layout stream")
