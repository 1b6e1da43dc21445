"""An LLM's reply as data: the JSON in it (bare, fenced in Markdown, or amid prose), checked against a JSON
schema with ``jsonschema``, so that every agent validates replies the same way and re-asks with the error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["ReplyError", "extract_json", "validated_reply"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


class ReplyError(ValueError):
    """A reply that holds no usable JSON or breaks the schema; the message is what the model is told."""


def extract_json(text: str) -> Any:
    """The JSON value a reply carries: the whole text, else a fenced block, else the first object in it.
    Raw line breaks and tabs inside strings are accepted (small models write them; JSON forbids them)."""
    stripped = text.strip()
    candidates = [stripped, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for candidate in candidates:
        try:
            return json.loads(candidate, strict=False)
        except json.JSONDecodeError:
            continue
    decoder = json.JSONDecoder(strict=False)
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    if "{" in text and "}" not in text[text.index("{") :]:
        raise ReplyError("the JSON object is cut off before its end; reply with the complete object")
    raise ReplyError("the reply holds no JSON object; reply with one JSON object only")


def validated_reply(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The reply's JSON object, valid under ``schema``; else a ReplyError naming the first problems."""
    value = extract_json(text)
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        described = []
        for error in errors[:3]:
            where = "/".join(str(part) for part in error.absolute_path)
            described.append(f"{where or 'the reply'}: {error.message}")
        raise ReplyError("; ".join(described))
    return value
