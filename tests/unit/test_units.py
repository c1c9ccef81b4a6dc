import pytest

from socle.model.units import parse_cpu, parse_duration, parse_size


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
