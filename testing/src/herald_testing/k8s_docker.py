"""Run the dev overlay's pods under Docker, the closest thing to a kubelet here.

    python -m herald_testing.k8s_docker [--tag TAG]

No cluster runs on this machine, so this takes the rendered dev overlay and runs
what a kubelet would, container by container, from the manifests alone:

- each container's command, and its env resolved from the rendered Secret and
  ConfigMaps;
- its securityContext (``--read-only``, ``--user``, ``--cap-drop``,
  no-new-privileges), its emptyDirs as tmpfs and its ConfigMap volumes as files;
- its CPU and memory limits (``--cpus``, ``--memory``).

It runs the migration Job, then each Deployment's init containers to completion
and its main container, and polls the readiness probe, then the liveness
probe, as written in the manifest (exec, or httpGet from inside the container).

PostgreSQL, Redis and MailDev answer at the dev overlay's host names, as Docker
network aliases (``postgresql``, ``redis``, ``maildev``); the API answers at its
Service's name. Images: ``herald-*:TAG`` (build them with
``HERALD_IMAGE_TAG=TAG docker compose build api notifier scheduler``).
Everything is named ``herald-k8s-pods-*`` and removed at the end. This does not
test the Kubernetes objects themselves: scheduling, Services, NetworkPolicies,
the HPA and KEDA.
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from herald_testing.k8s_check import ROOT, documents, render
from herald_testing.signups import PASSWORD, fresh_address

__all__ = ["main"]

PREFIX = "herald-k8s-pods"
NETWORK = f"{PREFIX}-net"
PROBE_TIMEOUT_S = 90.0
BACKENDS: tuple[tuple[str, str, str, list[str]], ...] = (
    # (name, network alias, image, extra docker run arguments)
    (
        "postgres",
        "postgresql",
        "postgres:17-alpine",
        [
            "-e",
            "POSTGRES_USER=herald",
            "-e",
            "POSTGRES_DB=herald",
            "-e",
            "POSTGRES_PASSWORD=herald-dev-only",
        ],
    ),
    ("redis", "redis", "redis:7-alpine", []),
    ("maildev", "maildev", "maildev/maildev:2.2.1", []),
)

Obj = dict[str, Any]

HOSTS: dict[str, str] = {}
"""Host name -> address, written into each pod's /etc/hosts (``--add-host``) as well
as set as a network alias: Docker's embedded DNS was seen failing under load here."""


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


class Resolver:
    """Env and volumes of a container, from the rendered objects."""

    def __init__(self, objects: list[Obj], files: Path) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {}
        for obj in objects:
            if obj["kind"] == "Secret":
                values = {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
                self.data["Secret", obj["metadata"]["name"]] = values
            elif obj["kind"] == "ConfigMap":
                self.data["ConfigMap", obj["metadata"]["name"]] = dict(obj.get("data", {}))
        self.files = files

    def env(self, container: Obj) -> dict[str, str]:
        """The container's environment, as the kubelet would set it."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                if field in source:
                    env.update(self.data[kind, source[field]["name"]])
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref_source = item["valueFrom"]
            for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if field in ref_source:
                    ref = ref_source[field]
                    values = self.data[kind, ref["name"]]
                    if ref["key"] in values:
                        env[item["name"]] = values[ref["key"]]
                    elif not ref.get("optional", False):
                        raise KeyError(f"{kind} {ref['name']} has no key {ref['key']}")
        return env

    def volume_args(self, pod: Obj, container: Obj) -> list[str]:
        """tmpfs for emptyDirs, read-only bind mounts of ConfigMap files."""
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        args: list[str] = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                size = volume["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m")
                args += ["--tmpfs", f"{mount['mountPath']}:rw,nosuid,size={size}"]
            elif "configMap" in volume:
                folder = self.files / mount["name"]
                folder.mkdir(exist_ok=True)
                for key, text in self.data["ConfigMap", volume["configMap"]["name"]].items():
                    (folder / key).write_text(text)
                args += ["-v", f"{folder}:{mount['mountPath']}:ro"]
        return args


def security_args(pod: Obj, container: Obj) -> list[str]:
    """Docker's equivalents of the pod's and the container's securityContext."""
    psc, csc = pod.get("securityContext", {}), container.get("securityContext", {})
    user = csc.get("runAsUser", psc.get("runAsUser"))
    group = csc.get("runAsGroup", psc.get("runAsGroup"))
    args = ["--user", f"{user}:{group}"] if user is not None else []
    if csc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for capability in csc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", capability]
    if csc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    return args


def limit_args(container: Obj) -> list[str]:
    limits = container.get("resources", {}).get("limits", {})
    args = []
    if "cpu" in limits:
        cpu = limits["cpu"]
        args += ["--cpus", str(float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    if "memory" in limits:
        args += ["--memory", limits["memory"].replace("Mi", "m").replace("Gi", "g")]
    return args


def run_args(resolver: Resolver, pod: Obj, container: Obj, tag: str) -> list[str]:
    """``docker run`` options, image and command of one container."""
    args = ["--network", NETWORK]
    for host, address in HOSTS.items():
        args += ["--add-host", f"{host}:{address}"]
    args += security_args(pod, container) + limit_args(container)
    args += resolver.volume_args(pod, container)
    for name, value in resolver.env(container).items():
        args += ["-e", f"{name}={value}"]
    image = container["image"].split(":")[0] + f":{tag}"
    return [*args, image, *container.get("command", []), *container.get("args", [])]


def probe_command(container: Obj, probe: Obj) -> list[str]:
    """The probe as a command run inside the container."""
    if "exec" in probe:
        return list(probe["exec"]["command"])
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    get = probe["httpGet"]
    port = ports.get(get["port"], get["port"])
    url = f"http://127.0.0.1:{port}{get['path']}"
    code = (
        "import sys, urllib.request; "
        f"sys.exit(urllib.request.urlopen({url!r}, timeout=3).status != 200)"
    )
    return ["python", "-c", code]


def poll(name: str, command: list[str]) -> bool:
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while time.monotonic() < deadline:
        if docker("exec", name, *command, check=False).returncode == 0:
            return True
        if (
            docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
            != "true"
        ):
            return False
        time.sleep(2)
    return False


def address(container: str) -> str:
    """The container's address on the network."""
    template = f"{{{{(index .NetworkSettings.Networks {NETWORK!r}).IPAddress}}}}".replace("'", '"')
    return docker("inspect", "-f", template, container).stdout.strip()


@contextmanager
def backends() -> Iterator[list[str]]:
    """PostgreSQL, Redis and MailDev on a network of their own; names to remove after."""
    created: list[str] = []
    docker("network", "rm", NETWORK, check=False)
    docker("network", "create", NETWORK)
    try:
        for name, alias, image, extra in BACKENDS:
            container = f"{PREFIX}-{name}"
            docker("rm", "-f", container, check=False)
            docker(
                "run", "-d", "--name", container, "--network", NETWORK,
                "--network-alias", alias, *extra, image,
            )  # fmt: skip
            created.append(container)
            HOSTS[alias] = address(container)
        ready = ["psql", "-U", "herald", "-d", "herald", "-c", "SELECT 1"]
        if not poll(f"{PREFIX}-postgres", ready):
            raise RuntimeError("PostgreSQL did not start")
        yield created
    finally:
        for container in created:
            docker("rm", "-f", container, check=False)
        docker("network", "rm", NETWORK, check=False)


def step(name: str, ok: bool, detail: str = "") -> bool:
    print(f"k8s-docker: {name}: {'ok' if ok else 'FAILED'}{detail}", flush=True)
    return ok


def run_pods(objects: list[Obj], tag: str, created: list[str]) -> bool:
    """The Job, then each Deployment; True when every step passed."""
    services = {o["spec"]["selector"]["app.kubernetes.io/component"]: o["metadata"]["name"]
                for o in objects if o["kind"] == "Service"}  # fmt: skip
    ok = True
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-") as tmp:
        resolver = Resolver(objects, Path(tmp))
        for job in (o for o in objects if o["kind"] == "Job"):
            pod = job["spec"]["template"]["spec"]
            for container in pod["containers"]:
                one_shot = f"{PREFIX}-{container['name']}"
                created.append(one_shot)
                args = run_args(resolver, pod, container, tag)
                result = docker("run", "--rm", "--name", one_shot, *args, check=False)
                ok &= step(f"Job {job['metadata']['name']}/{container['name']} exits 0",
                           result.returncode == 0, "" if result.returncode == 0
                           else f"\n{result.stdout[-2000:]}{result.stderr[-2000:]}")  # fmt: skip
        for deployment in (o for o in objects if o["kind"] == "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            component = labels["app.kubernetes.io/component"]
            for init in pod.get("initContainers", []):
                one_shot = f"{PREFIX}-{init['name']}"
                created.append(one_shot)
                args = run_args(resolver, pod, init, tag)
                result = docker("run", "--rm", "--name", one_shot, *args, check=False)
                ok &= step(f"{deployment['metadata']['name']} init {init['name']} exits 0",
                           result.returncode == 0)  # fmt: skip
            for container in pod["containers"]:
                name = f"{PREFIX}-{component}"
                aliases = ["--network-alias", services[component]] if component in services else []
                docker("rm", "-f", name, check=False)
                docker("run", "-d", "--name", name, *aliases,
                       *run_args(resolver, pod, container, tag))  # fmt: skip
                created.append(name)
                if component in services:
                    HOSTS[services[component]] = address(name)
                for kind in ("readinessProbe", "livenessProbe"):
                    spec = container[kind]
                    probe = probe_command(container, spec)
                    what = " ".join(probe) if "exec" in spec else f"GET {spec['httpGet']['path']}"
                    passed = poll(name, probe)
                    ok &= step(f"{deployment['metadata']['name']} {kind}: {what}",
                               passed, "" if passed else "\n" + docker(
                                   "logs", "--tail", "20", name, check=False).stderr)  # fmt: skip
        ok &= end_to_end()
    return ok


SIGNUP = """
import json, sys, urllib.request
body = json.dumps({{"email": {address!r}, "password": {password!r}, "display_name": "K8s"}})
request = urllib.request.Request("http://127.0.0.1:8000/api/v1/users", body.encode(),
                                 {{"Content-Type": "application/json"}})
sys.exit(urllib.request.urlopen(request, timeout=10).status != 202)
"""
INBOX = """
import json, sys, urllib.request
emails = json.load(urllib.request.urlopen("http://maildev:1080/email", timeout=5))
sys.exit(not any(to["address"] == {address!r} for e in emails for to in e.get("to", [])))
"""


def end_to_end() -> bool:
    """A signup through the API reaches MailDev through the notifier (the site
    ConfigMap's SMTP settings), and the scheduler's cron calls the API's internal
    endpoints through the Service name with the Secret's token."""
    api = f"{PREFIX}-api"
    address = fresh_address()
    signup = ["python", "-c", SIGNUP.format(address=address, password=PASSWORD)]
    ok = step("POST /api/v1/users answers 202", docker("exec", api, *signup, check=False)
              .returncode == 0)  # fmt: skip
    ok &= step("the welcome email reaches MailDev (api -> Redis -> notifier -> SMTP)",
               poll(api, ["python", "-c", INBOX.format(address=address)]))  # fmt: skip
    deadline = time.monotonic() + 75
    reconciled = False
    while not reconciled and time.monotonic() < deadline:
        logs = docker("logs", f"{PREFIX}-scheduler", check=False)
        reconciled = "outbox.reconciled" in logs.stdout + logs.stderr
        time.sleep(3)
    return (
        step("the scheduler's outbox.reconciled (scheduler -> herald-api:8000)", reconciled) and ok
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m herald_testing.k8s_docker", description=__doc__
    )
    parser.add_argument("--tag", default="dev", help="tag of the herald-* images to run")
    parser.add_argument(
        "--k8s-dir", type=Path, default=ROOT / "deploy" / "k8s", help="the manifests to run"
    )
    args = parser.parse_args(argv)
    objects = documents(render(args.k8s_dir / "overlays" / "dev"))
    with backends() as created:
        ok = run_pods(objects, args.tag, created)
        for name in created:
            if name.startswith(f"{PREFIX}-") and not name.endswith(
                ("postgres", "redis", "maildev")
            ):
                stats = docker(
                    "stats", "--no-stream", "--format", "{{.MemUsage}}", name, check=False
                )
                if stats.stdout.strip():  # the one-shot containers are gone
                    print(f"k8s-docker: {name} memory {stats.stdout.strip()}")
    print(f"k8s-docker: {'all steps passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
