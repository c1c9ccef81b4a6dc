"""A LogQL subset, parsed into a small tree and compiled to DuckDB SQL with parameters.

Supported (Loki's syntax and meaning)::

    {app="api", env=~"prod|staging", stream!="stderr"}      stream selector (=, !=, =~, !~)
      |= "error"  != "debug"  |~ "timeout|refused"  !~ "health"   line filters
      | json        | logfmt                                  field extraction
      | level="error"  | status>=500  | path=~"/api/.*"        label filters
    count_over_time(<log query>[5m])   rate(<log query>[1m])
    bytes_over_time(...)  bytes_rate(...)
    sum(...)  sum by (app) (...)  count/min/max/avg by (...) (...)

Regular expressions are RE2, as in Loki (DuckDB uses RE2 too). Labels of a stream are the
columns ``app env instance stream release trace_id`` plus any label pushed through the Loki
API. User text never becomes SQL: every string is a parameter, label names are checked
against ``[A-Za-z_][A-Za-z0-9_]*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from socle.errors import ConfigError
from socle.units import parse_duration

COLUMNS = ("app", "env", "instance", "stream", "release", "trace_id")
"""Labels stored as their own columns; others live in the ``labels`` JSON column."""
STREAM_LABELS = ("app", "env", "instance", "stream", "release")
"""The labels that make a stream (trace ids are per line, not a stream)."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<duration>\[[0-9a-z.]+\])
    | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|[|{}(),=<>])
    | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v"}  # fmt: skip
_NUMERIC_ESCAPES = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}
"""Go's (and so Loki's) ``\\xHH``, ``\\uHHHH``, ``\\UHHHHHHHH``; octal ``\\NNN`` besides."""
EXTRACTED = "_extracted"
"""Suffix naming a parsed field that a stream label of the same name hides (Loki's)."""
RANGE_FUNCS = ("count_over_time", "rate", "bytes_over_time", "bytes_rate")
AGGREGATIONS = ("sum", "count", "min", "max", "avg")
MAX_QUERY = 16384


class LogQLError(ConfigError):
    """A query that does not parse or uses what the subset does not support."""


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str


@dataclass(frozen=True)
class LineFilter:
    op: str  # |= != |~ !~
    value: str


@dataclass(frozen=True)
class Parser:
    kind: Literal["json", "logfmt"]


@dataclass(frozen=True)
class LabelFilter:
    name: str
    op: str  # = != =~ !~ == > >= < <=
    value: str | float


Stage = LineFilter | Parser | LabelFilter


@dataclass(frozen=True)
class LogQuery:
    matchers: tuple[Matcher, ...]
    stages: tuple[Stage, ...] = ()


@dataclass(frozen=True)
class MetricQuery:
    func: str
    query: LogQuery
    range_seconds: float
    aggregation: str | None = None
    by: tuple[str, ...] | None = None
    """Labels to group by (``sum by (app)``); None without ``by`` (one series per stream,
    or one series in all when ``aggregation`` is set)."""


Query = LogQuery | MetricQuery


@dataclass
class _Tokens:
    items: list[tuple[str, str]]
    text: str
    pos: int = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.pos + offset
        return self.items[index] if index < len(self.items) else ("end", "")

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        got_kind, got = self.peek()
        if (kind and got_kind != kind) or (value is not None and got != value):
            want = value or kind
            raise LogQLError(
                f"query: expected {want!r} but found {got or 'the end'!r}",
                hint='e.g. {app="api"} |= "error" or count_over_time({app="api"}[5m])',
            )
        self.pos += 1
        return got


def _tokenize(text: str) -> _Tokens:
    if len(text) > MAX_QUERY:
        raise LogQLError(f"query: longer than {MAX_QUERY} characters")
    items: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise LogQLError(
                f"query: unexpected character at offset {pos}: {text[pos : pos + 10]!r}"
            )
        kind = match.lastgroup or ""
        items.append((kind, match.group(kind)))
        pos = match.end()
    return _Tokens(items, text)


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    out: list[str] = []
    index = 1
    while index < len(token) - 1:
        char = token[index]
        if char == "\\":
            nxt = token[index + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                index += 2
                continue
            if nxt in _NUMERIC_ESCAPES or nxt in "01234567":
                size, base = _NUMERIC_ESCAPES.get(nxt, (3, 8))
                start = index + (1 if base == 8 else 2)
                digits = token[start : start + size]
                allowed = "01234567" if base == 8 else "0123456789abcdefABCDEF"
                if (
                    len(digits) != size
                    or start + size > len(token) - 1
                    or any(d not in allowed for d in digits)
                ):
                    raise LogQLError(f"query: bad escape \\{nxt} in {token[:80]}")
                code = int(digits, base)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF or (base == 8 and code > 255):
                    raise LogQLError(f"query: escape \\{nxt}{digits} is not a character")
                out.append(chr(code))
                index = start + size
                continue
            raise LogQLError(f"query: unknown escape \\{nxt} in {token}")
        else:
            out.append(char)
            index += 1
    return "".join(out)


MAX_REGEX = 4096


def _regex(value: str) -> str:
    """``value``, bounded in size. Its syntax is RE2's (the engine DuckDB and Loki use),
    checked by the store itself (:func:`regexes`, ``check_regexes``), never by Python's
    ``re``: the two disagree both ways (``\\p{L}`` and ``[[:alpha:]]`` are RE2,
    look-arounds and back-references only Python's), and the engine must not be loaded
    into the control plane for it."""
    if len(value) > MAX_REGEX:
        raise LogQLError(f"query: regular expression longer than {MAX_REGEX} characters")
    return value


def regexes(query: Query) -> list[str]:
    """Every regular expression of ``query`` (matchers, line and label filters)."""
    log_query = query.query if isinstance(query, MetricQuery) else query
    found = [m.value for m in log_query.matchers if "~" in m.op]
    for stage in log_query.stages:
        if isinstance(stage, LineFilter | LabelFilter) and "~" in stage.op:
            found.append(str(stage.value))
    return list(dict.fromkeys(found))


def _selector(tokens: _Tokens) -> tuple[Matcher, ...]:
    tokens.take("op", "{")
    matchers: list[Matcher] = []
    while tokens.peek() != ("op", "}"):
        name = tokens.take("name")
        op = tokens.take("op")
        if op not in ("=", "!=", "=~", "!~"):
            raise LogQLError(f"query: matcher {name}{op}: the operator must be = != =~ !~")
        value = _unquote(tokens.take("string"))
        matchers.append(Matcher(name, op, _regex(value) if "~" in op else value))
        if tokens.peek() == ("op", ","):
            tokens.take()
    tokens.take("op", "}")
    if not any(m.op in ("=", "=~") and m.value not in ("", ".*") for m in matchers):
        raise LogQLError(
            "query: the stream selector needs at least one matcher that is not empty",
            hint='e.g. {app="api"} (as in Loki)',
        )
    return tuple(matchers)


def _stages(tokens: _Tokens) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    while True:
        kind, value = tokens.peek()
        if kind == "op" and value in ("|=", "!=", "|~", "!~"):
            tokens.take()
            text = _unquote(tokens.take("string"))
            stages.append(LineFilter(value, _regex(text) if "~" in value else text))
        elif (kind, value) == ("op", "|"):
            tokens.take()
            name = tokens.take("name")
            comparisons = ("=", "!=", "=~", "!~", "==", ">", ">=", "<", "<=")
            if name in ("json", "logfmt") and tokens.peek()[1] not in comparisons:
                stages.append(Parser("json" if name == "json" else "logfmt"))
                continue
            op = tokens.take("op")
            if op not in comparisons:
                raise LogQLError(f"query: label filter {name}{op}: unknown operator")
            vkind, raw = tokens.peek()
            tokens.take()
            if vkind == "string":
                text = _unquote(raw)
                stages.append(LabelFilter(name, op, _regex(text) if "~" in op else text))
            elif vkind == "number" and op not in ("=~", "!~"):
                stages.append(LabelFilter(name, op, float(raw)))
            else:
                raise LogQLError(f"query: label filter {name}{op}: expected a string or number")
        else:
            return tuple(stages)


def _log_query(tokens: _Tokens) -> LogQuery:
    matchers = _selector(tokens)
    return LogQuery(matchers, _stages(tokens))


def _range(tokens: _Tokens) -> float:
    raw = tokens.take("duration")[1:-1]
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise LogQLError(f"query: range [{raw}]: {exc}") from None
    if seconds <= 0:
        raise LogQLError(f"query: range [{raw}] must be positive")
    return float(seconds)


def _metric(tokens: _Tokens) -> MetricQuery:
    name = tokens.take("name")
    if name in AGGREGATIONS:
        by: tuple[str, ...] | None = None
        if tokens.peek() == ("name", "by"):
            tokens.take()
            tokens.take("op", "(")
            labels = []
            while tokens.peek() != ("op", ")"):
                labels.append(tokens.take("name"))
                if tokens.peek() == ("op", ","):
                    tokens.take()
            tokens.take("op", ")")
            by = tuple(labels)
        tokens.take("op", "(")
        inner = _metric(tokens)
        tokens.take("op", ")")
        if inner.aggregation is not None:
            raise LogQLError("query: one aggregation over a range function is supported")
        return MetricQuery(inner.func, inner.query, inner.range_seconds, name, by or ())
    if name not in RANGE_FUNCS:
        raise LogQLError(
            f"query: unknown function {name!r}",
            hint="supported: " + ", ".join(RANGE_FUNCS + AGGREGATIONS),
        )
    tokens.take("op", "(")
    query = _log_query(tokens)
    seconds = _range(tokens)
    tokens.take("op", ")")
    return MetricQuery(name, query, seconds)


def parse(text: str) -> Query:
    """The tree of a LogQL query; :class:`LogQLError` names what is wrong and where."""
    tokens = _tokenize(text)
    result: Query = _log_query(tokens) if tokens.peek() == ("op", "{") else _metric(tokens)
    if tokens.peek()[0] != "end":
        raise LogQLError(f"query: unexpected {tokens.peek()[1]!r} after the query")
    return result


@dataclass
class Sql:
    """A WHERE clause and its parameters."""

    where: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)

    def clause(self) -> str:
        return " AND ".join(self.where) if self.where else "TRUE"


def label_expr(name: str, params: list[object]) -> str:
    """The SQL of a stream label's value (a column, or a key of the ``labels`` JSON)."""
    if not _NAME.fullmatch(name):
        raise LogQLError(f"query: bad label name {name!r}")
    if name in COLUMNS:
        return name
    params.append(f'$."{name}"')
    return "json_extract_string(labels, ?)"


def _compare(expr: str, op: str, value: str | float, sql: Sql) -> str:
    if isinstance(value, float):
        sql.params.append(value)
        return f"(TRY_CAST({expr} AS DOUBLE) {'=' if op == '==' else op} ?)"
    sql.params.append(value)
    if op in ("=", "=="):
        return f"({expr} = ?)"
    if op == "!=":
        return f"({expr} IS DISTINCT FROM ?)"
    if op == "=~":
        return f"regexp_full_match(coalesce({expr}, ''), ?)"
    if op == "!~":
        return f"NOT regexp_full_match(coalesce({expr}, ''), ?)"
    sql.params.pop()
    raise LogQLError(f"query: operator {op} needs a number")


def compile_where(query: LogQuery) -> Sql:
    """The WHERE clause selecting the lines of ``query`` (its pipeline applied in order)."""
    sql = Sql()
    for matcher in query.matchers:
        params: list[object] = []
        expr = label_expr(matcher.name, params)
        sql.params.extend(params)
        sql.where.append(_compare(expr, matcher.op, matcher.value, sql))
    parser: str | None = None
    for stage in query.stages:
        if isinstance(stage, LineFilter):
            sql.params.append(stage.value)
            sql.where.append(
                {
                    "|=": "contains(line, ?)",
                    "!=": "NOT contains(line, ?)",
                    "|~": "regexp_matches(line, ?)",
                    "!~": "NOT regexp_matches(line, ?)",
                }[stage.op]
            )
        elif isinstance(stage, Parser):
            parser = stage.kind
        else:
            if not _NAME.fullmatch(stage.name):
                raise LogQLError(f"query: bad label name {stage.name!r}")
            # Loki's rule: a label the line's text names as well as the stream keeps the
            # stream's value (the text's is ``NAME_extracted``), so an app writing
            # {"app": "billing"} in its lines cannot pass for the billing app.
            params = []
            field = stage.name
            if field.endswith(EXTRACTED) and len(field) > len(EXTRACTED):
                field = field[: -len(EXTRACTED)]
                stream = "NULL"
            else:
                stream = label_expr(field, params)
            if parser == "json":
                extracted = f"try(json_extract_string(line, '$.\"{field}\"'))"
            elif parser == "logfmt":
                pattern = f'(?:^|\\s){field}=(?:"([^"]*)"|(\\S*))'
                extracted = (
                    f"nullif(coalesce(nullif(regexp_extract(line, '{pattern}', 1), ''), "
                    f"regexp_extract(line, '{pattern}', 2)), '')"
                )
            else:
                extracted = "NULL"
            sql.params.extend(params)
            expr = f"coalesce({stream}, {extracted})"
            sql.where.append(_compare(expr, stage.op, stage.value, sql))
    return sql


__all__ = [
    "COLUMNS",
    "STREAM_LABELS",
    "LabelFilter",
    "LineFilter",
    "LogQLError",
    "LogQuery",
    "Matcher",
    "MetricQuery",
    "Parser",
    "Query",
    "Sql",
    "compile_where",
    "label_expr",
    "parse",
    "regexes",
]
