"""`finsignal gateway` as a user runs it: configuration errors, serving, health, clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal as signal_module
import subprocess
import sys
import urllib.request

import pytest
import websockets

from consumers.gateway.protocol import Hello, Subscribe, decode_server
from finsignal.embedded import free_port
from signals.redis_sink import RedisSignalSink
from tests.conftest import eventually
from tests.consumers.helpers import make_signal, run

pytestmark = pytest.mark.integration


def gateway_cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FINSIGNAL_GATEWAY_")}
    return subprocess.Popen([sys.executable, "-m", "finsignal.cli", "gateway", *args], env={**clean, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_gateway_refuses_to_start_without_tokens(redis_server):
    proc = gateway_cli({"FINSIGNAL_REDIS_URL": redis_server.url})

    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 2
    assert "FINSIGNAL_GATEWAY_TOKENS" in err


def test_gateway_serves_signals_and_stops_on_sigterm(redis_server, redis_client):
    port = free_port()
    proc = gateway_cli({"FINSIGNAL_REDIS_URL": redis_server.url, "FINSIGNAL_LOG_FORMAT": "json",
                        "FINSIGNAL_GATEWAY_TOKENS": json.dumps({"desk-a": "cli-secret-token"})}, "--port", str(port))
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    return json.loads(response.read())["status"] == "ok"
            except OSError:  # not listening yet
                return False

        eventually(lambda: proc.poll() is None and healthy(), timeout_s=60, interval_s=0.2)

        async def client():
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send(Hello(token="cli-secret-token").model_dump_json())
                assert decode_server(await ws.recv()).type == "welcome"
                await ws.send(Subscribe(symbols=("BTCUSDT",)).model_dump_json())
                assert decode_server(await ws.recv()).type == "subscribed"
                RedisSignalSink(redis_client, maxlen=1000, dedupe_ttl_s=600).publish([make_signal(1)])
                return decode_server(await asyncio.wait_for(ws.recv(), 10))

        message = run(client())
    finally:
        proc.send_signal(signal_module.SIGTERM)
        out, err = proc.communicate(timeout=30)

    assert message.signal.id == make_signal(1).id
    assert proc.returncode == 0, err[-2000:]
    assert "cli-secret-token" not in out + err
    assert "gateway.stopped" in out + err
