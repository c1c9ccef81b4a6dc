"""The LogQL subset: what parses into what, and what is refused with a reason."""

from __future__ import annotations

import pytest

from socle.observe.logs.logql import (
    LabelFilter,
    LineFilter,
    LogQLError,
    LogQuery,
    Matcher,
    MetricQuery,
    Parser,
    compile_where,
    parse,
    regexes,
)

PARSED = [
    (
        '{app="api",env="prod"} |= "error" != "x" |~ "re" | json | level="error"',
        LogQuery(
            (Matcher("app", "=", "api"), Matcher("env", "=", "prod")),
            (
                LineFilter("|=", "error"),
                LineFilter("!=", "x"),
                LineFilter("|~", "re"),
                Parser("json"),
                LabelFilter("level", "=", "error"),
            ),
        ),
    ),
    (
        '{app=~"a|b", stream!="stderr", job!~"x.*"}',
        LogQuery(
            (
                Matcher("app", "=~", "a|b"),
                Matcher("stream", "!=", "stderr"),
                Matcher("job", "!~", "x.*"),
            ),
        ),
    ),
    (
        '{app="a"} |= `raw \\d "quoted"`',
        LogQuery((Matcher("app", "=", "a"),), (LineFilter("|=", 'raw \\d "quoted"'),)),
    ),
    (
        '{app="a"} |= "tab\\tquote\\""',
        LogQuery((Matcher("app", "=", "a"),), (LineFilter("|=", 'tab\tquote"'),)),
    ),
    (
        '{app="a"} | logfmt | status>=500 | path=~"/api/.*"',
        LogQuery(
            (Matcher("app", "=", "a"),),
            (
                Parser("logfmt"),
                LabelFilter("status", ">=", 500.0),
                LabelFilter("path", "=~", "/api/.*"),
            ),
        ),
    ),
    (
        'count_over_time({app="api"}[5m])',
        MetricQuery("count_over_time", LogQuery((Matcher("app", "=", "api"),)), 300.0),
    ),
    (
        'rate({app="api"} |= "error"[1m])',
        MetricQuery(
            "rate", LogQuery((Matcher("app", "=", "api"),), (LineFilter("|=", "error"),)), 60.0
        ),
    ),
    (
        'sum by (app, env) (rate({env="prod"}[30s]))',
        MetricQuery("rate", LogQuery((Matcher("env", "=", "prod"),)), 30.0, "sum", ("app", "env")),
    ),
    (
        'sum(count_over_time({env="prod"}[1h]))',
        MetricQuery("count_over_time", LogQuery((Matcher("env", "=", "prod"),)), 3600.0, "sum", ()),
    ),
]


@pytest.mark.parametrize(("text", "tree"), PARSED)
def test_parses(text: str, tree: object) -> None:
    assert parse(text) == tree


REFUSED = [
    ("", "expected"),
    ("{}", "at least one matcher"),
    ('{app=""}', "at least one matcher"),
    ('{app="a"', "expected"),
    ('{app>"a"}', "operator"),
    ('{app="a"} |= error', "expected 'string'"),
    ('{app="a"} |= "\\q"', "unknown escape"),
    ('{app="a"} | level=~5', "expected a string"),
    ('nope({app="a"}[1m])', "unknown function"),
    ('rate({app="a"})', "expected 'duration'"),
    ('rate({app="a"}[0s])', "must be positive"),
    ('rate({app="a"}[5 years])', "unexpected"),
    ('{app="a"} extra', "unexpected"),
    ('{app="a"}; DROP TABLE hot', "unexpected character"),
    ('sum(sum(rate({app="a"}[1m])))', "one aggregation"),
    ("{" + 'a="b",' * 5000 + "}", "longer than"),
    ('{app="a"} |~ "' + "(" * 3000 + ")" * 3000 + '"', "longer than 4096"),
]


@pytest.mark.parametrize(
    "text",
    ['{app=~"\\\\p{Greek}+"}', '{app="a"} |~ "[[:digit:]]+"', '{app="a"} !~ "\\\\pL"'],
)
def test_re2_expressions_python_refuses_are_accepted(text: str) -> None:
    """``\\p{..}`` classes and POSIX brackets are RE2 (Loki accepts them); Python's ``re``
    refuses the first and warns about the second. The syntax is the store's RE2's to
    check (``check_regexes``): the control plane does not load the engine for it."""
    assert regexes(parse(text))


def test_every_regular_expression_of_a_query_is_listed_once() -> None:
    query = parse(
        'sum(count_over_time({app=~"a|b", env="p"} |~ "x+" != "y" | json | lvl=~"e.*"'
        ' |~ "x+" [5m]))'
    )
    assert regexes(query) == ["a|b", "x+", "e.*"]


@pytest.mark.parametrize(("text", "words"), REFUSED)
def test_refuses_with_a_reason(text: str, words: str) -> None:
    with pytest.raises(LogQLError) as info:
        parse(text)
    assert words in info.value.message
    assert info.value.http_status == 400


def test_user_text_is_only_ever_a_parameter() -> None:
    query = parse(
        '{app="x\' OR 1=1 --", weird_label="v"} |= "\'; DROP TABLE hot; --" | json '
        '| level="\') OR TRUE --"'
    )
    assert isinstance(query, LogQuery)
    sql = compile_where(query)
    text = sql.clause()
    assert "DROP" not in text and "OR 1=1" not in text and "OR TRUE" not in text
    assert "x' OR 1=1 --" in sql.params
    assert "'; DROP TABLE hot; --" in sql.params
    assert '$."weird_label"' in sql.params


def test_go_string_escapes_as_in_loki() -> None:
    """Loki unquotes strings like Go: ``\\xHH``, ``\\uHHHH``, ``\\UHHHHHHHH``, octal
    ``\\NNN`` and ``\\a \\b \\f \\v`` as well as ``\\n \\t``."""
    query = parse(r'{app="a"} |= "\u00e9t\xc3 \101\t\U0001F600 \a"')
    assert isinstance(query, LogQuery)
    assert query.stages[0] == LineFilter("|=", "ét\xc3 A\t\U0001f600 \a")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (r'{app="a"} |= "\x4"', "bad escape"),
        (r'{app="a"} |= "\xZZ"', "bad escape"),
        (r'{app="a"} |= "\uD800"', "not a character"),
        (r'{app="a"} |= "\U00110000"', "not a character"),
        (r'{app="a"} |= "\400"', "not a character"),
        (r'{app="a"} |= "\q"', "unknown escape"),
    ],
)
def test_bad_escapes_are_refused(text: str, words: str) -> None:
    with pytest.raises(LogQLError, match=words):
        parse(text)
