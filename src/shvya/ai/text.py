"""Measuring and trimming what the AI writes: words, sentences, similarity, length limits.

The evaluation harness (bench/ai_eval.py) measures replies with these same definitions, so a
"30 to 40 word" bump-up or a "3 to 5 sentence" summary means one thing everywhere.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata

SENTENCE_END = re.compile(r"(?<=[.!?\u0964])[\"'\u201d\u2019)\]]*\s+")
WORD = re.compile(r"\w+(?:['\u2019]\w+)*")


def word_count(text: str) -> int:
    """Whitespace-separated tokens that hold a letter or digit ("it's" is one word)."""
    return sum(1 for token in text.split() if re.search(r"\w", token))


def sentences(text: str) -> list[str]:
    """Sentences end with . ! ? or । followed by a space (so "1.5" and "e.g." mid-word do not
    end one)."""
    parts = SENTENCE_END.split(text.strip())
    return [part.strip() for part in parts if re.search(r"\w", part)]


def _tokens(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return WORD.findall(folded)


def similarity(first: str, second: str) -> float:
    """Jaccard similarity of word pairs (bigrams): 1.0 for the same wording, near 0 for
    different sentences on the same topic. A bump-up at 0.35 or more repeats an earlier one."""
    a, b = _tokens(first), _tokens(second)
    pairs_a: set[tuple[str, ...]] = set(itertools.pairwise(a)) or {(word,) for word in a}
    pairs_b: set[tuple[str, ...]] = set(itertools.pairwise(b)) or {(word,) for word in b}
    if not pairs_a or not pairs_b:
        return 0.0
    return len(pairs_a & pairs_b) / len(pairs_a | pairs_b)


NEAR_REPEAT = 0.35


def fit(text: str, max_chars: int) -> str:
    """At most max_chars, cut at the last sentence end that keeps at least half the text,
    otherwise at a word boundary with an ellipsis."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    ends = [match.start() + 1 for match in re.finditer(r"[.!?।](?=\s)", cut + " ")]
    end = max((e for e in ends if e <= max_chars), default=0)
    if end > max_chars // 2:
        return cut[:end].strip()
    words = cut[: max_chars - 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return words + "…"


HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]*)?/?>")
CODE_FENCE = re.compile(r"```|~~~")


def markup_in(text: str) -> str | None:
    """What a lead must never see in a message: JSON, an HTML tag or a markdown code fence
    (docs/ai.md 5.8). WhatsApp's own *bold* and _italics_ are fine."""
    stripped = text.strip()
    if CODE_FENCE.search(stripped):
        return "a code fence"
    if HTML_TAG.search(stripped):
        return "HTML"
    if stripped and stripped[0] in "{[" and stripped[-1] in "}]":
        try:
            json.loads(stripped)
        except ValueError:
            pass
        else:
            return "raw JSON"
    if re.search(r'\{\s*"[^"]+"\s*:', stripped):
        return "raw JSON"
    return None
