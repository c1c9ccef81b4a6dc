"""Run one scripted ``bao`` CLI session against OpenBao and Socle, and compare.

A session is data: a list of :class:`Step` (``bao`` argv, optional stdin, optional files in
the working directory, optional token). Each step runs against both peers; exit codes must
be equal and stdout/stderr equal after :func:`normalise`. ``capture`` stores a step's
stripped stdout (per peer) under a name that later steps use as ``${name}``: a token created
by one step is looked up by the next, each peer with its own value.

The normaliser is deliberately strict: it only rewrites values that are random or depend on
the clock (tokens, accessors, UUIDs, timestamps, serial numbers, PEM blocks, ciphertexts,
nonces, the server address) and numbers each distinct value in order of first appearance
over the whole session, so a token that shows up twice must show up in the same two places
on both peers. Durations are compared after rounding a few seconds of clock drift up to the
minute (up to DRIFT_S), and table cells without the CLI's column padding (computed from value lengths);
anything else, a word, a key, a value, an exit code, must match exactly.

The few legitimate differences are declared where they occur, with the reason next to
them: ``ignore_lines`` (Socle's own version line, no identity store), ``unordered`` (a
listing of random ids sorted by their random values), ``compare_stderr=False`` (a server's
own wording of a refusal: exit code and stdout still compared) and
``OPENBAO_ONLY_MOUNTS`` (the ``identity/`` mount OpenBao always has).
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tests.integration.secrets.bao_cli.peers import Peer

CLI_TIMEOUT_S = 60


@dataclass(frozen=True)
class Step:
    """One ``bao`` invocation. ``argv`` excludes the binary; ``${name}`` is substituted."""

    argv: tuple[str, ...]
    stdin: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    token: str | None = None
    """``${name}`` of a captured token to run as (default: the peer's root token)."""
    capture: str | None = None
    capture_json: Mapping[str, str] = field(default_factory=dict)
    """``{name: "dotted.path"}`` from JSON stdout, e.g. ``{"k1": "unseal_keys_b64.0"}``."""
    compare_stderr: bool = True
    """False only where the error text is the server's own wording (say why in the session)."""
    ignore_lines: tuple[str, ...] = ()
    """Regexes of output lines that legitimately differ (say why in the session)."""
    unordered: bool = False
    """Compare stdout lines as a multiset: a listing of random ids is sorted by the random
    values themselves, so its order differs between peers."""


def bao(*argv: str, **options: object) -> Step:
    """Shorthand: ``bao("kv", "get", "secret/x", capture="v")``."""
    return Step(argv=argv, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Session:
    name: str
    steps: Sequence[Step]
    sealed: bool = False
    """Start both peers sealed and uninitialised (operator init/unseal)."""
    needs_postgres: bool = False
    """Give the steps ``${pg_url}``, ``${pg_user}``, ``${pg_password}`` of a real PostgreSQL."""


@dataclass
class Outcome:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


_VAR = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


def substitute(text: str, variables: Mapping[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        # Not captured (its step failed on this peer): left as is, so the difference shows.
        return variables.get(match.group(1), match.group(0))

    return _VAR.sub(repl, text)


def _dig(document: object, dotted: str) -> str:
    for part in dotted.split("."):
        if isinstance(document, list):
            document = document[int(part)]
        elif isinstance(document, dict):
            document = document[part]
        else:
            raise KeyError(dotted)
    return str(document)


def run_steps(
    binary: str, peer: Peer, steps: Sequence[Step], given: Mapping[str, str] | None = None
) -> tuple[list[Outcome], dict[str, str]]:
    """Run the steps in order; returns the outcomes and the variables (``given`` ones, the
    root token, and what the steps captured)."""
    variables: dict[str, str] = dict(given or {})
    if peer.token:
        variables["root"] = peer.token
    outcomes = []
    for step in steps:
        for name, content in step.files.items():
            (peer.workdir / name).write_text(substitute(content, variables))
        argv = [substitute(a, variables) for a in step.argv]
        token = substitute(step.token, variables) if step.token is not None else None
        result = subprocess.run(
            [binary, *argv],
            input=substitute(step.stdin, variables) if step.stdin is not None else None,
            capture_output=True,
            text=True,
            cwd=peer.workdir,
            env=peer.cli_env(token),
            timeout=CLI_TIMEOUT_S,
            stdin=None if step.stdin is not None else subprocess.DEVNULL,
        )
        outcomes.append(Outcome(argv, result.returncode, result.stdout, result.stderr))
        if step.capture:
            variables[step.capture] = result.stdout.strip()
        if step.capture_json:
            try:
                document = json.loads(result.stdout)
                for name, dotted in step.capture_json.items():
                    variables[name] = _dig(document, dotted)
            except (ValueError, KeyError, IndexError):
                pass  # the step failed: later uses of the variable report it
    return outcomes, variables


# --- normalisation ------------------------------------------------------------------------

_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----[\s\S]*?-----END \1-----")
_ESCAPED_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----(?:\\n|[A-Za-z0-9+/=])*?-----END \1-----")
# Ordered: earlier classes win. Each entry: (label, pattern).
_CLASSES: list[tuple[str, re.Pattern[str]]] = [
    ("addr", re.compile(r"https?://127\.0\.0\.1:\d+")),
    ("time", re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")),
    ("time", re.compile(r"\b\d\d [A-Z][a-z]{2} \d\d \d\d:\d\d UTC\b")),
    ("uuid", re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")),
    ("token", re.compile(r"\b(?:hv[sbr]|s|b|r)\.[A-Za-z0-9]{20,}(?:\.[A-Za-z0-9]+)?\b")),
    ("serial", re.compile(r"\b[0-9a-f]{2}(?:[:-][0-9a-f]{2}){7,}\b")),
    ("ciphertext", re.compile(r"\bvault:v\d+:[A-Za-z0-9+/=]+")),
    ("id24", re.compile(r"(?<![A-Za-z0-9_.-])[A-Za-z0-9]{24}(?![A-Za-z0-9_-])")),
    # Generated database credentials: Vault's user name template and password policy.
    ("dbrandom", re.compile(r"(?<=-)[A-Za-z0-9]{20}(?=-1[7-9]\d{8}\b)")),
    ("password", re.compile(r'"password": "(?P<v>[A-Za-z0-9-]{20})"')),
    ("password", re.compile(r"(?m)^password +(?P<v>[A-Za-z0-9-]{20})$")),
    ("hex8", re.compile(r"(?<=[_-])[0-9a-f]{8}\b")),
    ("builtin", re.compile(r"\bv\d+\.\d+\.\d+\+builtin(?:\.\w+)?")),
    ("epoch", re.compile(r"(?<![\d.])1[7-9]\d{8}(?![\d.])")),
]
_DURATION = re.compile(r"(?<![\w.])(?=\d)(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?![\w.])")
_JSON_SECONDS = re.compile(
    r'("(?:ttl|lease_duration|creation_ttl|explicit_max_ttl|period|token_ttl)": )(\d+)'
)
DRIFT_S = 30
"""Seconds a TTL may have run down between its creation and the step that shows it (a
loaded machine is slow; the tests must not depend on speed)."""
_WRAPPED_WARNING = re.compile(r"\n  (?![* ])(?=\S)")
_PADDING = re.compile(r"(?<=\S) {2,}(?=\S)")


def _round_seconds(seconds: int) -> int:
    """Absorb the time a session takes: 767h59m57s reads like 768h."""
    if seconds % 60 >= 60 - DRIFT_S:
        return seconds + 60 - seconds % 60
    return seconds


def _duration(match: re.Match[str]) -> str:
    if not match.group(0) or not any(match.groups()):
        return match.group(0)
    h, m, s = (int(g) if g else 0 for g in match.groups())
    return f"<{_round_seconds(h * 3600 + m * 60 + s)}s>"


_CURL_HEADER = re.compile(r'-H "[^"]*"')


def _sort_curl_headers(text: str) -> str:
    """``-output-curl-string`` prints headers in Go map order (random per run): sort them."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith("curl "):
            parts = _CURL_HEADER.split(line)
            headers = sorted(_CURL_HEADER.findall(line))
            line = "".join(p + h for p, h in zip(parts, [*headers, ""], strict=True))
        lines.append(line)
    return "".join(lines)


class Normaliser:
    """Numbers each distinct random value by class, in order of first appearance."""

    def __init__(self, known: Mapping[str, str]) -> None:
        self.known = sorted(known.items(), key=lambda kv: -len(kv[1]))
        self.seen: dict[tuple[str, str], str] = {}
        self.counters: dict[str, itertools.count[int]] = {}

    def _label(self, kind: str, value: str) -> str:
        if kind in ("addr", "time", "epoch", "builtin"):
            return f"<{kind}>"
        key = (kind, value)
        if key not in self.seen:
            counter = self.counters.setdefault(kind, itertools.count(1))
            self.seen[key] = f"<{kind}#{next(counter)}>"
        return self.seen[key]

    def _replace(self, kind: str, match: re.Match[str]) -> str:
        """The whole match, or only its group ``v`` when the pattern names one."""
        if "v" not in match.re.groupindex:
            return self._label(kind, match.group(0))
        start, end = match.span("v")
        whole = match.group(0)
        offset = match.start()
        label = self._label(kind, match.group("v"))
        return whole[: start - offset] + label + whole[end - offset :]

    def __call__(self, text: str) -> str:
        for name, value in self.known:
            if len(value) >= 4:
                text = text.replace(value, f"<${name}>")
        text = _sort_curl_headers(text)
        text = _PEM.sub(lambda m: self._label("pem", m.group(0)), text)
        text = _ESCAPED_PEM.sub(lambda m: self._label("pem", m.group(0)), text)
        for kind, pattern in _CLASSES:
            text = pattern.sub(lambda m, k=kind: self._replace(k, m), text)  # type: ignore[misc]
        text = _JSON_SECONDS.sub(
            lambda m: f"{m.group(1)}<{_round_seconds(int(m.group(2)))}s>", text
        )
        text = _DURATION.sub(_duration, text)
        # Column padding is the CLI's, computed from value lengths that legitimately differ
        # (a token of 36 characters against one of 26): compare cells, not padding.
        return _PADDING.sub("  ", text)


# Mounts OpenBao always has and Socle does not serve (no identity engine): dropped from
# OpenBao's mount listings, table and JSON alike. Everything else in a listing must match.
OPENBAO_ONLY_MOUNTS = ("identity/",)


def drop_openbao_only_mounts(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            return text
        if isinstance(data, dict):
            for holder in (data, data.get("data")):
                if isinstance(holder, dict):
                    for mount in OPENBAO_ONLY_MOUNTS:
                        holder.pop(mount, None)
            return json.dumps(data, indent=2) + "\n"
    return "".join(
        line for line in text.splitlines(keepends=True) if not line.startswith(OPENBAO_ONLY_MOUNTS)
    )


def _is_mount_listing(argv: Sequence[str]) -> bool:
    return argv[:2] in (["secrets", "list"], ["auth", "list"])


def normalise_all(
    steps: Sequence[Step], outcomes: Sequence[Outcome], known: Mapping[str, str]
) -> list[Outcome]:
    norm: Callable[[str], str] = Normaliser(known)
    result = []
    for step, o in zip(steps, outcomes, strict=True):
        out = drop_openbao_only_mounts(o.stdout) if _is_mount_listing(o.argv) else o.stdout
        err = o.stderr
        # Before numbering: an ignored value must not shift the numbers of the others.
        for pattern in step.ignore_lines:
            regex = re.compile(pattern)
            out = "".join(x for x in out.splitlines(keepends=True) if not regex.search(x))
            err = "".join(x for x in err.splitlines(keepends=True) if not regex.search(x))
        # The CLI wraps warnings at 80 columns, so a value one character longer (59m59s
        # against 1h) moves a word to the next line: compare the warnings unwrapped.
        err = _WRAPPED_WARNING.sub(" ", err)
        out = norm(out)
        if step.unordered:
            out = "".join(sorted(out.splitlines(keepends=True)))
        result.append(Outcome(o.argv, o.returncode, out, norm(err)))
    return result


# --- comparison ---------------------------------------------------------------------------


def side_by_side(left: str, right: str, width: int = 78) -> str:
    rows = [f"{'openbao':<{width}} | socle", "-" * (2 * width + 3)]
    a, b = left.splitlines(), right.splitlines()
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for la, lb in itertools.zip_longest(a[i1:i2], b[j1:j2], fillvalue=""):
            mark = " " if tag == "equal" else "!"
            rows.append(f"{la[:width]:<{width}} {mark} {lb[:width]}")
    # Long lines are cut above: the full differing lines follow, as a unified diff.
    rows += list(difflib.unified_diff(a, b, "openbao", "socle", n=0, lineterm=""))
    return "\n".join(rows)


def differences(
    session: Session, bao_side: Sequence[Outcome], socle_side: Sequence[Outcome]
) -> list[str]:
    """Human-readable reports of each step where the peers disagree (empty: they agree)."""
    reports = []
    for index, (step, ours, theirs) in enumerate(
        zip(session.steps, socle_side, bao_side, strict=True), start=1
    ):
        problems = []
        if ours.returncode != theirs.returncode:
            problems.append(f"exit code: openbao {theirs.returncode}, socle {ours.returncode}")
        if ours.stdout != theirs.stdout:
            problems.append("stdout differs:\n" + side_by_side(theirs.stdout, ours.stdout))
        if step.compare_stderr and ours.stderr != theirs.stderr:
            problems.append("stderr differs:\n" + side_by_side(theirs.stderr, ours.stderr))
        if problems:
            shown = " ".join(step.argv)
            reports.append(f"[{session.name} step {index}] bao {shown}\n" + "\n".join(problems))
    return reports
