"""Backups and restores of a Socle home, scheduled volume backups, and the start guard.

``manifest``    what an archive holds and which entries are safe (pure)
``archive``     writing, verifying and extracting tar archives (blocking)
``statestore``  SQLite online backup, pg_dump / pg_restore
``operations``  create / verify / restore a home, back up one volume
``schedule``    the scheduled volume backups component (``start``/``stop``)
``guard``       refuse a control-plane start on an empty store while apps still run

Errors: :class:`~socle.errors.BackupError` (bad archive, naming the first bad entry; or a
backup that cannot be made), :class:`~socle.errors.ConfigError` (refused restore target,
unsafe start).
"""
