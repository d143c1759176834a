"""The figure guardrail against its adversarial set: block rate and false-block rate.

tests/ai/guardrail_cases.jsonl holds drafts a reply must not send (an invented, spelled-out,
borrowed or lead-proposed figure, the right number in the wrong currency, period or half of
the day) and faithful drafts it must let through, in English, Spanish, Hindi and Hinglish
(docs/ai.md 6). A JSON object a line: id, lang (en, es, hi, hinglish), kind, expect (block or
pass), company (the company's sources: passages, card), lead (the lead's words), currency
(the company's), draft and note. It prints, per kind, per language and overall, how many of
the first were blocked (target 100%) and how many of the second were blocked wrongly (target
at most 2%). It needs no database: the guardrail is a pure function.

    .venv/bin/python bench/guardrail.py           # the rates
    .venv/bin/python bench/guardrail.py -v        # and every case it gets wrong

It also runs against a checkout from before issue 14, whose `ungrounded(reply, sources)`
took one list of sources: the lead's words are then passed with the company's.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from shvya.ai.figures import ungrounded  # noqa: E402

CASES = REPO / "tests" / "ai" / "guardrail_cases.jsonl"


def load(path: Path = CASES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verdict(case: dict[str, Any]) -> list[str]:
    """The figures the guardrail finds ungrounded in the case's draft."""
    if "lead_words" in inspect.signature(ungrounded).parameters:
        return ungrounded(
            case["draft"], case["company"], case["lead"], currency=case.get("currency")
        )
    return ungrounded(case["draft"], [*case["company"], *case["lead"]])  # before issue 14


def rates(cases: list[dict[str, Any]]) -> tuple[int, int, int, int]:
    """(blocked, to block, passed wrongly blocked, to pass)."""
    block = [c for c in cases if c["expect"] == "block"]
    passing = [c for c in cases if c["expect"] == "pass"]
    return (
        sum(bool(verdict(c)) for c in block),
        len(block),
        sum(bool(verdict(c)) for c in passing),
        len(passing),
    )


def _cell(hit: int, total: int) -> str:
    return f"{hit}/{total} ({100 * hit / total:.0f}%)" if total else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="list every wrong verdict")
    parser.add_argument("--cases", type=Path, default=CASES)
    args = parser.parse_args()
    cases = load(args.cases)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        groups[f"kind {case['kind']}"].append(case)
        groups[f"lang {case['lang']}"].append(case)
    print(f"{'':<22}{'block rate':>20}{'false-block rate':>22}")
    for name in sorted(groups):
        blocked, block, wrong, passing = rates(groups[name])
        print(f"{name:<22}{_cell(blocked, block):>20}{_cell(wrong, passing):>22}")
    blocked, block, wrong, passing = rates(cases)
    print(f"{'all':<22}{_cell(blocked, block):>20}{_cell(wrong, passing):>22}")
    if args.verbose:
        for case in cases:
            found = verdict(case)
            if bool(found) != (case["expect"] == "block"):
                print(f"  {case['id']} {case['kind']}: {case['draft']!r} -> {found}")
    return 0 if blocked == block and wrong <= 0.02 * passing else 1


if __name__ == "__main__":
    sys.exit(main())
