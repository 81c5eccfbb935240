"""What deploy/k8s promises, checked on the manifests as ``kubectl kustomize`` renders them.

Each ``check_*`` function states one promise about a rendered overlay; the tests
run each on both overlays, and ``test_each_check_catches_its_break`` proves each
one fails on a copy broken the way a careless edit would break it. The probes
and the KEDA list are compared with their sources (services/Dockerfile's
HEALTHCHECK lines, herald_shared.queues), not with copies of them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from herald_api.core.settings import Settings as ApiSettings
from herald_notifier.settings import Settings as NotifierSettings
from herald_scheduler.settings import Settings as SchedulerSettings
from herald_shared.queues import NOTIFIER, queue_name
from herald_testing.k8s_check import RenderError, documents, production_copy, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SAQ_CANCELLATION_DEADLINE_S = 1
"""SAQ's ``cancellation_hard_deadline_s`` after the shutdown grace (field notes, "SAQ")."""

Objects = list[dict[str, Any]]
IMAGE_OF = {"api": "herald-api", "notifier": "herald-notifier", "scheduler": "herald-scheduler"}
GRACE_ENV = {
    "notifier": "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS",
    "scheduler": "HERALD_SCHEDULER_SHUTDOWN_GRACE_SECONDS",
}
METRICS_PORT = {
    name: settings.model_fields["metrics_port"].default
    for name, settings in (
        ("api", ApiSettings),
        ("notifier", NotifierSettings),
        ("scheduler", SchedulerSettings),
    )
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    """Both overlays, production from a copy holding its .example files."""
    with production_copy(K8S) as overlay:
        production = documents(render(overlay))
    return {"dev": documents(render(K8S / "overlays" / "dev")), "production": production}


@pytest.fixture(params=["dev", "production"])
def objects(request: pytest.FixtureRequest, rendered: dict[str, Objects]) -> Objects:
    """One overlay's objects (a copy: a test may not change another's)."""
    return copy.deepcopy(rendered[request.param])


# Reading the renders and the Dockerfile.


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_specs(objects: Objects) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment and Job."""
    for obj in objects:
        if obj["kind"] in {"Deployment", "Job"}:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def main_container(objects: Objects, service: str) -> dict[str, Any]:
    pod = find(objects, "Deployment", f"herald-{service}")["spec"]["template"]["spec"]
    matches: list[dict[str, Any]] = [c for c in pod["containers"] if c["name"] == service]
    assert len(matches) == 1, f"herald-{service} has no container {service}"
    return matches[0]


def env_value(container: dict[str, Any], name: str) -> str:
    values = [e["value"] for e in container.get("env", []) if e["name"] == name and "value" in e]
    assert values, f"{container['name']} sets no literal {name}"
    return str(values[-1])


def dockerfile_healthchecks() -> dict[str, list[str]]:
    """Each final stage's HEALTHCHECK command (the exec form's argv), by stage name."""
    text = (ROOT / "services" / "Dockerfile").read_text().replace("\\\n", " ")
    checks: dict[str, list[str]] = {}
    stage = ""
    for line in text.splitlines():
        if match := re.match(r"FROM \S+ AS (\w+)", line.strip()):
            stage = match.group(1)
        elif line.startswith("HEALTHCHECK") and " CMD " in line:
            checks[stage] = json.loads(line.split(" CMD ", 1)[1])
    return checks


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


# The promises.


def check_api_probes(objects: Objects) -> None:
    """Readiness is the image's HEALTHCHECK (GET /health/ready on the API port);
    liveness and startup ask /health/live, which depends on nothing."""
    argv = dockerfile_healthchecks()["api"]
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", " ".join(argv))
    assert match, f"no URL in the api HEALTHCHECK {argv}"
    port, path = int(match.group(1)), match.group(2)
    api = main_container(objects, "api")
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    ready = api["readinessProbe"]["httpGet"]
    assert ready["path"] == path
    assert ports.get(ready["port"], ready["port"]) == port
    for probe in ("livenessProbe", "startupProbe"):
        assert api[probe]["httpGet"]["path"] == "/health/live"
        assert ports.get(api[probe]["httpGet"]["port"]) == port


def check_worker_probes(objects: Objects) -> None:
    """Each worker's readiness and liveness run its image's HEALTHCHECK argv."""
    checks = dockerfile_healthchecks()
    for service in ("notifier", "scheduler"):
        container = main_container(objects, service)
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["exec"]["command"] == checks[service], (service, probe)


def check_keda_list(objects: Objects) -> None:
    """KEDA watches the list SAQ queues the notifier's jobs on, in the namespace the
    API pushes to and the notifier reads."""
    namespaces = {
        service: env_value(main_container(objects, service), "HERALD_QUEUE_NAMESPACE")
        for service in ("api", "notifier")
    }
    assert namespaces["api"] == namespaces["notifier"], namespaces
    assert namespaces["notifier"] == "", "the ScaledObject is written for the default namespace"
    scaled = find(objects, "ScaledObject", "herald-notifier")["spec"]
    (trigger,) = scaled["triggers"]
    queue = queue_name(NOTIFIER, namespace=namespaces["notifier"])
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == f"saq:{queue}:queued"
    assert scaled["scaleTargetRef"]["name"] == "herald-notifier"
    # Retries wait in saq:notifier:incomplete, which only a running worker moves.
    assert scaled["minReplicaCount"] >= 1


def check_termination_grace(objects: Objects) -> None:
    """The kubelet waits longer than SAQ's shutdown grace + its cancellation deadline."""
    for service, variable in GRACE_ENV.items():
        pod = find(objects, "Deployment", f"herald-{service}")["spec"]["template"]["spec"]
        grace = int(env_value(main_container(objects, service), variable))
        assert pod["terminationGracePeriodSeconds"] > grace + SAQ_CANCELLATION_DEADLINE_S, service


def check_restricted(objects: Objects) -> None:
    """Every pod: its own service account, uid/gid 10001, no token, RuntimeDefault
    seccomp; every container: read-only root, no capabilities, no escalation, an
    emptyDir on /tmp."""
    specs = list(pod_specs(objects))
    assert {name for name, _ in specs} >= {f"herald-{s}" for s in IMAGE_OF} | {"herald-migrate"}
    for name, pod in specs:
        assert pod["automountServiceAccountToken"] is False, name
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (10001, 10001, 10001)
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            csc = container["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, where
            assert csc["readOnlyRootFilesystem"] is True, where
            assert csc["capabilities"] == {"drop": ["ALL"]}, where
            assert csc["runAsNonRoot"] is True, where
            assert csc.get("runAsUser", psc["runAsUser"]) == 10001, where
            assert csc.get("seccompProfile", psc["seccompProfile"]) == {"type": "RuntimeDefault"}
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp, f"{where}: nothing mounted on /tmp"
            assert tmp[0]["name"] in empty_dirs, f"{where}: /tmp is no emptyDir"
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    for name, pod in specs:
        # One identity per workload, named after it.
        assert pod["serviceAccountName"] == name, name
        assert accounts[name]["automountServiceAccountToken"] is False, name


def check_secret_references(objects: Objects) -> None:
    """Every Secret and ConfigMap key a container or KEDA references is rendered
    (optional keys may be absent); nothing holds a secret value inline."""
    data = {
        (o["kind"], o["metadata"]["name"]): set(o.get("data", {})) | set(o.get("stringData", {}))
        for o in objects
        if o["kind"] in {"Secret", "ConfigMap"}
    }
    refs: list[tuple[str, str, str | None, bool]] = []
    for name, pod in pod_specs(objects):
        for container in containers(pod):
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if field in source:
                        ref = source[field]
                        refs.append((kind, ref["name"], ref["key"], ref.get("optional", False)))
                secretish = re.search(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|REDIS_URL", env["name"])
                assert not (secretish and "value" in env), f"{name}: {env['name']} inline"
            for source in container.get("envFrom", []):
                for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if field in source:
                        ref = source[field]
                        refs.append((kind, ref["name"], None, ref.get("optional", False)))
    for auth in (o for o in objects if o["kind"] == "TriggerAuthentication"):
        refs += [("Secret", r["name"], r["key"], False) for r in auth["spec"]["secretTargetRef"]]
    assert refs
    for kind, name, key, optional in refs:
        assert (kind, name) in data, f"{kind} {name} is referenced but not rendered"
        assert key is None or optional or key in data[kind, name], f"{kind} {name} lacks {key}"


def check_documented_secrets(objects: Objects) -> None:
    """secrets.env.example lists exactly the keys the manifests reference."""
    example = (K8S / "overlays" / "production" / "secrets.env.example").read_text()
    documented = set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    referenced = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for _, pod in pod_specs(objects)
        for container in containers(pod)
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    } | {
        ref["key"]
        for auth in objects
        if auth["kind"] == "TriggerAuthentication"
        for ref in auth["spec"]["secretTargetRef"]
    }
    assert documented == referenced, {
        "undocumented": referenced - documented,
        "unused": documented - referenced,
    }


def check_resources(objects: Objects) -> None:
    """Every container requests and limits CPU and memory, requests <= limits; the
    API hashes on no more threads than its CPU limit."""
    for name, pod in pod_specs(objects):
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            assert cpu_cores(requests["cpu"]) <= cpu_cores(limits["cpu"]), where
            assert mebibytes(requests["memory"]) <= mebibytes(limits["memory"]), where
    api = main_container(objects, "api")
    hash_workers = int(env_value(api, "HERALD_HASH_WORKERS"))
    assert 1 <= hash_workers <= cpu_cores(api["resources"]["limits"]["cpu"])


def check_images(objects: Objects) -> None:
    """Each service runs its own image, tagged by the overlay's images:."""
    for service, image in IMAGE_OF.items():
        assert re.fullmatch(
            rf"{image}(:[\w.-]+|@sha256:[0-9a-f]{{64}})", main_container(objects, service)["image"]
        ), service
    pod = find(objects, "Job", "herald-migrate")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"].startswith("herald-api:")
    assert pod["containers"][0]["command"] == ["herald-api", "migrate"]


def check_migration_ordering(objects: Objects) -> None:
    """The migration connects to PostgreSQL directly; the API pods wait for its schema."""
    job = find(objects, "Job", "herald-migrate")["spec"]["template"]["spec"]["containers"][0]
    by_name = {e["name"]: e for e in job["env"]}
    assert by_name["HERALD_MIGRATION_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == (
        "HERALD_MIGRATION_DATABASE_URL"
    )
    assert "HERALD_DATABASE_POOLER" not in by_name
    pod = find(objects, "Deployment", "herald-api")["spec"]["template"]["spec"]
    waits = pod.get("initContainers", [])
    assert [c["name"] for c in waits] == ["wait-for-schema"], "the API pods do not wait"
    wait = waits[0]
    assert wait["command"][:2] == ["herald-api", "wait-for-schema"]
    assert wait["image"] == main_container(objects, "api")["image"], (
        "it must wait for its image's head"
    )


def check_metrics(objects: Objects) -> None:
    """Prometheus's annotations name each service's metrics port (its settings' default),
    a port the container declares and the NetworkPolicy opens to Prometheus only."""
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    for service, port in METRICS_PORT.items():
        template = find(objects, "Deployment", f"herald-{service}")["spec"]["template"]
        notes = template["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert int(notes["prometheus.io/port"]) == port, service
        assert port in {p["containerPort"] for p in main_container(objects, service)["ports"]}
        rules = [
            rule
            for rule in policies[f"herald-{service}-ingress"]["ingress"]
            if any(p["port"] == port for p in rule["ports"])
        ]
        assert rules, f"{service}: the metrics port is not opened"
        for rule in rules:
            for peer in rule["from"]:
                assert peer["podSelector"]["matchLabels"] == {
                    "app.kubernetes.io/name": "prometheus"
                }


def check_scaling(objects: Objects) -> None:
    """HPA on the API's CPU, two schedulers, PDBs over the API's and the notifier's pods."""
    hpa = find(objects, "HorizontalPodAutoscaler", "herald-api")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "herald-api",
    }
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert find(objects, "Deployment", "herald-scheduler")["spec"]["replicas"] == 2
    for service in ("api", "notifier"):
        labels = find(objects, "Deployment", f"herald-{service}")["spec"]["template"]["metadata"]
        pdb = find(objects, "PodDisruptionBudget", f"herald-{service}")["spec"]
        assert pdb["selector"]["matchLabels"].items() <= labels["labels"].items(), service
        assert "replicas" not in find(objects, "Deployment", f"herald-{service}")["spec"]


CHECKS: list[Callable[[Objects], None]] = [
    check_api_probes,
    check_worker_probes,
    check_keda_list,
    check_termination_grace,
    check_restricted,
    check_secret_references,
    check_documented_secrets,
    check_resources,
    check_images,
    check_migration_ordering,
    check_metrics,
    check_scaling,
]


@pytest.mark.parametrize("promise", CHECKS, ids=lambda check: check.__name__)
def test_overlay_keeps(promise: Callable[[Objects], None], objects: Objects) -> None:
    promise(objects)


def test_production_refuses_to_render_without_its_files() -> None:
    for present, missing in ((("site.env",), "secrets.env"), (("secrets.env",), "site.env")):
        with (
            production_copy(K8S, with_files=present) as overlay,
            pytest.raises(RenderError, match=re.escape(missing)),
        ):
            render(overlay)


# Each promise fails on its break.


def _container(service: str) -> Callable[[Objects], dict[str, Any]]:
    return lambda objects: main_container(objects, service)


def _set_env(service: str, name: str, value: str) -> Callable[[Objects], None]:
    def apply(objects: Objects) -> None:
        for env in main_container(objects, service)["env"]:
            if env["name"] == name:
                env["value"] = value

    return apply


def _pod(name: str, kind: str = "Deployment") -> Callable[[Objects], dict[str, Any]]:
    return lambda objects: find(objects, kind, name)["spec"]["template"]["spec"]


BREAKS: list[tuple[Callable[[Objects], None], str, Callable[[Objects], None]]] = [
    (
        check_api_probes,
        "readiness on /health/live",
        lambda o: _container("api")(o)["readinessProbe"]["httpGet"].update(path="/health/live"),
    ),
    (
        check_api_probes,
        "liveness on /health/ready",
        lambda o: _container("api")(o)["livenessProbe"]["httpGet"].update(path="/health/ready"),
    ),
    (
        check_worker_probes,
        "notifier probes the scheduler's queue",
        lambda o: _container("notifier")(o)["livenessProbe"]["exec"].update(
            command=["saq", "herald_scheduler.worker.settings", "--check"]
        ),
    ),
    (
        check_keda_list,
        "listName without saq:",
        lambda o: find(o, "ScaledObject", "herald-notifier")["spec"]["triggers"][0][
            "metadata"
        ].update(listName="notifier:queued"),
    ),
    (check_keda_list, "a queue namespace", _set_env("notifier", "HERALD_QUEUE_NAMESPACE", "blue")),
    (
        check_keda_list,
        "scaled to zero",
        lambda o: find(o, "ScaledObject", "herald-notifier")["spec"].update(minReplicaCount=0),
    ),
    (
        check_termination_grace,
        "notifier grace 29 s",
        _set_env("notifier", "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS", "29"),
    ),
    (
        check_termination_grace,
        "scheduler killed at 3 s",
        lambda o: _pod("herald-scheduler")(o).update(terminationGracePeriodSeconds=3),
    ),
    (
        check_restricted,
        "writable root",
        lambda o: _pod("herald-api")(o)["initContainers"][0]["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
    ),
    (
        check_restricted,
        "a capability kept",
        lambda o: _pod("herald-migrate", "Job")(o)["containers"][0]["securityContext"].update(
            capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
        ),
    ),
    (
        check_restricted,
        "a token mounted",
        lambda o: _pod("herald-notifier")(o).update(automountServiceAccountToken=True),
    ),
    (
        check_restricted,
        "a shared service account",
        lambda o: _pod("herald-scheduler")(o).update(serviceAccountName="herald-api"),
    ),
    (
        check_restricted,
        "root",
        lambda o: _pod("herald-scheduler")(o)["securityContext"].update(runAsUser=0),
    ),
    (
        check_secret_references,
        "a key the Secret lacks",
        lambda o: _container("api")(o)["env"].append(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": _secret(o), "key": "NOPE"}}}
        ),
    ),
    (
        check_secret_references,
        "an inline password",
        lambda o: _container("notifier")(o)["env"].append(
            {"name": "HERALD_SMTP_PASSWORD", "value": "hunter2"}
        ),
    ),
    (
        check_secret_references,
        "KEDA's secret without its hash",
        lambda o: find(o, "TriggerAuthentication", "herald-notifier-redis")["spec"][
            "secretTargetRef"
        ][0].update(name="herald-secrets"),
    ),
    (
        check_documented_secrets,
        "an undocumented key",
        lambda o: _container("api")(o)["env"].append(
            {"name": "Y", "valueFrom": {"secretKeyRef": {"name": _secret(o), "key": "HERALD_Y"}}}
        ),
    ),
    (
        check_resources,
        "more hash threads than cores",
        _set_env("api", "HERALD_HASH_WORKERS", "3"),
    ),
    (
        check_resources,
        "no memory limit",
        lambda o: _container("scheduler")(o)["resources"]["limits"].pop("memory"),
    ),
    (
        check_images,
        "the notifier on the API's image",
        lambda o: _container("notifier")(o).update(image="herald-api:0.1.0"),
    ),
    (
        check_migration_ordering,
        "the migration through the pooler",
        lambda o: _pod("herald-migrate", "Job")(o)["containers"][0]["env"].append(
            {"name": "HERALD_DATABASE_POOLER", "value": "transaction"}
        ),
    ),
    (
        check_migration_ordering,
        "no init container",
        lambda o: _pod("herald-api")(o).update(initContainers=[]),
    ),
    (
        check_metrics,
        "metrics open to all",
        lambda o: find(o, "NetworkPolicy", "herald-notifier-ingress")["spec"]["ingress"][0].update(
            {"from": [{"podSelector": {}}]}
        ),
    ),
    (
        check_metrics,
        "scraping the API's port",
        lambda o: find(o, "Deployment", "herald-api")["spec"]["template"]["metadata"][
            "annotations"
        ].update({"prometheus.io/port": "8000"}),
    ),
    (
        check_scaling,
        "one scheduler",
        lambda o: find(o, "Deployment", "herald-scheduler")["spec"].update(replicas=1),
    ),
    (
        check_scaling,
        "a PDB selecting nothing",
        lambda o: find(o, "PodDisruptionBudget", "herald-notifier")["spec"]["selector"][
            "matchLabels"
        ].update({"app.kubernetes.io/component": "mailer"}),
    ),
]


def _secret(objects: Objects) -> str:
    (secret,) = (o["metadata"]["name"] for o in objects if o["kind"] == "Secret")
    return str(secret)


@pytest.mark.parametrize(
    ("promise", "mutate"),
    [pytest.param(check, mutate, id=f"{check.__name__}: {why}") for check, why, mutate in BREAKS],
)
def test_each_check_catches_its_break(
    promise: Callable[[Objects], None],
    mutate: Callable[[Objects], None],
    rendered: dict[str, Objects],
) -> None:
    objects = copy.deepcopy(rendered["production"])
    promise(objects)
    mutate(objects)
    with pytest.raises((AssertionError, KeyError)):
        promise(objects)


def test_every_check_has_a_break() -> None:
    assert {check for check, _, _ in BREAKS} == set(CHECKS)
