"""The figure guardrail against its adversarial set (tests/ai/guardrail_cases.jsonl, at least
60 drafts to block and 60 faithful ones in English, Spanish, Hindi and Hinglish): every
unfaithful draft blocked, at most 2% of the faithful ones (docs/ai.md 6; bench/guardrail.py
prints the rates per kind and language)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from shvya.ai.figures import ungrounded

CASES = Path(__file__).with_name("guardrail_cases.jsonl")


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]


def test_the_set_is_large_enough_in_every_language() -> None:
    counts = Counter((case["lang"], case["expect"]) for case in load())
    assert sum(n for (_, expect), n in counts.items() if expect == "block") >= 60
    assert sum(n for (_, expect), n in counts.items() if expect == "pass") >= 60
    for lang in ("en", "es", "hi", "hinglish"):
        assert counts[(lang, "block")] >= 10 and counts[(lang, "pass")] >= 10, lang


def test_every_unfaithful_draft_is_blocked_and_almost_no_faithful_one() -> None:
    cases = load()
    wrong = []
    blocked = {"block": 0, "pass": 0}
    for case in cases:
        found = ungrounded(case["draft"], case["company"], case["lead"], currency=case["currency"])
        blocked[case["expect"]] += bool(found)
        if bool(found) != (case["expect"] == "block"):
            wrong.append(f"{case['id']} ({case['kind']}): {case['draft']!r} -> {found}")
    to_block = sum(case["expect"] == "block" for case in cases)
    to_pass = len(cases) - to_block
    block_rate, false_rate = blocked["block"] / to_block, blocked["pass"] / to_pass
    print(f"block rate {block_rate:.1%}, false-block rate {false_rate:.1%}")
    assert block_rate == 1 and false_rate <= 0.02, (
        f"block rate {block_rate:.1%} (target 100%), false-block rate {false_rate:.1%} "
        "(target at most 2%):\n" + "\n".join(wrong)
    )
