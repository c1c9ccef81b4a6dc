"""GitOps: Git repositories as the source of truth of environments.

- :mod:`socle.gitops.git`: the real ``git`` (argv lists, credentials only in the child's
  environment), bare mirrors, clean checkouts of one commit;
- :mod:`socle.gitops.webhook`: GitHub/GitLab push verification and replay refusal;
- :mod:`socle.gitops.service`: sources, sync (poll, webhook, on demand), per-environment
  status, pins by rollback, history, diff and drift events.

The engine does the planning and applying: a sync is an apply of one commit's folder as
one source's objects in one environment (see :mod:`socle.engine.scopes`).
"""

from socle.gitops.service import GitOps, SourceStatus, SyncState

__all__ = ["GitOps", "SourceStatus", "SyncState"]
