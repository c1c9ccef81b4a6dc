"""Secret values are masked in log records (message, args, tracebacks) and API data."""

from __future__ import annotations

import asyncio
import io
import logging

from socle.redact import MASK, RedactingFilter, RedactingReader, Redactor

SECRET = "hunter2-but-longer"


def _logger(redactor: Redactor) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.getLogger(f"test-redact-{id(out)}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger, out


def test_values_are_masked_in_messages_args_and_tracebacks() -> None:
    redactor = Redactor()
    redactor.add(SECRET)
    logger, out = _logger(redactor)
    logger.warning("plain %s and repr %r", SECRET, SECRET + "\n")
    try:
        raise RuntimeError(f"exec failed with PATH={SECRET}")
    except RuntimeError:
        logger.exception("boom")
    text = out.getvalue()
    assert SECRET not in text and text.count(MASK) >= 3
    assert "exec failed with PATH=****" in text


def test_short_values_are_not_masked_and_longest_wins() -> None:
    redactor = Redactor()
    redactor.add("yes")
    redactor.add("abcd")
    redactor.add("abcdefgh")
    assert redactor("yes abcdefgh abcd") == f"yes {MASK} {MASK}"
    assert redactor.deep({"a": ["abcd", 1, None], "b": {"c": "xabcdx"}}) == {
        "a": [MASK, 1, None],
        "b": {"c": f"x{MASK}x"},
    }


def test_quoted_spellings_are_masked() -> None:
    redactor = Redactor()
    redactor.add('line1\nli"ne2')
    assert redactor(repr('line1\nli"ne2')) == f"'{MASK}'"
    assert redactor('"line1\\nli\\"ne2"') == f'"{MASK}"'


class _Secrets:
    async def read_for_app(self, policies: list[str], path: str, key: str) -> tuple[str, int]:
        return f"{path}#{key}-value", 3


def test_the_reader_feeds_the_redactor() -> None:
    redactor = Redactor()
    reader = RedactingReader(_Secrets(), redactor)
    assert asyncio.run(reader.read_for_app(["p"], "secret/data/db", "pw")) == (
        "secret/data/db#pw-value",
        3,
    )
    assert redactor("x secret/data/db#pw-value y") == f"x {MASK} y"


def test_json_spelling_that_keeps_non_ascii_is_masked() -> None:
    redactor = Redactor()
    redactor.add('pä"ss-wörd')
    # As the runtime's shim writes a line into its JSON-lines log file.
    assert redactor('{"m": "x p\\u00e4\\"ss-w\\u00f6rd y"}') == '{"m": "x **** y"}'
    assert redactor('{"m": "x pä\\"ss-wörd y"}') == '{"m": "x **** y"}'


def test_bytes_masking_matches_text_masking() -> None:
    redactor = Redactor()
    assert redactor.mask_bytes(b"nothing known yet") == b"nothing known yet"
    for value in [SECRET, "pässwörd-ünïcode", 'quote"and\\slash', "longer-" + SECRET]:
        redactor.add(value)
    texts = [
        f"plain {SECRET} and longer-{SECRET}",
        '{"m": "json pässwörd-ünïcode and quote\\"and\\\\slash"}',
        "ünïcode around, no secret: pässwörd-ünïcod",
        "repr " + repr("pässwörd-ünïcode"),
    ]
    for text in texts:
        assert redactor.mask_bytes(text.encode()) == redactor(text).encode(), text
    assert MASK.encode() in redactor.mask_bytes(texts[1].encode())
