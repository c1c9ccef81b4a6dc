"""The template sandbox: what renders, and what hostile templates cannot do."""

from __future__ import annotations

import pytest

from socle.errors import TemplateError
from socle.network.templates import render_text


def render(source: str, **functions: object) -> str:
    return render_text(source, functions, name="conf/app.tmpl")  # type: ignore[arg-type]


def test_renders_loops_functions_and_filters() -> None:
    peers = [{"address": "10.0.0.1", "port": 80}, {"address": "10.0.0.2", "port": 81}]
    text = render(
        "{% for p in service() %}server {{ p.address }}:{{ p.port }};\n{% endfor %}"
        "mode={{ key('mode')|upper }}\n",
        service=lambda: peers,
        key=lambda k: "fast",
    )
    assert text == "server 10.0.0.1:80;\nserver 10.0.0.2:81;\nmode=FAST\n"


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
        ("{{ cycler.__init__.__globals__ }}", "unsafe"),
        ("{{ self.__init__ }}", "unsafe"),
        ("{{ range.__call__ }}", "unsafe"),
        ("{% include '/etc/passwd' %}", "no loader"),
        ("{% import 'os' as os %}", "no loader"),
        ("{% extends '/etc/passwd' %}", "no loader"),
        ("{{ lipsum(n=100000) }}", "undefined"),
        ("{{ missing_name }}", "undefined"),
    ],
)
def test_sandbox_escapes_are_refused(source: str, why: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(source)
    assert caught.value.message.startswith("conf/app.tmpl")
    assert why in caught.value.message


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(1000000) %}0123456789{% endfor %}",
        "{{ 'a' * 100000000 }}",
        "{{ 2 ** 100000 }}",
        "{{ 'x'|center(1000000000) }}",
        "{{ 'x'.ljust(10) }}",
        "{% set a = 'x' * 1000 %}{{ a.replace('', a) }}",
        "{% set a = 'x' * 1000 %}{{ a|replace('', a) }}",
        "{% set ns = namespace(s='abcdefgh') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(s=[1]) %}{% for i in range(40) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
        "{{ range(10**9)|list }}",
    ],
)
def test_resource_bombs_are_refused(source: str) -> None:
    with pytest.raises(TemplateError, match=r"refused|unsafe|larger|too large"):
        render(source)


def test_errors_name_the_line() -> None:
    with pytest.raises(TemplateError, match=r"^conf/app.tmpl:3: .*'peer' is undefined"):
        render("a\nb\n{{ peer }}\n")
    with pytest.raises(TemplateError, match=r"^conf/app.tmpl:2: "):
        render("ok\n{% for %}\n")


def test_a_function_error_is_a_template_error() -> None:
    def key(path: str) -> str:
        raise TemplateError(f"KV key {path!r} does not exist")

    with pytest.raises(TemplateError, match=r"conf/app.tmpl:1: KV key 'x' does not exist"):
        render("{{ key('x') }}", key=key)
