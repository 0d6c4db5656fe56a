"""Gateway protocol v1: messages validate both ways, the hand-built signal frame equals the model's."""

from __future__ import annotations

import json

import pytest

from consumers.gateway.protocol import (
    ContractError,
    Hello,
    SignalMessage,
    Subscribe,
    decode_client,
    decode_server,
    signal_frame,
)
from tests.consumers.helpers import make_signal


def test_signal_frame_is_a_valid_signal_message():
    sig = make_signal(3)

    frame = signal_frame("BTCUSDT", "1793664310001-7", sig.model_dump_json())

    message = decode_server(frame)
    assert message == SignalMessage(symbol="BTCUSDT", id="1793664310001-7", signal=sig)
    snapshot = decode_server(signal_frame("BTC/USDT", None, sig.model_dump_json(), snapshot=True))
    assert snapshot.snapshot is True and snapshot.id is None and snapshot.symbol == "BTC/USDT"


@pytest.mark.parametrize("raw", [
    '{"v":2,"type":"hello"}',                                           # unknown version
    '{"v":1,"type":"subscribe","symbols":[]}',                          # nothing to subscribe to
    '{"v":1,"type":"subscribe","symbols":["btc usdt"]}',                # not a symbol
    '{"v":1,"type":"subscribe","symbols":["BTCUSDT"],"resume_from":{"BTCUSDT":"latest"}}',
    '{"v":1,"type":"subscribe","symbols":["BTCUSDT"],"resume_from":{"ETHUSDT":"1-0"}}',
    '{"v":1,"type":"hello","extra":true}',                              # unknown field
    '{"v":1,"type":"teleport"}',
    "not json",
])
def test_invalid_client_messages_are_refused_with_a_reason(raw):
    with pytest.raises(ContractError):
        decode_client(raw)


def test_client_messages_round_trip_and_tokens_stay_out_of_reprs():
    hello = Hello(token="t0p-secret", client="bot")
    sub = Subscribe(symbols=("BTCUSDT", "ETHUSDT"), resume_from={"BTCUSDT": "17-3"}, snapshot=True)

    assert decode_client(hello.model_dump_json()) == hello
    assert decode_client(sub.model_dump_json()) == sub
    assert json.loads(hello.model_dump_json())["token"] == "t0p-secret"  # on the wire, as sent
    assert "t0p-secret" not in repr(hello) and "t0p-secret" not in str(hello)
