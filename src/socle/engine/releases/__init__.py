"""Releases: an app's code built once per content digest and kept for instant rollbacks.

A release id is ``"r"`` plus 16 hex digits of a sha256 over the app's workdir (paths, exec
bits, symlink texts, contents) and its ``spec.build`` steps, so the same files and steps
always give the same id and anything else gives a new one. Run command, env and replicas
are not part of it: changing them restarts instances but never rebuilds.

``_digest``  naming a tree quickly (stat-keyed caches, ignore rules, symlink rules)
``_steps``   running one build step as a killable process group
``_store``   :class:`ReleaseStore`: ensure/get/list/gc and the on-disk layout

Errors: everything a user can cause (missing workdir, escaping symlink, failing, timing out
or missing build program) is a :class:`socle.errors.BuildError` that names the app, the file
or the step, and says where the full log is.
"""

from socle.engine.releases._store import Release, ReleaseStore

__all__ = ["Release", "ReleaseStore"]
