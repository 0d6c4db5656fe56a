"""Where commands write: one rule for every output, so that nothing an operator made is replaced silently.

- An output directory (`--out`) must be new or empty; a non-empty one needs `--overwrite`; a file
  there is refused whatever the flags.
- An output file (`--output`) may not be a directory nor one of the command's inputs.

Checked before any work starts, so a mistake costs nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from ingest.settings import ConfigError


class OutputError(ConfigError):
    """An output path a command refuses to write to; the message says why and what to pass instead."""


def check_output_dir(path: Path, *, overwrite: bool, flag: str = "--out") -> None:
    """Refuse a file, and a non-empty directory unless `overwrite`."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file; name a directory (new or empty)")
    if path.is_dir() and not overwrite and any(path.iterdir()):
        raise OutputError(f"{flag} {path} exists and is not empty; choose a new {flag} or pass --overwrite")


def check_output_file(path: Path, *, inputs: list[Path], flag: str = "--output") -> None:
    """Refuse a directory, and a file that is one of `inputs`."""
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a directory; name a file, e.g. {path / 'scores.jsonl'}")
    for source in inputs:
        if _same_file(path, source):
            raise OutputError(f"{flag} {path} is the input file {source}; writing it would replace the input: "
                              f"choose another {flag}")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # also sees through links
    return a.resolve() == b.resolve()
