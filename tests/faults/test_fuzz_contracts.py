"""Every wire decoder, fed arbitrary bytes or JSON-shaped garbage, raises `ContractError` and nothing else."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.contracts import ContractError, decode_document, decode_market_event
from signals.contracts import decode_signal

DECODERS = [decode_document, decode_market_event, decode_signal]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
# Objects with the contracts' own keys, so validation (not only JSON parsing) is exercised.
KEYS = ["schema_version", "id", "kind", "source", "title", "body", "url", "symbols", "ts_event", "ts_ingest", "type",
        "symbol", "price", "size", "side", "bids", "asks", "probs", "direction", "score", "document_ids", "model"]
contract_shaped = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=12)


def decodes_or_refuses(decoder, raw: bytes) -> None:
    try:
        decoder(raw)
    except ContractError:
        pass


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=2_000))
def test_arbitrary_bytes_raise_only_contract_error(decoder, raw):
    decodes_or_refuses(decoder, raw)


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(obj=contract_shaped)
def test_contract_shaped_json_raises_only_contract_error(decoder, obj):
    decodes_or_refuses(decoder, json.dumps(obj).encode())


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@given(depth=st.integers(min_value=1, max_value=100_000), opener=st.sampled_from([b"[", b'{"a":']))
@settings(max_examples=30)
def test_deep_nesting_raises_only_contract_error(decoder, depth, opener):
    decodes_or_refuses(decoder, opener * depth)
