"""SQL statement templates, generated user names and passwords for dynamic credentials.

Operators write statements the Vault way::

    CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';

The statements themselves are trusted operator input, but the values put into them must
never change their meaning. Two layers make sure of it:

1. the values we generate are drawn from tiny alphabets (``[a-z0-9_-]`` for names,
   ``[A-Za-z0-9-]`` for passwords), so they cannot contain a quote, a backslash, a ``$`` or
   a ``;`` in the first place;
2. :func:`render` reads the template like PostgreSQL's lexer does and escapes each value for
   the place it lands in: inside ``"..."`` it doubles ``"``, inside ``'...'`` it doubles
   ``'``, and a bare placeholder becomes a complete quoted identifier (names) or literal
   (everything else). Inside a dollar-quoted body, where no escaping exists, a value is
   accepted only if it is made of harmless characters.

So even an operator-supplied value (the root user name in ``rotate-root``) cannot break out.
"""

from __future__ import annotations

import re
import secrets
import string
from datetime import UTC, datetime
from urllib.parse import quote

PLACEHOLDER = re.compile(r"\{\{\s*(name|username|password|expiration)\s*\}\}")
IDENTIFIER_PLACEHOLDERS = frozenset({"name", "username"})
SAFE_RAW = re.compile(r"[A-Za-z0-9_ :+.-]*")
"""What may be pasted into a dollar-quoted body, where nothing can be escaped."""
MAX_IDENTIFIER = 63
"""PostgreSQL's NAMEDATALEN - 1: longer role names are silently truncated by the server."""
_NAME_CHARS = string.ascii_lowercase + string.digits
_PASSWORD_CHARS = string.ascii_letters + string.digits


class TemplateError(ValueError):
    """A statement that cannot be rendered safely."""


def quote_identifier(value: str) -> str:
    if "\x00" in value:
        raise TemplateError("identifiers cannot contain NUL")
    return '"' + value.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    if "\x00" in value:
        raise TemplateError("literals cannot contain NUL")
    if "\\" in value:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def render(template: str, values: dict[str, str]) -> str:
    """Substitute ``{{name}}``-style placeholders, escaped for their lexical context."""
    out: list[str] = []
    i = 0
    state = "code"  # code | single | double | dollar | line_comment | block_comment
    dollar_tag = ""
    length = len(template)
    while i < length:
        match = PLACEHOLDER.match(template, i) if template[i] == "{" else None
        if match is not None:
            out.append(_substitute(match.group(1), values, state))
            i = match.end()
            continue
        char = template[i]
        out.append(char)
        i += 1
        if state == "code":
            if char == "'":
                state = "single"
            elif char == '"':
                state = "double"
            elif char == "-" and template.startswith("-", i):
                state = "line_comment"
            elif char == "/" and template.startswith("*", i):
                state = "block_comment"
            elif char == "$":
                tag = re.match(r"([A-Za-z_][A-Za-z0-9_]*)?\$", template[i:])
                if tag is not None:
                    dollar_tag = "$" + tag.group(0)
                    out.append(tag.group(0))
                    i += len(tag.group(0))
                    state = "dollar"
        elif state == "single" and char == "'":
            if template.startswith("'", i):  # '' is an escaped quote, still inside
                out.append("'")
                i += 1
            else:
                state = "code"
        elif state == "double" and char == '"':
            if template.startswith('"', i):
                out.append('"')
                i += 1
            else:
                state = "code"
        elif state == "line_comment" and char == "\n":
            state = "code"
        elif state == "block_comment" and char == "*" and template.startswith("/", i):
            out.append("/")
            i += 1
            state = "code"
        elif state == "dollar" and char == "$" and template.startswith(dollar_tag[1:], i):
            out.append(dollar_tag[1:])
            i += len(dollar_tag) - 1
            state = "code"
    return "".join(out)


def _substitute(key: str, values: dict[str, str], state: str) -> str:
    if key not in values:
        raise TemplateError(f"template uses {{{{{key}}}}} but no value is available here")
    value = values[key]
    if "\x00" in value:
        raise TemplateError("values cannot contain NUL")
    if state == "single":
        if "\\" in value:
            raise TemplateError(f"{{{{{key}}}}} cannot hold a backslash inside a '...' literal")
        return value.replace("'", "''")
    if state == "double":
        return value.replace('"', '""')
    if state == "dollar":
        if not SAFE_RAW.fullmatch(value):
            raise TemplateError(f"{{{{{key}}}}} has characters unsafe inside a $$ body")
        return value
    if state in ("line_comment", "block_comment"):
        return ""  # never leak a value (a password) into a comment
    if key in IDENTIFIER_PLACEHOLDERS:
        return quote_identifier(value)
    return quote_literal(value)


def sanitize(part: str, limit: int) -> str:
    """A fragment of a generated user name: lowercase ``[a-z0-9_]``, at most ``limit``."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", part.lower())
    return cleaned[:limit]


def generate_username(role: str, display_name: str, now: float) -> str:
    """``v-<display>-<role>-<random>-<unix time>``, like Vault's PostgreSQL default."""
    random_part = "".join(secrets.choice(_NAME_CHARS) for _ in range(20))
    parts = ["v"]
    if display_name:
        parts.append(sanitize(display_name, 8))
    parts += [sanitize(role, 8), random_part, str(int(now))]
    name = "-".join(p for p in parts if p)
    return name[:MAX_IDENTIFIER]


def generate_password(length: int = 20) -> str:
    """Letters and digits with a ``-``: no character any SQL or URL context treats specially.

    Always contains a lower case letter, an upper case letter and a digit, so common
    server-side complexity rules accept it.
    """
    while True:
        body = "".join(secrets.choice(_PASSWORD_CHARS) for _ in range(length - 1))
        if (
            any(c.islower() for c in body)
            and any(c.isupper() for c in body)
            and any(c.isdigit() for c in body)
        ):
            cut = secrets.randbelow(length - 2) + 1
            return body[:cut] + "-" + body[cut:]


def expiration_text(seconds: float) -> str:
    """``2006-01-02 15:04:05-0700`` in UTC: the format Vault's plugins give ``VALID UNTIL``."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S+0000")


def render_connection_url(template: str, username: str, password: str) -> str:
    """Fill ``{{username}}``/``{{password}}`` in a URL or a ``key=value`` libpq string."""
    is_url = template.startswith(("postgres://", "postgresql://"))

    def value(text: str) -> str:
        if is_url:
            return quote(text, safe="")
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "username":
            return value(username)
        if key == "password":
            return value(password)
        return match.group(0)

    return PLACEHOLDER.sub(fill, template)


def redact_url(url: str) -> str:
    """A connection URL with any literal password replaced, safe to return on read."""
    return re.sub(r"(://[^:/@]*:)(?!\{\{)[^@]*@", r"\1*****@", url)
