import pytest

from socle.units import parse_cpu, parse_duration, parse_size, parse_vault_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10), ("1m30s", 90), ("2h", 7200), (3, 3.0), ("1.5s", 1.5)],
)
def test_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10", "s", "10x", "-1s", -1, True, None, "1s junk", "1m 30s"])
def test_bad_duration(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "size"), [("128Mi", 128 * 2**20), ("1G", 10**9), (4096, 4096)])
def test_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "12Xi", "-1Mi", 0, True, "0Mi"])
def test_bad_size(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(("text", "cores"), [("500m", 0.5), (2, 2.0), ("1.5", 1.5)])
def test_cpu(text: object, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (3600, 3600.0),
        ("3600", 3600.0),
        ("7d", 7 * 86400.0),
        ("1h30m", 5400.0),
        ("90s", 90.0),
        ("300ms", 0.3),
        ("-1.5h", -5400.0),
        ("+2m", 120.0),
        ("0", 0.0),
        (".5s", 0.5),
        ("1us", 1e-6),
    ],
)
def test_vault_durations(value: object, seconds: float) -> None:
    assert parse_vault_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    ["", "1d12h", "h", "1x", "1h 30m", True, None, float("nan"), float("inf"), "9" * 70, 10**12],
)
def test_vault_durations_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_vault_duration(bad)
