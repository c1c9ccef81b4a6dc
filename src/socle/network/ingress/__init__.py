"""The ingress: Socle renders nginx's configuration from Routes and healthy endpoints.

:mod:`.render` (pure: routes -> ``nginx.conf``), :mod:`.nginx` (the process: start, adopt,
check, swap, reload), :mod:`.endpoints` (where healthy instances come from) and
:mod:`.service` (keeps nginx in line as routes and endpoints change).
"""

from socle.network.ingress.endpoints import (
    Endpoint,
    EndpointSource,
    RegistryEndpoints,
    RuntimeEndpoints,
)
from socle.network.ingress.nginx import IngressError, Nginx
from socle.network.ingress.render import Listen, RouteConf, Server, render
from socle.network.ingress.service import AppPorts, Extras, Ingress, default_host

__all__ = [
    "AppPorts",
    "Endpoint",
    "EndpointSource",
    "Extras",
    "Ingress",
    "IngressError",
    "Listen",
    "Nginx",
    "RegistryEndpoints",
    "RouteConf",
    "RuntimeEndpoints",
    "Server",
    "default_host",
    "render",
]
