"""Turn a model's reply (JSON text or a tool's input) into the validated output schema.

Every adapter ends here, so a reply is judged the same way whichever protocol carried it.
Errors are short and never quote the document back: they land in the ledger and in
Dagster metadata.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from resources.documents import LONE_SURROGATE

MAX_ERROR_CHARS = 300

# A whole reply wrapped in one Markdown code fence, as chat models like to answer.
_FENCED = re.compile(r"\A```[ \t]*(?:json|JSON)?[ \t]*\r?\n?(.*?)\r?\n?[ \t]*```\Z", re.DOTALL)


def shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """One line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_structured_reply(raw: "str | dict[str, Any] | None", schema: type[BaseModel]) -> tuple[Optional[BaseModel], Optional[str]]:
    """``(validated output, None)`` or ``(None, a short reason)``.

    ``raw`` is a JSON object as text (surrounding whitespace and a ```json fence are
    tolerated, prose around the JSON is not) or an already-decoded dict (a tool's input).
    """
    if raw is None:
        return None, "reply is empty"
    if isinstance(raw, str):
        text = raw.strip()
        fenced = _FENCED.match(text)
        if fenced:
            text = fenced.group(1).strip()
        if not text:
            return None, "reply is empty"
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, shorten(f"reply is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        except RecursionError:
            return None, "reply is not valid JSON: nested too deeply to read"
        if _SURROGATE_ESCAPE.search(text):
            data = without_lone_surrogates(data)
    elif isinstance(raw, dict):
        try:
            data = without_lone_surrogates(raw)
        except RecursionError:
            return None, "reply is not valid JSON: nested too deeply to read"
    else:
        return None, f"reply is a {type(raw).__name__}, not JSON text or an object"
    if not isinstance(data, dict):
        return None, f"reply is a JSON {_json_type(data)}, not an object"
    try:
        return schema.model_validate(data), None
    except ValidationError as exc:
        return None, shorten(f"reply does not match the schema {schema.__name__}: {describe_validation_error(exc)}")
    except RecursionError:
        return None, f"reply does not match the schema {schema.__name__}: nested too deeply"


# A JSON escape of a UTF-16 surrogate: a model cut an emoji's pair ("\ud83d" alone), which no UTF-8 output,
# ledger or trace store can hold.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def without_lone_surrogates(data: Any) -> Any:
    """``data`` with each lone surrogate in its strings (keys too) as U+FFFD."""
    if isinstance(data, str):
        return data if data.isascii() else LONE_SURROGATE.sub("\ufffd", data)
    if isinstance(data, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in data.items()}
    if isinstance(data, list):
        return [without_lone_surrogates(v) for v in data]
    return data


def describe_validation_error(exc: ValidationError) -> str:
    """'total: Input should be a valid number (+2 more)': the first problem and how many follow."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc)
    first = errors[0]
    location = ".".join(str(part) for part in first.get("loc", ())) or "(root)"
    described = f"{location}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        described += f" (+{len(errors) - 1} more)"
    return described


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__
