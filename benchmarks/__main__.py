"""Run named benchmarks and print their tables: `python -m benchmarks [NAME ...] [--quick]`."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

# name -> module exposing `TITLE` and `run(quick: bool) -> list[dict]`
REGISTRY = {
    "e2e": "benchmarks.e2e",
    "ingest_bybit": "benchmarks.ingest_bybit",
    "batching": "benchmarks.batching",
    "consumers": "benchmarks.consumers",
    "soak": "benchmarks.soak",
    "pretrained": "benchmarks.pretrained",
    "shadow": "benchmarks.shadow",
}


def format_table(rows: list[dict]) -> str:
    """A plain-text table of dict rows, columns in first-seen order."""
    if not rows:
        return "(no rows)"
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    cells = [[_fmt(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([line, rule, *body])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all): {', '.join(REGISTRY)}")
    parser.add_argument("--quick", action="store_true", help="smaller loads, for a smoke run")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {list(REGISTRY)}")
    from finsignal.log import configure_logging

    configure_logging("WARNING")
    results = {}
    for name in args.names or list(REGISTRY):
        module = importlib.import_module(REGISTRY[name])
        started = time.perf_counter()
        rows = module.run(quick=args.quick)
        results[name] = rows
        print(f"\n== {name}: {module.TITLE} ({time.perf_counter() - started:.0f}s)")
        print(format_table(rows))
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
