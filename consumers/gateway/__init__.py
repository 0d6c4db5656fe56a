"""WebSocket signal gateway: `finsignal gateway`; the client protocol is in `protocol.py` and README.md."""
