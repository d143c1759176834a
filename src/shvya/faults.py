"""Crash points for the reliability tests (docs/reliability.md, harness H5).

`SHVYA_CRASH_AT=<point>` makes the process die at that point as a `kill -9` would, so tests
can prove that what follows a crash is safe. Unset (always, in real use), it does nothing.
"""

from __future__ import annotations

import os


def crash_point(name: str) -> None:
    if os.environ.get("SHVYA_CRASH_AT") == name:
        os._exit(137)
