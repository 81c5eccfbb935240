"""``python -m herald_testing.k8s_check`` fails where the manifests break.

A copy of deploy/k8s gets one break per step: a field Kubernetes 1.31 does not
know, a typo in a KEDA field, a privileged container, and a production
overlay that would render without its secrets file. The real tools run
(kubectl, kubernetes-validate, the KEDA models, checkov in its locked
environment); each step's line must say FAILED, and only those steps' (the
others passing on the same copy show the break, not the tool, failed them).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from herald_testing import k8s_check

K8S = Path(k8s_check.__file__).resolve().parents[3] / "deploy" / "k8s"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets.env", "site.env"))
    base = copy / "base"
    # Pod-level resources: beta in 1.34, unknown to 1.31's schema.
    _edit(
        base / "scheduler.yaml",
        "      serviceAccountName: herald-scheduler\n",
        "      serviceAccountName: herald-scheduler\n      resources: {limits: {cpu: '1'}}\n",
    )
    _edit(base / "notifier.yaml", "  minReplicaCount: 1\n", "  minReplicaCounts: 1\n")
    _edit(
        base / "migrate.yaml",
        "            allowPrivilegeEscalation: false\n",
        "            allowPrivilegeEscalation: false\n            privileged: true\n",
    )
    _edit(
        copy / "overlays" / "production" / "kustomization.yaml",
        "    envs: [secrets.env]",
        "    literals: [HERALD_JWT_SECRET=oops]",
    )
    return copy


def test_each_step_fails_on_its_break(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = k8s_check.main(["--k8s-dir", str(broken)])
    # The object counts change with the manifests; the steps' names do not.
    out = re.sub(r" \(\d+ objects\)", "", capsys.readouterr().out)
    lines = [line for line in out.splitlines() if line.startswith("k8s-check")]
    failures = {line.removesuffix(": FAILED") for line in lines if line.endswith("FAILED")}
    assert failures == {
        "k8s-check: render overlays/production without secrets.env",
        "k8s-check: kubernetes-validate --strict dev on 1.31.0",
        "k8s-check: kubernetes-validate --strict production on 1.31.0",
        "k8s-check: KEDA CRD models (cloudcoil-models-keda) dev",
        "k8s-check: KEDA CRD models (cloudcoil-models-keda) production",
        "k8s-check: checkov --framework kubernetes dev + production",
    }
    assert status == 1
    assert lines[-1] == f"k8s-check: FAILED, {len(failures)} step(s)"
    # 1.37 knows pod-level resources: only the old version's step fails.
    assert "k8s-check: kubernetes-validate --strict dev on 1.37.0: ok" in lines
