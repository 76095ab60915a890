"""The wheelhouse of the deploy tests' device, built once per session from the wheel cache.

The device is this machine (``arch: any``) with generic-linux's pinned requirements, whose wheels
``scripts/test.sh`` fetches into the cache (``edgesight wheels fetch generic-linux``) before the
tests run; the tests themselves take them from the cache only and never reach a package index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from edgesight.edge.errors import DeployError
from edgesight.edge.fleet.profiles import load_profile, resolve
from edgesight.edge.fleet.settings import ResolvedProfile
from edgesight.edge.fleet.wheelhouse import Wheelhouse, build_wheelhouse


@dataclass(frozen=True)
class DeviceWheels:
    profile: Path
    resolved: ResolvedProfile
    wheelhouse: Wheelhouse


def wheel_profile(path: Path, source: str = "synthetic:64x48@10") -> Path:
    """A profile for this machine with generic-linux's pinned requirements, no groups or apt packages."""
    data = {
        "name": "wheelbox",
        "description": "the wheelhouse tests' device",
        "runtime": {"source": source, "threads": 1, "headless": True, "quiet": True, "stats_interval": 0.5,
                    "status_file": "status.json"},
        "os": {"requirements": list(load_profile("generic-linux").os.requirements)},
        "service": {"groups": []},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def device_wheels(tmp_path_factory) -> DeviceWheels:
    """The complete wheelhouse of ``wheel_profile``, from the cache alone."""
    profile = wheel_profile(tmp_path_factory.mktemp("wheelbox") / "wheelbox.yaml")
    resolved = resolve(load_profile(profile))
    try:
        wheelhouse = build_wheelhouse(resolved, offline=True)
    except DeployError as e:
        why = f"the wheel cache lacks this machine's wheels ({e}); run scripts/test.sh or: edgesight wheels fetch generic-linux"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return DeviceWheels(profile=profile, resolved=resolved, wheelhouse=wheelhouse)
