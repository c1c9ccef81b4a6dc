"""Which files of a repository are manifests, read safely.

Every ``*.yaml`` / ``*.yml`` file under the root is a manifest, in any folder layout, except:

* hidden files and folders (``.git``, ``.venv``, ``.github``, editor backups, ...);
* ``environments/`` at the root, which holds the overlays (see :mod:`socle.model.overlay`);
* what ``.socleignore`` at the root excludes: one glob per line, ``#`` comments. A pattern
  with a ``/`` is matched against the path from the root (``apps/legacy/*.yaml``,
  ``/deploy/compose.yml``); one without is matched against every file and folder name at
  any depth (``docker-compose.yml``, ``fixtures``); a trailing ``/`` only matches folders.
  ``*`` also matches ``/``. There is no ``!`` negation.

Symlinks are followed only inside the repository: one that points outside is refused,
and a symlinked folder inside is skipped (its target is read where it is). Files that are
not regular files (FIFOs, devices) are refused rather than read.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from socle.model.yamlsource import MAX_FILE_BYTES, Issue, decode

IGNORE_FILE = ".socleignore"
ENVIRONMENTS = "environments"
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class FileIssue:
    """A problem with a file as a whole (or a line of it), before any YAML is parsed."""

    file: str
    issue: Issue


@dataclass(frozen=True)
class IgnoreRules:
    patterns: tuple[tuple[str, bool, bool], ...] = ()
    """(glob, anchored to the root, folders only)."""

    @classmethod
    def read(cls, root: Path) -> tuple[IgnoreRules, list[FileIssue]]:
        path = root / IGNORE_FILE
        if not path.is_file():
            return cls(), []
        issues: list[FileIssue] = []
        patterns: list[tuple[str, bool, bool]] = []
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("!"):
                issues.append(
                    FileIssue(IGNORE_FILE, Issue(number, 1, "negation (!) is not supported"))
                )
                continue
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            patterns.append((line.lstrip("/"), anchored, dir_only))
        return cls(tuple(patterns)), issues

    def ignores(self, rel: str, is_dir: bool) -> bool:
        name = rel.rsplit("/", 1)[-1]
        for pattern, anchored, dir_only in self.patterns:
            if dir_only and not is_dir:
                continue
            if fnmatch.fnmatchcase(rel if anchored else name, pattern):
                return True
        return False


def manifest_files(
    root: Path, top: Path, rules: IgnoreRules, *, skip_environments: bool
) -> tuple[list[str], list[FileIssue]]:
    """Relative paths (posix, sorted) of the manifest files under ``top``, and refusals."""
    files: list[str] = []
    issues: list[FileIssue] = []
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        keep: list[str] = []
        for name in sorted(dirnames):
            rel = prefix + name
            if name.startswith(".") or rules.ignores(rel, True):
                continue
            if skip_environments and rel == ENVIRONMENTS:
                continue
            if (here / name).is_symlink():
                if not _inside(root, here / name):
                    issues.append(FileIssue(rel, Issue(None, None, _OUTSIDE)))
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = prefix + name
            if name.startswith(".") or not name.lower().endswith(SUFFIXES):
                continue
            if rules.ignores(rel, False):
                continue
            if (here / name).is_symlink() and not _inside(root, here / name):
                issues.append(FileIssue(rel, Issue(None, None, _OUTSIDE)))
                continue
            files.append(rel)
    return sorted(files), issues


_OUTSIDE = "symlink points outside the repository; refused (list it in .socleignore to skip it)"


def _inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root)


def read_file(root: Path, rel: str) -> tuple[str | None, Issue | None]:
    """The text of a manifest file, or why it cannot be one."""
    path = root / rel
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return None, Issue(None, None, "not a regular file; refused")
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, Issue(None, None, f"cannot read file: {exc.strerror or exc}")
    return decode(raw)
