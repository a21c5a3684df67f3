"""The body of ``POST /v1/classify``: ``{"inputs": ["text", ["text", "text_pair"], ...]}``.

Everything is checked before a request is batched; a bad body is a `BadRequest` with its HTTP
status, never an exception inside a replica.
"""

from __future__ import annotations

import json

Input = str | tuple[str, str]


class BadRequest(ValueError):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_inputs(body: bytes, max_inputs: int) -> list[Input]:
    """The inputs of a classify body, in order: texts and (text, text_pair) pairs."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(400, f"the body is not JSON: {error}") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest(422, 'the body must be an object {"inputs": [...]}')
    if unknown := sorted(set(payload) - {"inputs"}):
        raise BadRequest(422, f"unknown field(s) {', '.join(unknown)}; the body holds only inputs")
    inputs = payload["inputs"]
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(422, "inputs must be a non-empty list of texts or [text, text_pair] pairs")
    if len(inputs) > max_inputs:
        raise BadRequest(413, f"{len(inputs)} inputs in one request; the limit is {max_inputs}")
    return [_parse_input(value, index) for index, value in enumerate(inputs)]


def _parse_input(value: object, index: int) -> Input:
    if isinstance(value, list):
        if len(value) != 2:
            raise BadRequest(422, f"inputs[{index}]: a pair is [text, text_pair], got {len(value)} parts")
        return (_text(value[0], f"inputs[{index}][0]"), _text(value[1], f"inputs[{index}][1]"))
    return _text(value, f"inputs[{index}]")


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(422, f"{where}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRequest(422, f"{where}: empty text")
    return value
