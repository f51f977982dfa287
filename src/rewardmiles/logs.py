"""Structured JSON logs. Collector numbers are masked in every field of a log event; in the
console format, control characters are escaped (`\\x1b` as that text, never the raw byte)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import orjson
import structlog

_COLLECTOR_NUMBER = re.compile(r"(?<!\d)(\d{3})\d{5}(\d{3})(?!\d)")
_ELEVEN_DIGITS = (10**10, 10**11)
_MAY_HOLD_ONE = re.compile(r"\d{11}")  # needed for a match; searched three times as fast
# A request id of the form the service makes (32 lowercase hex digits, `ids.uuid4_hex`) names no
# collector, and one in twenty holds eleven digits in a row: masked, it could not be searched for.
# It is left as it is whoever made it; an `X-Request-Id` of any other form is masked like any
# other text.
_SERVER_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def mask_collector_numbers(text: str) -> str:
    return _COLLECTOR_NUMBER.sub(r"\1*****\2", text)


def _mask(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Masks every string field (the message, a traceback, values) and every 11-digit integer
    field. One quick search over the fields joined decides whether any may need it (a collector
    number cannot span the separator)."""
    texts: list[str] = []
    low, high = _ELEVEN_DIGITS
    for value in event.values():
        if isinstance(value, str):
            texts.append(value)
        elif type(value) is int and low <= value < high:
            break
    else:
        if _MAY_HOLD_ONE.search("\n".join(texts)) is None:
            return event
    for key, value in event.items():
        if isinstance(value, str):
            if key == "request_id" and _SERVER_REQUEST_ID.fullmatch(value):
                continue
            event[key] = mask_collector_numbers(value)
        elif type(value) is int and low <= value < high:
            event[key] = mask_collector_numbers(str(value))
    return event


# C0 controls, DEL and C1 controls: the bytes a terminal acts on (ESC starts a sequence that can
# rewrite the screen or the window title; C1 0x9b is a one-byte CSI on some terminals).
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL_ESCAPES.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})
# A formatted traceback keeps its line breaks (the console renderer prints it below the line).
_TRACEBACK_ESCAPES = {c: e for c, e in _CONTROL_ESCAPES.items() if c != ord("\n")}


def escape_control_characters(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control character as its escape text (`\\x1b`, `\\n`, ...)."""
    if _CONTROL_CHARS.search(text) is None:
        return text
    return text.translate(_TRACEBACK_ESCAPES if keep_newlines else _CONTROL_ESCAPES)


def _escape_controls(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Console format only (JSON escapes them already): a path or header from an unauthenticated
    request must not drive the operator's terminal."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = escape_control_characters(value, keep_newlines=key == "exception")
    return event


def _orjson_text(event: Any, **options: Any) -> str:
    """JSON rendering with orjson: a fraction of the standard library's time per line."""
    return orjson.dumps(event, **options).decode()


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is when a line is logged, not the stream it was when
    logging was configured (which a host, or a test capturing output, may since have closed)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", *, json: bool = True) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask,
            *(() if json else (_escape_controls,)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
