"""One router per subsystem; :func:`socle.api.app.create_app` includes them.

A new subsystem's API is one module here with a ``router`` (an ``APIRouter`` whose paths
start with ``/api/v1``) plus one line in ``create_app``'s ``ROUTERS``.
"""
