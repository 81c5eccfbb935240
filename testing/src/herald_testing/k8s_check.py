"""``make k8s-check``: render deploy/k8s's overlays and validate them, offline.

    python -m herald_testing.k8s_check [--k8s-dir DIR] [--uv UV]

No cluster runs here, so this is what can be proved without one: both overlays
render with ``kubectl kustomize``; the production overlay refuses to render
without its git-ignored ``secrets.env`` and ``site.env`` (and renders from a
temporary copy holding the ``.example`` files); every built-in object passes
``kubernetes-validate --strict`` against the oldest Kubernetes supported and
the newest; KEDA's objects pass KEDA's own CRD models (cloudcoil-models-keda,
unknown fields forbidden), since kubernetes-validate only warns on CRDs; and
checkov's Kubernetes policies pass (deploy/k8s/checkov_scan.py, in its own
locked environment). One line per step; exit status 1 if any step failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from pydantic import BaseModel, ValidationError

__all__ = [
    "KUBERNETES_VERSIONS",
    "RenderError",
    "documents",
    "main",
    "production_copy",
    "render",
]

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
"""The oldest Kubernetes the manifests support and the newest kubernetes-validate knows.
1.31: every API version and field used is GA there (apps/v1, batch/v1 with
ttlSecondsAfterFinished, policy/v1, autoscaling/v2, networking.k8s.io/v1,
seccompProfile, startupProbe); deploy/k8s/README.md, "Kubernetes versions"."""

SITE_FILES = ("secrets.env", "site.env")
"""The production overlay's git-ignored inputs, each with a committed ``.example``."""

KEDA_MODELS: dict[str, type[BaseModel]] = {
    "ScaledObject": keda.ScaledObject,
    "TriggerAuthentication": keda.TriggerAuthentication,
}


class RenderError(Exception):
    """``kubectl kustomize`` refused an overlay; the message is its stderr."""


def render(overlay: Path) -> str:
    """The overlay rendered by ``kubectl kustomize`` (the kubectl of this environment)."""
    result = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    """The objects of a rendered multi-document YAML stream."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@contextmanager
def production_copy(k8s_dir: Path, *, with_files: tuple[str, ...] = SITE_FILES) -> Iterator[Path]:
    """A temporary copy of ``k8s_dir`` whose production overlay holds ``with_files``,
    each a copy of its ``.example`` (throwaway values); yields the copy's overlay.

    Whatever real ``secrets.env``/``site.env`` sit in the checkout are never copied.
    """
    with tempfile.TemporaryDirectory(prefix="herald-k8s-check-") as tmp:
        copy = Path(tmp) / "k8s"
        shutil.copytree(k8s_dir, copy, ignore=shutil.ignore_patterns(*SITE_FILES))
        overlay = copy / "overlays" / "production"
        for name in with_files:
            shutil.copyfile(overlay / f"{name}.example", overlay / name)
        yield overlay


def _split(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(built-in objects, KEDA objects)."""
    crds = [obj for obj in objects if str(obj.get("apiVersion", "")).startswith("keda.sh/")]
    return [obj for obj in objects if obj not in crds], crds


def kubernetes_validate(path: Path, version: str) -> str | None:
    """kubernetes-validate --strict of ``path``; None if it passed, else why not.

    It only warns on a kind it has no schema for, so any such warning fails too:
    the file holds built-in kinds only, and a typo'd kind must not pass unchecked.
    """
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or "Couldn't find schema" in output:
        return output or f"exit status {result.returncode}"
    return None


def keda_validate(objects: list[dict[str, Any]]) -> str | None:
    """Each KEDA object against its CRD model, unknown fields forbidden; None if all pass."""
    if not any(obj.get("kind") == "ScaledObject" for obj in objects):
        return "no ScaledObject rendered"
    for obj in objects:
        model = KEDA_MODELS.get(str(obj.get("kind")))
        if model is None:
            return f"no KEDA model for kind {obj.get('kind')!r}: add it to KEDA_MODELS"
        try:
            model.model_validate(obj, extra="forbid")
        except ValidationError as exc:
            return f"{obj['kind']} {obj['metadata']['name']}: {exc}"
    return None


def default_uv() -> str:
    """$UV, else the uv on PATH, else the one `make install` bootstraps into .tools."""
    return os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")


def checkov(k8s_dir: Path, paths: list[Path], uv: str) -> str | None:
    """checkov_scan.py (its own locked environment) on ``paths``; None if it passed."""
    script = k8s_dir / "checkov_scan.py"
    env = {**os.environ, "UV_SYSTEM_CERTS": os.environ.get("UV_SYSTEM_CERTS", "1")}
    result = subprocess.run(
        [uv, "run", "--quiet", "--locked", "--script", str(script), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        return (result.stdout + result.stderr).strip() or f"exit status {result.returncode}"
    return None


class Report:
    """Prints one line per step and remembers whether any failed."""

    def __init__(self) -> None:
        self.failed = 0

    def step(self, name: str, problem: str | None, detail: str = "ok") -> None:
        """One line: ``k8s-check: NAME: ok`` or ``FAILED`` with the reason indented below."""
        if problem is None:
            print(f"k8s-check: {name}: {detail}", flush=True)
            return
        self.failed += 1
        indented = "\n".join(f"    {line}" for line in problem.splitlines())
        print(f"k8s-check: {name}: FAILED\n{indented}", flush=True)


def _attempt(action: Callable[[], str]) -> tuple[str | None, str | None]:
    """(the action's output, None), or (None, why rendering failed)."""
    try:
        return action(), None
    except RenderError as exc:
        return None, str(exc)


def _refusal(overlay: Path) -> str | None:
    """Why ``overlay`` does not render, or None if it does."""
    try:
        render(overlay)
    except RenderError as exc:
        return str(exc)
    return None


def check(k8s_dir: Path, uv: str) -> int:
    """Every step on ``k8s_dir``; the number of steps that failed."""
    report = Report()
    renders: dict[str, str] = {}

    text, problem = _attempt(lambda: render(k8s_dir / "overlays" / "dev"))
    report.step("render overlays/dev", problem)
    if text is not None:
        renders["dev"] = text

    for present in ((), ("site.env",), ("secrets.env",)):
        missing = [name for name in SITE_FILES if name not in present]
        with production_copy(k8s_dir, with_files=present) as overlay:
            refusal = _refusal(overlay)
        named = refusal is not None and any(name in refusal for name in missing)
        report.step(
            f"render overlays/production without {' and '.join(missing)}",
            None if named else f"rendered, or failed without naming {missing}: {refusal}",
            "refused: ok",
        )

    with production_copy(k8s_dir) as overlay:
        text, problem = _attempt(lambda: render(overlay))
    report.step("render overlays/production (throwaway secrets.env, site.env)", problem)
    if text is not None:
        renders["production"] = text

    with tempfile.TemporaryDirectory(prefix="herald-k8s-rendered-") as tmp:
        rendered_paths: list[Path] = []
        for name, text in renders.items():
            builtin, crds = _split(documents(text))
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(text)
            rendered_paths.append(path)
            builtin_path = Path(tmp) / f"{name}-builtin.yaml"
            builtin_path.write_text(yaml.safe_dump_all(builtin))
            for version in KUBERNETES_VERSIONS:
                report.step(
                    f"kubernetes-validate --strict {name} ({len(builtin)} objects) on {version}",
                    kubernetes_validate(builtin_path, version),
                )
            report.step(
                f"KEDA CRD models (cloudcoil-models-keda) {name} ({len(crds)} objects)",
                keda_validate(crds),
            )
        if rendered_paths:
            report.step(
                f"checkov --framework kubernetes {' + '.join(renders)}",
                checkov(k8s_dir, rendered_paths, uv),
            )
    if len(renders) < 2:
        report.step("both overlays validated", "an overlay did not render (above)")
    return report.failed


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit status 0 when every step passed."""
    parser = argparse.ArgumentParser(prog="python -m herald_testing.k8s_check", description=__doc__)
    parser.add_argument(
        "--k8s-dir", type=Path, default=ROOT / "deploy" / "k8s", help="the manifests to check"
    )
    parser.add_argument("--uv", default=default_uv(), help="uv, which runs checkov's environment")
    args = parser.parse_args(argv)
    failed = check(args.k8s_dir.resolve(), args.uv)
    print(f"k8s-check: {'FAILED, ' + str(failed) + ' step(s)' if failed else 'all steps passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
