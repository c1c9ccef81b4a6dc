"""The local runtime driver (embedded default): real processes, shims, sandbox, health.

Public surface: :class:`LocalDriver`, :class:`BackoffPolicy` (to tune restarts) and
:func:`read_logs` (an instance's stored output, also after it was stopped).
"""

from socle.runtime.local.backoff import BackoffPolicy
from socle.runtime.local.driver import LocalDriver
from socle.runtime.local.logs import read_logs

__all__ = ["BackoffPolicy", "LocalDriver", "read_logs"]
