"""NOT_BLANK means the same to Python (str.strip), to Pydantic's Rust regex and to anything
reading the OpenAPI schema: a text of blanks only is refused everywhere or nowhere."""

from __future__ import annotations

import re
import sys

from pydantic import BaseModel, Field, ValidationError

from shvya.schemas import NOT_BLANK


class Text(BaseModel):
    text: str = Field(pattern=NOT_BLANK)


def rust_accepts(value: str) -> bool:
    try:
        Text(text=value)
    except ValidationError:
        return False
    return True


def test_not_blank_agrees_with_python_and_pydantic_for_every_character() -> None:
    disagreements = []
    for code in range(1, sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue  # lone surrogates are refused as text elsewhere (check_storable_text)
        char = chr(code)
        python = bool(char.strip())
        if bool(re.search(NOT_BLANK, char)) != python or (
            (char.isspace() or code < 0x3100) and rust_accepts(char) != python
        ):
            disagreements.append(hex(code))
    assert disagreements == []
