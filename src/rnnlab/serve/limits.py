"""What a request may ask, and the one-line errors for what it may not.

Every JSON body is read through `read_json`: over MAX_BODY bytes is 413, a body that is not JSON is 400
with the parser's message, and a field of the wrong type or size is 422 naming the field and the limit.
"""

from __future__ import annotations

import json

from starlette.requests import Request

MAX_BODY = 1_000_000  # bytes of one request body
MAX_TEXTS = 1000  # texts in one /predict
MAX_CHARS = 10_000  # characters in one text
# /explain builds the model it explains: its sizes are bounded so that one request stays small
MAX_SIZE = {"k": 2048, "p": 2048, "T": 100_000, "B": 100_000, "q": 1000, "layers": 4}
MAX_PARAMETERS = 20_000_000
MAX_CONNECTIONS = 256  # open at once; uvicorn answers 503 past it


class RequestError(Exception):
    """A request the server refuses: `status` (400, 404, 413, 422) and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def read_json(request: Request) -> dict:
    """The request's body as a JSON object, read at most MAX_BODY bytes far."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise RequestError(413, f"the body has {int(declared):,} bytes; at most {MAX_BODY:,} are read")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise RequestError(413, f"the body is over {MAX_BODY:,} bytes; at most {MAX_BODY:,} are read")
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RequestError(400, f"the body is not UTF-8: {e.reason} at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise RequestError(400, f"malformed JSON: {e}") from None
    except (ValueError, RecursionError) as e:  # an integer of too many digits, nesting too deep
        raise RequestError(400, f"malformed JSON: {str(e).splitlines()[0] or type(e).__name__}") from None
    if not isinstance(value, dict):
        raise RequestError(400, f"the body must be a JSON object; got {type(value).__name__}")
    return value


def texts(body: dict) -> list[str]:
    """body["texts"]: a list of 1 to MAX_TEXTS strings of at most MAX_CHARS characters each."""
    value = body.get("texts")
    if not isinstance(value, list) or not value:
        raise RequestError(422, 'expected "texts": a list of strings, e.g. {"texts": ["so happy today"]}')
    if len(value) > MAX_TEXTS:
        raise RequestError(422, f'"texts" has {len(value):,} texts; at most {MAX_TEXTS:,} per request')
    for i, t in enumerate(value):
        _check_text(t, f'"texts"[{i}]')
    return value


def text(body: dict) -> str:
    """body["text"]: one string of at most MAX_CHARS characters."""
    value = body.get("text")
    _check_text(value, '"text"')
    return value


def _check_text(value, where: str) -> None:
    if not isinstance(value, str):
        raise RequestError(422, f"{where} must be a string; got {_kind(value)}")
    if len(value) > MAX_CHARS:
        raise RequestError(422, f"{where} has {len(value):,} characters; at most {MAX_CHARS:,} per text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(422, f"{where} holds a lone surrogate at character {e.start}: not text") from None


def size(body: dict, name: str, default: int | None = None) -> int:
    """body[name]: an integer from 1 (0 for q) to MAX_SIZE[name]."""
    value = body.get(name, default)
    if value is None:
        raise RequestError(422, f'expected "{name}": an integer')
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, f'"{name}" must be an integer; got {_kind(value)}')
    low = 0 if name == "q" else 1
    if not low <= value <= MAX_SIZE[name]:
        raise RequestError(422, f'"{name}" must be from {low} to {MAX_SIZE[name]:,}; got {value:,}')
    return value


def _kind(value) -> str:
    return "null" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"
