# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "checkov==3.3.30",
# ]
# ///
"""Checkov's Kubernetes policies on rendered manifests, in an environment of its own.

    uv run --locked --script deploy/k8s/checkov_scan.py RENDERED.yaml...

Checkov pins versions of pytest's and packaging's neighbours that the project's
lock cannot take, so it runs from this script's own lock (checkov_scan.py.lock,
`uv lock --script deploy/k8s/checkov_scan.py`). Offline: `--skip-download`
(no policy updates, no platform calls). Exit status: checkov's, non-zero on any
failed check. Every skipped check is in SKIPS with the reason beside it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SKIPS = {
    # Image digests: the overlays pin each release by tag in `images:`; an
    # operator who wants digests sets `digest:` there (README "Images"). The
    # rendered base cannot know a digest before the image is built.
    "CKV_K8S_43": "images pinned by tag in the overlay's images:",
    # imagePullPolicy Always: release tags are never reused, so IfNotPresent is
    # equivalent and a pod restart does not depend on the registry answering.
    "CKV_K8S_15": "release tags are immutable; IfNotPresent",
    # Secrets as files rather than env vars: every Herald service reads its
    # configuration (secrets included) from HERALD_* environment variables only.
    "CKV_K8S_35": "the services read secrets from HERALD_* env vars only",
}


def main(paths: list[str]) -> int:
    """Run checkov on ``paths``; its exit status."""
    args = ["--framework", "kubernetes", "--skip-download", "--compact", "--quiet"]
    args += ["--skip-check", ",".join(SKIPS)]
    for path in paths:
        args += ["--file", path]
    # The checkov command of this script's environment, beside its interpreter.
    checkov = Path(sys.executable).parent / "checkov"
    return subprocess.run([str(checkov), *args], check=False).returncode  # noqa: S603 (our argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
