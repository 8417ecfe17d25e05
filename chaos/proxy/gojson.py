"""JSON as Toxiproxy's Go server writes and reads it: compact output with Go's escaping, and
decoding that fails with encoding/json's words ("unexpected EOF", "invalid character ...").

Go's json.Decoder reads the first value of a body and ignores what follows; a number keeps its
literal (`GoFloat`) so that "100.0" can be refused for an integer field in Go's words.
"""

from __future__ import annotations

import json
from typing import Any

from cachestorm.chaos.proxy.errors import BAD_REQUEST_BODY

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_numbers(value: Any) -> Any:
    """Go writes a whole float without ".0" (toxicity 1 is `1`)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _go_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_numbers(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """json.Marshal: no spaces, UTF-8 as is, <, >, & and U+2028/9 escaped, whole floats as integers."""
    text = json.dumps(_go_numbers(value), separators=(",", ":"), ensure_ascii=False)
    if any(char in text for char in _GO_ESCAPES):
        text = "".join(_GO_ESCAPES.get(char, char) for char in text)
    return text


class GoFloat(float):
    """A JSON number written with a fraction or exponent, remembering how it was written."""

    literal: str

    def __new__(cls, literal: str):
        number = super().__new__(cls, literal)
        number.literal = literal
        return number


_DECODER = json.JSONDecoder(parse_float=GoFloat)
_WHITESPACE = " \t\n\r"


def loads(body: bytes) -> Any:
    """Decode a request body like json.NewDecoder(body).Decode; errors are 400 "bad request body: ..."."""
    text = body.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    if start == len(text):
        raise BAD_REQUEST_BODY.joined("EOF")
    try:
        value, _end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise BAD_REQUEST_BODY.joined(_go_syntax_error(exc)) from None
    return value


def _go_syntax_error(exc: json.JSONDecodeError) -> str:
    rest = exc.doc[exc.pos:].lstrip(_WHITESPACE)
    if not rest:
        return "unexpected EOF"
    char = rest[0]
    shown = "'\\''" if char == "'" else f"'{char}'"
    context = {
        "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
        "Expecting ':' delimiter": "after object key",
        "Expecting value": "looking for beginning of value",
    }.get(exc.msg)
    if context is None and exc.msg == "Expecting ',' delimiter":
        context = "after array element" if _inside_array(exc.doc, exc.pos) else "after object key:value pair"
    return f"invalid character {shown} {context or 'looking for beginning of value'}"


def _inside_array(doc: str, pos: int) -> bool:
    """Whether `pos` is directly inside an array (the innermost open bracket, strings skipped)."""
    stack, in_string, escaped = [], False, False
    for char in doc[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return bool(stack) and stack[-1] == "["


def kind(value: Any) -> str:
    """The JSON kind Go names in "cannot unmarshal <kind> into ..."."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def number_text(value: int | float) -> str:
    """A number as it was written in the request (Go quotes the literal in its errors)."""
    return value.literal if isinstance(value, GoFloat) else str(value)
