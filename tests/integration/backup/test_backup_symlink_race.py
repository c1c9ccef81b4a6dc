"""A volume is written by its (hostile) app while root reads it for a backup: a folder seen
as a folder when the tree was listed and swapped for a symlink before its files are read
must never lead the backup out of the volume (to /etc/shadow, SOCLE_HOME, another app)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from socle.backup.archive import ArchiveWriter, Item, extract, verify, walk_tree
from socle.backup.manifest import Manifest, VolumeEntry
from socle.errors import BackupError

SECRET = b"host secret that only root may read\n"


def _host_and_volume(tmp_path: Path) -> tuple[Path, Path]:
    host = tmp_path / "host"  # stands for /etc, SOCLE_HOME or another app's volume
    host.mkdir()
    (host / "shadow").write_bytes(SECRET)
    (host / "inner").mkdir()
    (host / "inner" / "key").write_bytes(SECRET)
    volume = tmp_path / "volume" / "data"
    (volume / "d" / "inner").mkdir(parents=True)
    (volume / "d" / "shadow").write_bytes(b"decoy\n")  # same names as the host's files
    (volume / "d" / "inner" / "key").write_bytes(b"decoy\n")
    return host, volume


def _write(items: list[Item]) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    for item in items:
        writer.add(item)
    writer.finish(
        Manifest(created="2026-01-01T00:00:00Z", socle_version="test", store="none", scope="volume")
    )
    return out.getvalue()


def _swap_for_link(folder: Path, target: Path) -> None:
    os.rename(folder, folder.with_name(folder.name + ".real"))
    os.symlink(target, folder)


def test_a_folder_swapped_for_a_symlink_after_the_listing_is_not_followed(
    tmp_path: Path,
) -> None:
    host, volume = _host_and_volume(tmp_path)
    items = [i for i in walk_tree(volume, "volumes/v/data") if isinstance(i, Item)]
    assert any(i.name == "volumes/v/data/d/shadow" for i in items)
    _swap_for_link(volume / "d", host)  # the app's move, between listing and reading
    try:
        archive = _write(items)
    except BackupError as exc:
        assert "d" in str(exc)  # refused: fine, nothing of the host was read
        return
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isreg():
                handle = tar.extractfile(member)
                assert handle is not None
                assert handle.read() != SECRET, member.name


def test_a_deeper_folder_swapped_is_not_followed_either(tmp_path: Path) -> None:
    host, volume = _host_and_volume(tmp_path)
    items = [i for i in walk_tree(volume, "volumes/v/data") if isinstance(i, Item)]
    _swap_for_link(volume / "d", host)  # the parent of a folder, not the folder itself
    with pytest.raises(BackupError):
        _write([i for i in items if i.name.startswith("volumes/v/data/d/inner")])


def test_a_swap_before_the_listing_lists_the_link_not_its_target(tmp_path: Path) -> None:
    host, volume = _host_and_volume(tmp_path)
    _swap_for_link(volume / "d", host)
    found = list(walk_tree(volume, "volumes/v/data"))
    names = {i.name for i in found if isinstance(i, Item)}
    assert "volumes/v/data/d/shadow" not in names
    # An absolute link out of a volume is refused and said, not archived.
    assert any(isinstance(s, str) and "volumes/v/data/d" in s for s in found)


def test_a_file_swapped_for_a_fifo_does_not_hang_the_backup(tmp_path: Path) -> None:
    _, volume = _host_and_volume(tmp_path)
    items = [i for i in walk_tree(volume, "volumes/v/data") if isinstance(i, Item)]
    os.unlink(volume / "d" / "shadow")
    os.mkfifo(volume / "d" / "shadow")  # nobody will ever write it: a blocking open hangs
    archive = _write(items)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert "volumes/v/data/d/shadow" not in tar.getnames()


def test_a_huge_sparse_file_is_skipped_not_written_out(tmp_path: Path) -> None:
    """Free for the app (a few blocks of an 8 MiB volume), a terabyte for the backup."""
    _, volume = _host_and_volume(tmp_path)
    with open(volume / "d" / "huge", "wb") as handle:
        handle.truncate(1 << 40)
    found = list(walk_tree(volume, "volumes/v/data"))
    assert not any(isinstance(i, Item) and i.name.endswith("/huge") for i in found)
    assert any(isinstance(s, str) and "d/huge: sparse file" in s for s in found)
    archive = _write([i for i in found if isinstance(i, Item)])
    assert len(archive) < 1 << 20


def _volume_archive(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """A real volume backup holding ``files`` (paths inside the volume)."""
    source = tmp_path / "backed-up"
    for rel, body in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(body)
    items = [i for i in walk_tree(source, "volumes/v/data") if isinstance(i, Item)]
    path = tmp_path / "v.tar"
    with open(path, "wb") as handle:
        writer = ArchiveWriter(handle)
        for item in items:
            writer.add(item)
        writer.finish(
            Manifest(
                created="2026-01-01T00:00:00Z",
                socle_version="test",
                store="none",
                scope="volume",
                volumes={"v": VolumeEntry("v", 1 << 20, False, False)},
            )
        )
    return path


def test_a_restore_does_not_write_through_a_folder_swapped_for_a_symlink(
    tmp_path: Path,
) -> None:
    """The app still runs while its volume is restored (`socle down --keep-apps`): once the
    restore made ``a``, the app swaps it for a link to /etc (here: a stand-in), so that the
    backup's ``a/b/ld.so.preload`` would land there, written by root."""
    archive = _volume_archive(tmp_path, {"a/b/ld.so.preload": b"/data/evil.so\n"})
    checked = verify(archive)
    host = tmp_path / "etc"
    host.mkdir()
    data = tmp_path / "restored" / "data"
    data.mkdir(parents=True)

    def destination(name: str) -> Path:
        parts = name.split("/")
        if parts[3:] == ["a", "b"]:  # the app's move, just before the restore reaches a/b
            _swap_for_link(data / "a", host)
        return data.joinpath(*parts[3:])

    with pytest.raises(BackupError):
        extract(checked, destination, chown=False)
    assert list(host.iterdir()) == []  # nothing written through the link
