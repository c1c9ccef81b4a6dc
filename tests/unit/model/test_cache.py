"""ManifestCache: a cached load gives what an uncached one gives, and re-reads what changed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from socle.errors import ManifestError
from socle.model.cache import ManifestCache
from socle.model.loader import LoadedManifests, load
from tests.unit.model._repo import app
from tests.unit.model.conftest import WriteRepo

BASE = {
    "apps/a.yaml": app("api", "replicas: 2\n") + "---\n" + app("web"),
    "apps/b.yaml": app("worker", "dependsOn: [api]\n"),
}


def trusting() -> ManifestCache:
    """A cache that trusts stamps at once (tests write files and load within a second)."""
    return ManifestCache(racy_ns=0)


def same(one: LoadedManifests, two: LoadedManifests) -> None:
    assert one.apps == two.apps
    assert one.origins == two.origins
    assert one.digest() == two.digest()


def bump_mtime(path: Path) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))


def test_cached_loads_equal_uncached_ones(write_repo: WriteRepo) -> None:
    root = write_repo(BASE)
    cache = trusting()
    first = load(root, cache=cache)
    same(first, load(root))
    assert (cache.stats.parsed, cache.stats.validated) == (2, 3)
    again = load(root, cache=cache)
    same(again, load(root))
    assert (cache.stats.stat_hits, cache.stats.parsed, cache.stats.validated) == (2, 0, 0)
    assert cache.stats.model_hits == 3
    assert all(again.apps[name] is first.apps[name] for name in first.apps)


def test_digest_is_the_sha256_of_the_rendered_list(write_repo: WriteRepo) -> None:
    root = write_repo(BASE)
    loaded = load(root, cache=trusting())
    assert set(loaded.canonical) == {("App", "api"), ("App", "web"), ("App", "worker")}
    legacy = json.dumps(
        loaded.rendered(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert loaded.digest() == hashlib.sha256(legacy.encode()).hexdigest()


def test_an_edited_file_is_read_again(write_repo: WriteRepo) -> None:
    root = write_repo(BASE)
    cache = trusting()
    first = load(root, cache=cache)
    path = root / "apps" / "a.yaml"
    path.write_text(BASE["apps/a.yaml"].replace("replicas: 2", "replicas: 3"))
    bump_mtime(path)  # same size: only the stamp tells
    second = load(root, cache=cache)
    assert second.apps["api"].spec.replicas == 3
    assert (cache.stats.parsed, cache.stats.validated) == (1, 2)
    assert second.apps["worker"] is first.apps["worker"]
    assert second.digest() != first.digest()
    same(second, load(root))


def test_a_racy_file_is_read_again_even_with_the_same_stamp(write_repo: WriteRepo) -> None:
    """Written within the racy window: its stamp proves nothing, its text is compared."""
    root = write_repo(BASE)
    cache = ManifestCache()  # default window: files just written are racy
    load(root, cache=cache)
    path = root / "apps" / "a.yaml"
    before = path.stat()
    path.write_text(BASE["apps/a.yaml"].replace("replicas: 2", "replicas: 7"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime and size as before
    loaded = load(root, cache=cache)
    assert loaded.apps["api"].spec.replicas == 7
    assert cache.stats.stat_hits == 0


def test_a_touched_file_with_the_same_text_is_not_parsed(write_repo: WriteRepo) -> None:
    root = write_repo(BASE)
    cache = trusting()
    first = load(root, cache=cache)
    for rel, text in BASE.items():
        (root / rel).write_text(text)
        bump_mtime(root / rel)
    second = load(root, cache=cache)
    assert (cache.stats.text_hits, cache.stats.parsed, cache.stats.validated) == (2, 0, 0)
    assert all(second.apps[name] is first.apps[name] for name in first.apps)


def test_added_and_removed_files(write_repo: WriteRepo) -> None:
    root = write_repo(BASE)
    cache = trusting()
    load(root, cache=cache)
    (root / "apps" / "b.yaml").unlink()
    (root / "apps" / "c.yaml").write_text(app("cron"))
    loaded = load(root, cache=cache)
    assert list(loaded.apps) == ["api", "cron", "web"]
    same(loaded, load(root))


def test_errors_keep_file_and_line_and_a_fix_is_seen(write_repo: WriteRepo) -> None:
    root = write_repo(BASE)
    cache = trusting()
    load(root, cache=cache)
    path = root / "apps" / "a.yaml"
    path.write_text(BASE["apps/a.yaml"].replace("replicas: 2", "replicas: many"))
    bump_mtime(path)
    for _ in range(2):  # the broken file stays cached: same problems, same lines
        with pytest.raises(ManifestError) as info:
            load(root, cache=cache)
        found = [(p.file, p.line, p.path) for p in info.value.problems]
        with pytest.raises(ManifestError) as plain:
            load(root)
        assert found == [(p.file, p.line, p.path) for p in plain.value.problems]
        assert found == [("apps/a.yaml", 8, "spec.replicas")]
    path.write_text(BASE["apps/a.yaml"])
    bump_mtime(path)
    assert load(root, cache=cache).apps["api"].spec.replicas == 2


def test_yaml_errors_are_reported_from_the_cache_too(write_repo: WriteRepo) -> None:
    root = write_repo({**BASE, "apps/c.yaml": "kind: [unclosed\n"})
    cache = trusting()
    reports = []
    for _ in range(2):
        with pytest.raises(ManifestError) as info:
            load(root, cache=cache)
        reports.append([(p.file, p.line, p.reason) for p in info.value.problems])
    assert reports[0] == reports[1] and reports[0][0][:2] == ("apps/c.yaml", 2)


def test_cross_object_checks_still_run_on_cached_objects(write_repo: WriteRepo) -> None:
    root = write_repo(BASE)
    cache = trusting()
    load(root, cache=cache)
    path = root / "apps" / "a.yaml"
    path.write_text(app("web"))  # api is gone: worker's dependsOn now dangles
    with pytest.raises(ManifestError) as info:
        load(root, cache=cache)
    assert [(p.file, p.line, p.path) for p in info.value.problems] == [
        ("apps/b.yaml", 8, "spec.dependsOn[0]")
    ]


def test_overlays_apply_to_cached_objects(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            **BASE,
            "environments/prod/p.yaml": "kind: App\nmetadata: {name: api}\nspec: {replicas: 5}\n",
            "environments/dev/p.yaml": "kind: App\nmetadata: {name: api}\nspec: {replicas: 1}\n",
        }
    )
    cache = trusting()
    base = load(root, cache=cache)
    prod = load(root, "prod", cache=cache)
    assert prod.apps["api"].spec.replicas == 5 and base.apps["api"].spec.replicas == 2
    assert prod.apps["web"] is base.apps["web"]
    assert load(root, "dev", cache=cache).apps["api"].spec.replicas == 1
    again = load(root, "prod", cache=cache)
    assert cache.stats.validated == 0 and again.apps["api"] is prod.apps["api"]
    patch = root / "environments" / "prod" / "p.yaml"
    patch.write_text(patch.read_text().replace("5", "6"))
    bump_mtime(patch)
    changed = load(root, "prod", cache=cache)
    assert changed.apps["api"].spec.replicas == 6 and cache.stats.validated == 1
    same(changed, load(root, "prod"))


def test_a_patch_error_points_at_the_patch(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            **BASE,
            "environments/prod/p.yaml": "kind: App\nmetadata: {name: api}\nspec: {replicas: 5}\n",
        }
    )
    cache = trusting()
    load(root, "prod", cache=cache)
    patch = root / "environments" / "prod" / "p.yaml"
    patch.write_text("kind: App\nmetadata: {name: api}\nspec:\n  replicas: -1\n")
    with pytest.raises(ManifestError) as info:
        load(root, "prod", cache=cache)
    assert [(p.file, p.line) for p in info.value.problems] == [("environments/prod/p.yaml", 4)]


def test_a_busy_cache_is_bypassed(write_repo: WriteRepo) -> None:
    root = write_repo(BASE)
    cache = trusting()
    assert cache.begin()
    try:
        loaded = load(root, cache=cache)  # another load holds it: runs uncached
    finally:
        cache.end()
    same(loaded, load(root))
    assert len(cache) == 0


def test_memory_follows_the_repositories_loaded(tmp_path: Path, write_repo: WriteRepo) -> None:
    root = write_repo(BASE)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.yaml").write_text(app("x"))
    cache = ManifestCache(keep_loads=2, racy_ns=0)
    load(root, cache=cache)
    load(other, cache=cache)
    assert len(cache) == 3
    load(other, cache=cache)
    load(other, cache=cache)
    assert len(cache) == 1


def test_a_new_checkout_of_the_same_files_is_not_parsed_again(
    tmp_path: Path, write_repo: WriteRepo
) -> None:
    """GitOps extracts each commit into its own folder: unchanged files, now elsewhere,
    reuse what was parsed and validated; the changed one alone is parsed, and the load
    equals an uncached one of the new folder (file, line and digest included)."""
    root = write_repo(BASE)
    cache = trusting()
    first = load(root, cache=cache)
    checkout = tmp_path / "checkouts" / "next"
    for rel, text in BASE.items():
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_text(text.replace("replicas: 2", "replicas: 3"))
    second = load(checkout, cache=cache)
    assert (cache.stats.text_hits, cache.stats.parsed, cache.stats.validated) == (1, 1, 2)
    assert second.apps["worker"] is first.apps["worker"]
    assert second.apps["api"].spec.replicas == 3
    same(second, load(checkout))
    assert second.root == checkout.resolve() and first.root == root.resolve()
