"""The platform audit log: every platform API request and every state change, in a
hash-chained file (the line format of :mod:`socle.secrets.core.audit_chain`, reused).

Modules: :mod:`.log` (the writer, queries and verification), :mod:`.actor` (who is acting,
carried by a context variable from the API edge down to the store), :mod:`.store` (a state
store wrapper that records every write).
"""

from socle.observe.audit.actor import Actor, acting, current_actor
from socle.observe.audit.log import AuditQuery, PlatformAudit
from socle.observe.audit.store import AuditedStore

__all__ = ["Actor", "AuditQuery", "AuditedStore", "PlatformAudit", "acting", "current_actor"]
