"""A small parser for the subset of HCL that Vault policies are written in.

Supported: ``key = value`` attributes, blocks with string labels (``path "secret/*" { ... }``),
strings with the usual escapes, numbers, ``true``/``false``, lists (trailing commas allowed),
objects (``allowed_parameters = { "x" = [] }``), and the three comment styles ``#``, ``//``
and ``/* */``. Not supported (refused with a clear error): heredocs and expressions.

The parser keeps the line of every item so policy errors point at the right line; the
policy layer decides which keys mean something.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TypeAlias


class HCLError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.reason = message


@dataclass(frozen=True)
class Item:
    key: str
    labels: tuple[str, ...]
    value: Value
    line: int


@dataclass(frozen=True)
class Body:
    items: tuple[Item, ...]
    line: int


Value: TypeAlias = str | int | float | bool | list["Value"] | Body

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*|//[^\n]*)
  | (?P<block>/\*)
  | (?P<string>")
  | (?P<heredoc><<)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)
  | (?P<punct>[{}\[\]=,:])
    """,
    re.VERBOSE,
)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "/": "/"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    value: object
    line: int


def _read_string(source: str, pos: int, line: int) -> tuple[str, int]:
    out: list[str] = []
    i = pos
    while i < len(source):
        char = source[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\n":
            break
        if char == "\\":
            nxt = source[i + 1 : i + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", source[i + 2 : i + 6]):
                out.append(chr(int(source[i + 2 : i + 6], 16)))
                i += 6
                continue
            raise HCLError(line, f"invalid escape sequence '\\{nxt}' in string")
        out.append(char)
        i += 1
    raise HCLError(line, "unterminated string")


def _tokenize(source: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos, line = 0, 1
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise HCLError(line, f"unexpected character {source[pos]!r}")
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "block":
            end = source.find("*/", pos + 2)
            if end < 0:
                raise HCLError(line, "unterminated /* comment")
            line += source.count("\n", pos, end)
            pos = end + 2
            continue
        if kind == "string":
            value, pos = _read_string(source, pos + 1, line)
            tokens.append(_Tok("string", value, value, line))
            continue
        if kind == "heredoc":
            raise HCLError(line, "heredoc strings are not supported; use a quoted string")
        if kind == "number":
            tokens.append(_Tok("number", text, json.loads(text), line))
        elif kind == "ident":
            tokens.append(_Tok("ident", text, text, line))
        elif kind == "punct":
            tokens.append(_Tok(text, text, text, line))
        line += text.count("\n")
        pos = match.end()
    tokens.append(_Tok("eof", "", None, line))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> _Tok:
        return self.tokens[self.pos]

    def take(self, kind: str | None = None) -> _Tok:
        tok = self.tokens[self.pos]
        if kind is not None and tok.kind != kind:
            raise HCLError(tok.line, f"expected {kind!r}, found {_describe(tok)}")
        self.pos += 1
        return tok

    def body(self, end: str, line: int) -> Body:
        items: list[Item] = []
        while self.peek().kind != end:
            if self.peek().kind == "eof":
                raise HCLError(line, "unclosed '{' (missing '}')")
            items.append(self.item())
            if self.peek().kind == ",":
                self.take()
        return Body(tuple(items), line)

    def item(self) -> Item:
        tok = self.take()
        if tok.kind not in ("ident", "string"):
            raise HCLError(tok.line, f"expected a key, found {_describe(tok)}")
        if self.peek().kind in ("=", ":"):
            self.take()
            return Item(tok.text, (), self.value(), tok.line)
        labels: list[str] = []
        while self.peek().kind in ("string", "ident"):
            labels.append(self.take().text)
        if self.peek().kind != "{":
            raise HCLError(
                self.peek().line,
                f"expected '=' or '{{' after {tok.text!r}, found {_describe(self.peek())}",
            )
        start = self.take("{")
        body = self.body("}", start.line)
        self.take("}")
        return Item(tok.text, tuple(labels), body, tok.line)

    def value(self) -> Value:
        tok = self.peek()
        if tok.kind == "string":
            return str(self.take().value)
        if tok.kind == "number":
            number = self.take().value
            assert isinstance(number, int | float)
            return number
        if tok.kind == "ident" and tok.text in ("true", "false"):
            self.take()
            return tok.text == "true"
        if tok.kind == "[":
            self.take()
            values: list[Value] = []
            while self.peek().kind != "]":
                if self.peek().kind == "eof":
                    raise HCLError(tok.line, "unclosed '[' (missing ']')")
                values.append(self.value())
                if self.peek().kind == ",":
                    self.take()
                elif self.peek().kind != "]":
                    raise HCLError(
                        self.peek().line, f"expected ',' or ']', found {_describe(self.peek())}"
                    )
            self.take("]")
            return values
        if tok.kind == "{":
            self.take()
            body = self.body("}", tok.line)
            self.take("}")
            return body
        raise HCLError(tok.line, f"expected a value, found {_describe(tok)}")


def _describe(tok: _Tok) -> str:
    if tok.kind == "eof":
        return "end of file"
    if tok.kind == "string":
        return f"string {tok.text!r}"
    return repr(tok.text)


def parse(source: str) -> Body:
    """Parse HCL text into items; raises :class:`HCLError` with a line number."""
    parser = _Parser(_tokenize(source))
    body = parser.body("eof", 1)
    return body
