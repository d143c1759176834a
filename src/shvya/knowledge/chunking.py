"""Passages: a few hundred tokens each, inside one section, overlapping by a sentence or two.

A passage never crosses a heading, so its section title describes it; a long paragraph is
cut at sentence ends; consecutive passages of a section share their boundary sentences, so
an answer that straddles the cut is still found whole in one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shvya.knowledge.documents import Block

TARGET_TOKENS = 220
MAX_TOKENS = 350
OVERLAP_TOKENS = 40
SENTENCE_END = re.compile(r"(?<=[.!?।])\s+")


def count_tokens(text: str) -> int:
    """Words and punctuation marks: close to an LLM tokenizer's count for budgeting."""
    return len(re.findall(r"\w+|[^\w\s]", text))


@dataclass(frozen=True)
class Passage:
    position: int
    heading: str
    content: str
    token_count: int


def _sentences(text: str) -> list[str]:
    parts = [p.strip() for p in SENTENCE_END.split(text) if p.strip()]
    result: list[str] = []
    for part in parts:
        if count_tokens(part) <= MAX_TOKENS:
            result.append(part)
            continue
        words = part.split()  # a run-on "sentence": cut by words
        step = max(1, int(MAX_TOKENS * 0.7))
        result.extend(" ".join(words[i : i + step]) for i in range(0, len(words), step))
    return result


def split_passages(blocks: list[Block]) -> list[Passage]:
    passages: list[Passage] = []
    sections: list[tuple[str, list[str]]] = []
    for block in blocks:
        heading = " > ".join(block.headings)
        if sections and sections[-1][0] == heading:
            sections[-1][1].append(block.text)
        else:
            sections.append((heading, [block.text]))

    for heading, paragraphs in sections:
        units: list[str] = []
        for paragraph in paragraphs:
            if count_tokens(paragraph) <= TARGET_TOKENS:
                units.append(paragraph)
            else:
                units.extend(_sentences(paragraph))
        current: list[str] = []
        size = 0
        fresh = False  # does `current` hold anything beyond the previous passage's tail?
        for unit in units:
            unit_size = count_tokens(unit)
            if fresh and size + unit_size > TARGET_TOKENS:
                passages.append(_passage(len(passages), heading, current))
                current, size = _overlap(current)
            current.append(unit)
            size += unit_size
            fresh = True
        if fresh:
            passages.append(_passage(len(passages), heading, current))
    return passages


def _overlap(units: list[str]) -> tuple[list[str], int]:
    """The tail of a passage that starts the next one: whole sentences, up to the budget."""
    tail: list[str] = []
    size = 0
    for unit in reversed(units):
        for sentence in reversed(_sentences(unit)):
            tokens = count_tokens(sentence)
            if size + tokens > OVERLAP_TOKENS:
                return tail, size
            tail.insert(0, sentence)
            size += tokens
    return tail, size


def _passage(position: int, heading: str, units: list[str]) -> Passage:
    content = " ".join(units)
    return Passage(
        position=position, heading=heading, content=content, token_count=count_tokens(content)
    )
