"""The OData query options Batch list operations take: $filter, $select, paging.

``$filter`` is parsed into a predicate over an entity through a table of
field accessors, so filtering 20,000 tasks never serialises them. Supported:
``eq ne gt ge lt le`` on strings, integers, booleans and ``datetime'...'``
values, ``and``/``or``/``not``, parentheses and ``startswith(field, '...')``.
Paging uses an opaque ``$skiptoken`` that carries the query and the position
after the last item returned, so no server-side cursor has to be kept.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any, Callable

from . import exceptions as exc

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MAX_RESULTS = 1000

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
    | datetime'(?P<datetime>[^']*)'
    | '(?P<string>(?:[^']|'')*)'
    | (?P<number>-?\d+(?:\.\d+)?)(?![\w/])
    | (?P<word>[A-Za-z_][\w/.]*)
    )""", re.VERBOSE)

_OPS = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}


def parse_time(text: str) -> int:
    """ISO 8601 -> integer microseconds since the epoch (exact, no float rounding)."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # The service writes seven fractional digits; Python takes at most six.
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", text)
    if m:
        text = f"{m.group(1)}.{m.group(2)[:6].ljust(6, '0')}{m.group(3)}"
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return (when - EPOCH) // dt.timedelta(microseconds=1)


def _bad_filter(text: str, why: str):
    return exc.InvalidQueryParameterValue(values={
        "QueryParameterName": "$filter", "QueryParameterValue": text, "Reason": why})


def compile_filter(text: str | None, fields: dict[str, Callable[[Any], Any]]) -> Callable[[Any], bool] | None:
    """Turn a $filter clause into a predicate; None for no filter."""
    if not text or not text.strip():
        return None
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise _bad_filter(text, f"Cannot read the filter at position {pos}.")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "datetime":
            try:
                tokens.append(("lit", parse_time(value)))
            except ValueError:
                raise _bad_filter(text, f"{value!r} is not a date-time.") from None
        elif kind == "string":
            tokens.append(("lit", value.replace("''", "'")))
        elif kind == "number":
            tokens.append(("lit", float(value) if "." in value else int(value)))
        elif kind == "word" and value.lower() in ("true", "false"):
            tokens.append(("lit", value.lower() == "true"))
        else:
            tokens.append((kind, value))
        pos = m.end()
    parser = _Parser(tokens, fields, text)
    pred = parser.expr()
    if parser.i != len(tokens):
        raise _bad_filter(text, "Unexpected text after the end of the filter.")
    return pred


class _Parser:
    def __init__(self, tokens, fields, text):
        self.t, self.i, self.fields, self.text = tokens, 0, fields, text

    def _peek_word(self):
        if self.i < len(self.t) and self.t[self.i][0] == "word":
            return self.t[self.i][1].lower()
        return None

    def _take(self, kind):
        if self.i >= len(self.t) or self.t[self.i][0] != kind:
            raise _bad_filter(self.text, f"Expected {kind}.")
        self.i += 1
        return self.t[self.i - 1][1]

    def expr(self):
        left = self.term()
        while self._peek_word() == "or":
            self.i += 1
            right = self.term()
            left = (lambda a, b: lambda e: a(e) or b(e))(left, right)
        return left

    def term(self):
        left = self.factor()
        while self._peek_word() == "and":
            self.i += 1
            right = self.factor()
            left = (lambda a, b: lambda e: a(e) and b(e))(left, right)
        return left

    def factor(self):
        word = self._peek_word()
        if word == "not":
            self.i += 1
            inner = self.factor()
            return lambda e: not inner(e)
        if self.i < len(self.t) and self.t[self.i][0] == "lparen":
            self.i += 1
            inner = self.expr()
            self._take("rparen")
            return inner
        if word == "startswith":
            self.i += 1
            self._take("lparen")
            get = self._field(self._take("word"))
            self._take("comma")
            prefix = self._take("lit")
            self._take("rparen")
            if not isinstance(prefix, str):
                raise _bad_filter(self.text, "startswith takes a string.")
            prefix = prefix.lower()
            return lambda e: isinstance(v := get(e), str) and v.lower().startswith(prefix)
        get = self._field(self._take("word"))
        op = self._take("word").lower()
        if op not in _OPS:
            raise _bad_filter(self.text, f"Unknown operator {op!r}.")
        value = self._take("lit")
        compare = _OPS[op]
        if isinstance(value, str):
            value = value.lower()   # ids and states compare without regard to case

            def pred(e):
                v = get(e)
                if v is None:
                    return op == "ne"
                return compare(str(v).lower(), value)
        else:
            def pred(e):
                v = get(e)
                if v is None or isinstance(v, str):
                    return op == "ne"
                return compare(v, value)
        return pred

    def _field(self, name):
        try:
            return self.fields[name]
        except KeyError:
            raise _bad_filter(self.text, f"The property {name!r} cannot be filtered on.") from None


def select(body: dict, names: list[str] | None) -> dict:
    if not names:
        return body
    keep = {n.split("/")[0] for n in names}
    return {k: v for k, v in body.items() if k in keep or k == "odata.metadata"}


def parse_select(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_max_results(text: str | None) -> int:
    if text is None or text == "":
        return MAX_RESULTS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_RESULTS:
        raise exc.InvalidQueryParameterValue(values={
            "QueryParameterName": "maxresults", "QueryParameterValue": text,
            "Reason": f"The value must be between 1 and {MAX_RESULTS}."})
    return value


def encode_token(state: dict) -> str:
    raw = json.dumps(state, separators=(",", ":")).encode()
    # URL-safe and unpadded: survives the SDK re-quoting the nextLink's query.
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = json.loads(raw)
        if not isinstance(state, dict):
            raise ValueError
        return state
    except (ValueError, TypeError):
        raise exc.InvalidQueryParameterValue(values={
            "QueryParameterName": "$skiptoken", "QueryParameterValue": token[:100],
            "Reason": "The continuation token is not valid."}) from None
