"""The ``App`` kind: a long-running workload with replicas, health and rolling updates.

These classes are the contract between the manifest loader, the planner and the runtime.
They are pydantic models with ``extra="forbid"`` so that a misspelt field is an error,
not a silently ignored line. Field names are camelCase on the wire (like Kubernetes) and
snake_case in Python.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from socle.units import Cpu, Duration, Size

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
PORT_NAME_RE = re.compile(r"^[a-z]([a-z0-9_]{0,30})$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY_RE = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
SECRET_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*#[A-Za-z0-9_.-]+$")
DEPENDENCY_RE = re.compile(r"^([A-Z][A-Za-z0-9]{0,62}/)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
"""A ``dependsOn`` entry: ``NAME`` (an App) or ``KIND/NAME`` (``Volume/data``)."""
SYSTEM_FOLDERS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin",
    "/sys", "/usr", "/scratch",
)  # fmt: skip
"""Where a volume may not be mounted: the sandbox's own view of the system lives there
(``/scratch`` is each instance's scratch space and ``HOME``)."""
# Patterns are always applied with ``fullmatch``: ``$`` alone also matches before a
# trailing newline, so ``re.match`` would let "api\n" through as a name.

CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters (NUL, escape, newline, ...): never in names or paths."""
CONTROLS_BUT_SPACE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""The same, allowing tab, newline and carriage return (multi-line values, PEM blocks)."""

MAX_PORTS = 64
"""Ports per app: each one is a listening socket and a line in every status."""
MIN_PROBE_INTERVAL = 0.1
"""Health probes at most 10 times a second per instance (exec probes fork each time)."""
MIN_PROBE_TIMEOUT = 0.01


def _shown(char: str) -> str:
    return repr(char)[1:-1]


def no_controls(value: str) -> str:
    """Refuse control characters (for names, label values, paths, env names)."""
    if found := CONTROLS.search(value):
        raise ValueError(f"control character {_shown(found.group())!r} is not allowed here")
    return value


def text_value(value: str) -> str:
    """Refuse NUL and terminal escapes; tabs and newlines are fine (env values, arguments)."""
    if found := CONTROLS_BUT_SPACE.search(value):
        what = (
            "a NUL byte"
            if found.group() == "\x00"
            else f"control character {_shown(found.group())!r}"
        )
        raise ValueError(f"{what} is not allowed in a command argument or environment value")
    return value


def plain_env_name(value: str) -> str:
    if not ENV_NAME_RE.fullmatch(value):
        raise ValueError(f"invalid environment variable name {value!r}")
    return value


BuildEnvName = Annotated[str, AfterValidator(plain_env_name)]
TextValue = Annotated[str, AfterValidator(text_value)]


class FieldError(ValueError):
    """A validation error about a field *below* the object being validated.

    Model validators can only fail for the whole object; ``at`` (YAML key names and list
    indices, relative to that object) lets the manifest loader point at the right line.
    """

    def __init__(self, at: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.at = at


SELECTOR_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^{}\[\]]*\})?")
"""One PromQL metric selector: a name and optional matchers, no function or range."""


class Spec(BaseModel):
    """Base for manifest sections: strict, camelCase aliases, frozen."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=False,
    )


Argv = Annotated[
    list[Annotated[str, Field(min_length=1), AfterValidator(text_value)]], Field(min_length=1)
]
"""A command as an argument list; never a shell string."""


class Metadata(Spec):
    name: str = Field(json_schema_extra={"pattern": NAME_RE.pattern, "maxLength": 63})
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(
                f"invalid name {value!r}: use 1-63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not LABEL_KEY_RE.fullmatch(key):
                raise ValueError(f"invalid label key {key!r}")
            if len(val) > 63:
                raise ValueError(f"label {key!r}: value longer than 63 characters")
            if CONTROLS.search(val):
                raise ValueError(f"label {key!r}: control characters are not allowed in values")
        return value


class RunSpec(Spec):
    command: Argv
    """Argument list; a relative program path (``.venv/bin/python``) is taken from workdir."""
    workdir: str = "."
    """Folder of the manifest repository the app is built and run from."""

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        parts = value.replace("\\", "/").split("/")
        if value.startswith("/") or ".." in parts or CONTROLS.search(value):
            raise ValueError(
                f"workdir {value!r} must be a relative path inside the manifest repository"
            )
        return value


class BuildStep(Spec):
    command: Argv
    env: dict[BuildEnvName, TextValue] = Field(default_factory=dict)
    timeout: Duration = 600.0


class SecretRef(Spec):
    """An env value read from the secrets engine at deploy time: ``{secret: "PATH#KEY"}``."""

    secret: str

    @field_validator("secret")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not SECRET_REF_RE.fullmatch(value) or ".." in value.split("#")[0].split("/"):
            raise ValueError(
                f"invalid secret reference {value!r}: use 'MOUNT/PATH#KEY', "
                "e.g. 'secret/data/db#password'"
            )
        return value

    @property
    def path(self) -> str:
        return self.secret.split("#", 1)[0]

    @property
    def key(self) -> str:
        return self.secret.split("#", 1)[1]


def _env_scalar(value: object) -> object:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(
        f"env values must be strings, numbers or {{secret: 'PATH#KEY'}}, not {_kind_of(value)}"
    )


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false (quote it)"
    return "a list" if isinstance(value, list) else type(value).__name__


def _env_name(value: str) -> str:
    plain_env_name(value)
    if value == "PORT" or value.startswith("PORT_"):
        raise ValueError(f"{value} is set by the runtime from spec.ports")
    return value


def _env_branch(value: object) -> str:
    return "secret" if isinstance(value, dict | SecretRef) else "text"


EnvName = Annotated[str, AfterValidator(_env_name)]
EnvValue = Annotated[
    Annotated[
        str,
        BeforeValidator(_env_scalar),
        AfterValidator(text_value),
        Tag("text"),
        WithJsonSchema({"type": ["string", "number"]}),
    ]
    | Annotated[SecretRef, Tag("secret")],
    Discriminator(_env_branch),
]
"""A plain value (numbers become strings), or a secret reference.

The discriminator tries only the branch that fits the value's shape, so an error names
what is wrong with that value rather than listing every branch.
"""


class PortSpec(Spec):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PORT_NAME_RE.fullmatch(value):
            raise ValueError(
                f"invalid port name {value!r}: lowercase letter then letters, digits, '_'"
            )
        return value


class HttpCheck(Spec):
    path: str = "/"
    port: str
    """Name of one of ``spec.ports``."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or " " in value or CONTROLS.search(value):
            raise ValueError(f"http check path {value!r} must start with '/' and have no spaces")
        return value


class TcpCheck(Spec):
    port: str


class ExecCheck(Spec):
    command: Argv


class HealthSpec(Spec):
    http: HttpCheck | None = None
    tcp: TcpCheck | None = None
    exec: ExecCheck | None = None
    interval: Duration = 2.0
    timeout: Duration = 1.0
    success_threshold: int = Field(default=1, ge=1, le=100)
    failure_threshold: int = Field(default=3, ge=1, le=100)
    start_grace: Duration = 0.0
    """Failures during this time after start do not count."""

    @model_validator(mode="after")
    def _one_probe(self) -> HealthSpec:
        probes = [p for p in (self.http, self.tcp, self.exec) if p is not None]
        if len(probes) != 1:
            raise ValueError("health needs exactly one of http, tcp or exec")
        if self.interval < MIN_PROBE_INTERVAL:
            raise FieldError(
                ("interval",),
                f"health interval must be at least {MIN_PROBE_INTERVAL * 1000:g}ms "
                "(probes run at most 10 times a second)",
            )
        if "timeout" not in self.model_fields_set and self.timeout > self.interval:
            object.__setattr__(self, "timeout", self.interval)  # the default fits the interval
        if self.timeout < MIN_PROBE_TIMEOUT:
            raise FieldError(
                ("timeout",), f"health timeout must be at least {MIN_PROBE_TIMEOUT * 1000:g}ms"
            )
        if self.timeout > self.interval:
            raise FieldError(
                ("timeout",),
                "health timeout cannot be longer than the interval between probes",
            )
        return self

    @property
    def port_name(self) -> str | None:
        probe = self.http or self.tcp
        return probe.port if probe else None


class ReleaseCheck(Spec):
    """Counters that say how a release is doing (selectors: Socle adds ``app``, ``release``
    and the rate window)."""

    total: str = Field(min_length=1, max_length=1024)
    errors: str = Field(min_length=1, max_length=1024)
    factor: float = Field(default=2.0, ge=1.0, le=1000)
    """The new release is bad when its error ratio is more than ``factor`` times the
    previous release's..."""
    min_ratio: float = Field(default=0.05, gt=0, le=1)
    """... and at least this ratio (so 0.1 % against 0 % rolls nothing back)."""
    window: Duration = Field(default=120.0, ge=10, le=3600)

    @field_validator("total", "errors")
    @classmethod
    def _selector(cls, value: str) -> str:
        if CONTROLS.search(value) or "[" in value or not SELECTOR_RE.fullmatch(value.strip()):
            raise ValueError(
                f"{value!r} must be one metric selector, e.g. "
                'http_requests_total{code=~"5.."} (Socle adds the labels and the window)'
            )
        return value.strip()


class AutoscaleTarget(Spec):
    """One of: ``cpu`` (percent of each instance's CPU limit, or of one core without a
    limit), ``rps`` (requests per second per instance, from ``http_requests_total``), or
    ``query`` + ``value`` (PromQL whose result, divided by ``value``, is the count)."""

    cpu: str | float | None = None
    rps: float | None = Field(default=None, gt=0, le=1e9)
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    value: float | None = Field(default=None, gt=0, le=1e12)

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str | float | None) -> str | float | None:
        if value is None:
            return None
        number = float(str(value).strip().removesuffix("%")) if str(value).strip() else 0.0
        if not 0 < number <= 1000:
            raise ValueError("cpu must be a percentage such as 70%")
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None and CONTROLS.search(value.replace("\n", " ")):
            raise ValueError("query holds control characters")
        return value

    @model_validator(mode="after")
    def _one(self) -> AutoscaleTarget:
        given = [k for k in ("cpu", "rps", "query") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("autoscale target needs exactly one of cpu, rps or query")
        if (self.query is None) != (self.value is None):
            raise ValueError("autoscale target: query and value go together")
        return self

    def cpu_fraction(self) -> float | None:
        return None if self.cpu is None else float(str(self.cpu).strip().removesuffix("%")) / 100


class Stabilization(Spec):
    up: Duration = Field(default=0.0, ge=0, le=3600)
    """Scale out to the highest count recommended over this window (0: at once)."""
    down: Duration = Field(default=300.0, ge=0, le=3600)
    """Scale in only to the highest count recommended over this window, so a dip in load
    does not remove instances that the next minute needs again."""


class AutoscaleSpec(Spec):
    min: int = Field(default=1, ge=1, le=1000)
    max: int = Field(ge=1, le=1000)
    target: AutoscaleTarget
    stabilization: Stabilization = Field(default_factory=Stabilization)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleSpec:
        if self.min > self.max:
            raise ValueError(f"autoscale min ({self.min}) is above max ({self.max})")
        return self


class MetricsSpec(Spec):
    """Where an app serves its own Prometheus metrics (opt-in to be scraped).

    Not part of the instance template: adding or changing it restarts nothing, it only
    changes the targets Socle hands to Prometheus (``http_sd``).
    """

    port: str
    """Name of one of ``spec.ports``."""
    path: str = "/metrics"
    release_check: ReleaseCheck | None = None
    """Early detection: roll a new release back when its error ratio departs from the
    previous release's (see :mod:`socle.observe.alerts.releases`)."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or " " in value or CONTROLS.search(value):
            raise ValueError(f"metrics path {value!r} must start with '/' and have no spaces")
        return value


class ResourcesSpec(Spec):
    memory: Size | None = None
    cpu: Cpu | None = None


class UpdateSpec(Spec):
    strategy: Literal["rolling", "recreate"] = "rolling"
    max_surge: int = Field(default=1, ge=0, le=1000)
    max_unavailable: int = Field(default=0, ge=0, le=1000)
    min_healthy_seconds: Duration = 0.0
    progress_deadline_seconds: Duration = 120.0
    auto_rollback: bool = True

    @model_validator(mode="after")
    def _progress_possible(self) -> UpdateSpec:
        if self.strategy == "rolling" and self.max_surge == 0 and self.max_unavailable == 0:
            raise FieldError(
                ("maxSurge",),
                "maxSurge and maxUnavailable cannot both be 0: the update could not progress",
            )
        return self


RestartPolicy = Literal["always", "on-failure", "never"]


class VolumeMount(Spec):
    """``{name: data, mountPath: /data, readOnly: false}``: a Volume shown inside instances."""

    name: str
    """``metadata.name`` of a Volume in the same manifests."""
    mount_path: str
    read_only: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return Metadata._name(value)

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, value: str) -> str:
        if not value.startswith("/") or "\x00" in value:
            raise ValueError(f"mountPath {value!r} must be an absolute path such as /data")
        normal = posixpath.normpath(value)
        if normal.startswith("//"):
            normal = "/" + normal.lstrip("/")
        if normal != value:
            raise ValueError(f"mountPath {value!r} is not normalised: write {normal!r}")
        if value == "/":
            raise ValueError("mountPath cannot be / (it would hide the whole system)")
        for folder in SYSTEM_FOLDERS:
            if value == folder or value.startswith(folder + "/"):
                raise ValueError(f"mountPath {value!r} is under the system folder {folder}")
        return value


TEMPLATE_SIGNALS = ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGTERM", "SIGQUIT", "SIGWINCH")
"""Signals ``onChange: signal`` may send (what servers use to reload their config)."""
MAX_TEMPLATES = 32


def _relative_path(value: str, what: str) -> str:
    """A plain relative path: no absolute path, no ``..``, no empty or ``.`` parts."""
    parts = value.split("/")
    if (
        not value
        or value.startswith("/")
        or "\\" in value
        or CONTROLS.search(value)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ValueError(
            f"{what} {value!r} must be a plain relative path (no leading '/', no '..', "
            "no '.' or empty parts), e.g. 'conf/app.conf'"
        )
    return value


class TemplateSpec(Spec):
    """``{source: conf/app.tmpl, destination: app.conf, onChange: restart}``: a file
    rendered from the registry, the Consul KV and secrets, shown read-only to the app at
    ``/run/socle/templates/<destination>`` (``$SOCLE_TEMPLATES_DIR``)."""

    source: str
    """Template file, relative to the app's folder (``run.workdir``) in its release."""
    destination: str
    """File name (relative path) under the templates folder."""
    on_change: Literal["restart", "signal"] = "restart"
    """What to do when the rendered file changes: roll the instances one at a time
    (health-gated), or send ``signal`` to each instance's process."""
    signal: str = "SIGHUP"

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return _relative_path(value, "template source")

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        return _relative_path(value, "template destination")

    @field_validator("signal")
    @classmethod
    def _signal(cls, value: str) -> str:
        if value not in TEMPLATE_SIGNALS:
            raise ValueError(f"signal {value!r} is not one of {', '.join(TEMPLATE_SIGNALS)}")
        return value


class AppSpec(Spec):
    replicas: int = Field(default=1, ge=0, le=1000)
    run: RunSpec
    build: list[BuildStep] = Field(default_factory=list)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    ports: list[PortSpec] = Field(default_factory=list, max_length=MAX_PORTS)
    health: HealthSpec | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    restart: RestartPolicy = "always"
    stop_grace: Duration = 10.0
    """Time between SIGTERM and SIGKILL when stopping an instance."""
    update: UpdateSpec = Field(default_factory=UpdateSpec)
    depends_on: list[str] = Field(default_factory=list)
    volumes: list[VolumeMount] = Field(default_factory=list)
    """Volumes mounted into every instance; each implies a dependency on that Volume."""
    metrics: MetricsSpec | None = None
    """Opt in to be scraped by Prometheus: ``{port: http, path: /metrics}``."""
    templates: list[TemplateSpec] = Field(default_factory=list, max_length=MAX_TEMPLATES)
    """Files rendered from the registry, the KV store and secrets (runtime configuration)."""
    autoscale: AutoscaleSpec | None = None
    """``{min, max, target: {cpu: 70%} | {rps: 100} | {query: PROMQL, value: N}}``: the
    instance count follows the load within bounds (``replicas`` is the count until the
    autoscaler's first decision)."""

    @field_validator("depends_on")
    @classmethod
    def _dependency_names(cls, value: list[str]) -> list[str]:
        for index, dep in enumerate(value):
            if not DEPENDENCY_RE.fullmatch(dep):
                raise FieldError(
                    (index,),
                    f"invalid dependsOn entry {dep!r}: use an app name ('api') or "
                    "KIND/NAME ('Volume/data')",
                )
        return value

    @model_validator(mode="after")
    def _mounts(self) -> AppSpec:
        for index, mount in enumerate(self.volumes):
            for other in self.volumes[:index]:
                if other.mount_path == mount.mount_path:
                    raise FieldError(
                        ("volumes", index, "mountPath"),
                        f"mountPath {mount.mount_path!r} is used twice in this app",
                    )
                inner, outer = sorted((mount.mount_path, other.mount_path), key=len)[::-1]
                if inner.startswith(outer + "/"):
                    # The runtime would have to make the inner mount point inside the outer
                    # volume, whose symlinks the app writes.
                    raise FieldError(
                        ("volumes", index, "mountPath"),
                        f"mountPath {inner!r} lies inside the volume mounted at {outer!r}: "
                        "mount each volume at a folder of its own, side by side",
                    )
                if other.name == mount.name:
                    raise FieldError(
                        ("volumes", index, "name"), f"volume {mount.name!r} is mounted twice"
                    )
        return self

    @model_validator(mode="after")
    def _refs(self) -> AppSpec:
        names = [p.name for p in self.ports]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise FieldError(("ports", index, "name"), f"duplicate port name {name!r}")
        if self.health and self.health.port_name and self.health.port_name not in names:
            probe = "http" if self.health.http else "tcp"
            raise FieldError(
                ("health", probe, "port"),
                f"health check uses port {self.health.port_name!r} which is not in spec.ports "
                f"({', '.join(names) or 'none declared'})",
            )
        if self.metrics is not None and self.metrics.port not in names:
            raise FieldError(
                ("metrics", "port"),
                f"metrics uses port {self.metrics.port!r} which is not in spec.ports "
                f"({', '.join(names) or 'none declared'})",
            )
        destinations = [t.destination for t in self.templates]
        for index, dest in enumerate(destinations):
            clash = next(
                (
                    o
                    for o in destinations[:index]
                    if o == dest or dest.startswith(o + "/") or o.startswith(dest + "/")
                ),
                None,
            )
            if clash is not None:
                raise FieldError(
                    ("templates", index, "destination"),
                    f"template destination {dest!r} clashes with {clash!r} "
                    "(each destination is one file of its own)",
                )
        deps = self.depends_on
        for index, dep in enumerate(deps):
            if dep in deps[:index]:
                raise FieldError(("dependsOn", index), f"dependsOn lists {dep!r} twice")
        return self


class App(Spec):
    api_version: Literal["socle/v1"]
    kind: Literal["App"]
    metadata: Metadata
    spec: AppSpec

    @property
    def name(self) -> str:
        return self.metadata.name


def app_references(app: App) -> list[Any]:
    """What an App needs before it starts: ``dependsOn`` entries, and each mounted Volume.

    Returns :class:`socle.model.kinds.Reference` values (imported here to keep this module
    free of the registry).
    """
    from socle.model.kinds import Reference, parse_reference

    found: list[Any] = []
    for index, dep in enumerate(app.spec.depends_on):
        kind, name = parse_reference(dep)
        found.append(Reference(("spec", "dependsOn", index), kind, name))
    for index, mount in enumerate(app.spec.volumes):
        found.append(Reference(("spec", "volumes", index, "name"), "Volume", mount.name, "volumes"))
    return found
