"""The NetworkPolicy kind: loading, and bad policies located at file, line and field."""

from __future__ import annotations

import pytest

from socle.model.loader import load
from socle.model.networkpolicy import NetworkPolicy, describe
from tests.unit.model._repo import Files
from tests.unit.model.conftest import Problems, WriteRepo

APP = (
    "apiVersion: socle/v1\nkind: App\nmetadata: {name: NAME, labels: {tier: web}}\n"
    "spec:\n  run: {command: [python3, -m, http.server]}\n  ports: [{name: http}]\n"
)


def app(name: str) -> str:
    return APP.replace("NAME", name)


def policy(name: str, spec: str) -> str:
    return f"apiVersion: socle/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}"


GOOD = (
    "  app: api\n"
    "  environment: prod\n"
    "  ingress:\n"
    "  - from: [{app: web}, {labels: {tier: web}}, {environment: dev}, {cidr: 10.1.0.0/16}]\n"
    "    ports: [http]\n"
    "  - from: [{app: web, environment: prod}]\n"
)
HOST = "  host: true\n  ingress:\n  - from: [{cidr: 192.168.1.0/24}, {cidr: 'fd00::/8'}]\n    ports: [22, 7780]\n"


def test_a_policy_and_a_host_policy_load(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            "a.yaml": app("api") + "---\n" + app("web"),
            "p.yaml": policy("api-in", GOOD) + "---\n" + policy("admin", HOST),
        }
    )
    loaded = load(root)
    api_in = loaded.objects[("NetworkPolicy", "api-in")]
    assert isinstance(api_in, NetworkPolicy)
    assert api_in.spec.app == "api" and api_in.spec.environment == "prod"
    rule = api_in.spec.ingress[0]
    assert rule.ports == ["http"] and rule.protocol == "tcp"
    assert rule.from_ is not None and rule.from_[3].cidr == "10.1.0.0/16"
    assert describe(api_in.spec) == [
        "allow tcp ports http to app api in prod from app web, labels tier=web, "
        "environment dev, cidr 10.1.0.0/16",
        "allow every port to app api in prod from app web environment prod",
        "deny other ingress to app api in prod",
    ]
    admin = loaded.objects[("NetworkPolicy", "admin")]
    assert isinstance(admin, NetworkPolicy) and admin.spec.host
    assert describe(admin.spec)[-1] == "deny other sources to this machine's ports 22, 7780"


def test_an_empty_ingress_denies_everything(write_repo: WriteRepo) -> None:
    loaded = load(
        write_repo({"a.yaml": app("db"), "p.yaml": policy("db", "  app: db\n  ingress: []\n")})
    )
    obj = loaded.objects[("NetworkPolicy", "db")]
    assert isinstance(obj, NetworkPolicy)
    assert describe(obj.spec) == ["deny other ingress to app db"]


def repo(spec: str) -> Files:
    return {"a.yaml": app("api") + "---\n" + app("web"), "p.yaml": policy("p", spec)}


CASES: list[tuple[str, Files, list[tuple[str, int, str, str]]]] = [
    (
        "selects nothing",
        repo("  ingress: []\n"),
        [("p.yaml", 5, "spec", "exactly one of app, labels or host: true")],
    ),
    (
        "app and labels",
        repo("  app: api\n  labels: {tier: web}\n  ingress: []\n"),
        [("p.yaml", 5, "spec", "exactly one of app, labels or host: true")],
    ),
    (
        "unknown app",
        repo("  app: apj\n  ingress: []\n"),
        [("p.yaml", 6, "spec.app", "'apj', which is not an App in these manifests")],
    ),
    (
        "unknown peer app",
        repo("  app: api\n  ingress:\n  - from: [{app: wbe}]\n"),
        [("p.yaml", 8, "spec.ingress[0].from[0].app", "'wbe', which is not an App")],
    ),
    (
        "cidr with host bits",
        repo("  app: api\n  ingress:\n  - from: [{cidr: 10.0.0.1/8}]\n"),
        [("p.yaml", 8, "spec.ingress[0].from[0].cidr", "has host bits set")],
    ),
    (
        "cidr that is not one",
        repo("  app: api\n  ingress:\n  - from: [{cidr: '10.0.0.0/8; flush ruleset'}]\n"),
        [("p.yaml", 8, "spec.ingress[0].from[0].cidr", "invalid cidr")],
    ),
    (
        "peer mixing cidr and app",
        repo("  app: api\n  ingress:\n  - from: [{cidr: 10.0.0.0/8, app: web}]\n"),
        [("p.yaml", 8, "spec.ingress[0].from[0]", "either a cidr or apps")],
    ),
    (
        "empty peer",
        repo("  app: api\n  ingress:\n  - from: [{}]\n"),
        [("p.yaml", 8, "spec.ingress[0].from[0]", "needs one of app, labels")],
    ),
    (
        "empty from",
        repo("  app: api\n  ingress:\n  - from: []\n"),
        [("p.yaml", 8, "spec.ingress[0].from", "allows nothing")],
    ),
    (
        "numbered app port",
        repo("  app: api\n  ingress:\n  - ports: [http, 8080]\n"),
        [("p.yaml", 8, "spec.ingress[0].ports[1]", "app ports are named")],
    ),
    (
        "hostile port name",
        repo("  app: api\n  ingress:\n  - ports: ['http }; flush ruleset']\n"),
        [("p.yaml", 8, "spec.ingress[0].ports[0]", "invalid port name")],
    ),
    (
        "hostile label key",
        repo('  labels: {"a\\"; flush": x}\n  ingress: []\n'),
        [("p.yaml", 6, "spec.labels", "invalid label key")],
    ),
    (
        "host policy with a named port",
        repo("  host: true\n  ingress:\n  - from: [{cidr: 10.0.0.0/8}]\n    ports: [ssh]\n"),
        [("p.yaml", 9, "spec.ingress[0].ports[0]", "host policy ports are numbers")],
    ),
    (
        "host policy without ports",
        repo("  host: true\n  ingress:\n  - from: [{cidr: 10.0.0.0/8}]\n"),
        [("p.yaml", 8, "spec.ingress[0]", "needs ports")],
    ),
    (
        "host policy with an app",
        repo("  host: true\n  app: api\n  ingress: []\n"),
        [("p.yaml", 7, "spec.app", "takes no app")],
    ),
    (
        "port out of range",
        repo("  host: true\n  ingress:\n  - ports: [70000]\n"),
        [("p.yaml", 8, "spec.ingress[0].ports[0]", "not between 1 and 65535")],
    ),
    (
        "unknown protocol",
        repo("  app: api\n  ingress:\n  - protocol: icmp\n"),
        [("p.yaml", 8, "spec.ingress[0].protocol", "'tcp' or 'udp'")],
    ),
    (
        "unknown field",
        repo("  app: api\n  egress: []\n  ingress: []\n"),
        [("p.yaml", 7, "spec.egress", "unknown field 'egress'")],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_policies_are_located(
    problems: Problems, files: Files, expected: list[tuple[str, int, str, str]]
) -> None:
    found = problems(files)
    assert [(p.file, p.line, p.path) for p in found] == [e[:3] for e in expected], found
    for problem, (*_, reason) in zip(found, expected, strict=True):
        assert reason in problem.reason, problem
