"""Fleet tooling: device profiles, deploy archives, and putting them on devices.

- ``runsettings``: the ``edgesight run`` options of a profile (``RunSettings``, ``ReviewSettings``),
  their checks and their arguments (``run_args``).
- ``settings``: the other frozen dataclasses of a device profile, a use-case preset and the two
  merged (``ResolvedProfile``), with their YAML form.
- ``profiles``: loading the YAML files strictly and merging a preset over a profile (``resolve``).
- ``render``: the systemd unit of a resolved profile.
- ``archive``: the reproducible deploy archive of ``edgesight bundle``.
- ``wheelhouse``, ``wheels``, ``wheelbuild``: the archive's ``wheelhouse/`` (every wheel the device
  installs offline, chosen for its platform and Python and cached), and edgesight's own wheel.
- ``signing``: ``bundle --sign`` (an OpenSSH signature of the manifest) and the signers a device
  trusts (``allowed_signers``, ``deploy --trust``).
- ``targets``, ``ssh``, ``deploy``: ``edgesight deploy`` over SSH (health check, rollback).
- ``stage``: ``edgesight deploy --target``, an SD card set up without a network.

The functions ``deploy.deploy`` and ``stage.stage`` are reached through their modules: binding
them here would hide the submodules of the same names, and ``edgesight.edge.fleet.deploy.NAME``
would stop resolving (``monkeypatch``, ``mock.patch``).
"""

from .archive import (
    FORMAT,
    MANIFEST,
    TOP,
    DeployPackage,
    archive_bytes,
    build_deploy_archive,
    deploy_files,
    extract_archive,
    verify_archive,
)
from .deploy import DEPLOYED, FAILED, ROLLED_BACK, HostResult, Release, format_results, read_release
from .profiles import (
    builtin_dir,
    builtin_template,
    list_presets,
    list_profiles,
    load_preset,
    load_profile,
    preset_file,
    resolve,
)
from .render import render_unit
from .runsettings import ReviewSettings, RunSettings, frame_size, run_args
from .settings import DeviceProfile, OsSettings, ResolvedProfile, ServiceSettings, UseCasePreset, dump_yaml, train_args
from .signing import NAMESPACE, SIGNATURE, sign_manifest, trusted_keys, verify_manifest
from .ssh import ssh_option_args
from .stage import StageReport, firstboot_unit, merge_boot_config
from .targets import DEFAULT_PREFIX, DEFAULT_USER, DeployConfig, HostTarget, check_prefix, parse_env, parse_host
from .wheelhouse import Wheelhouse, build_wheelhouse, edgesight_only
from .wheels import Target, target_of

__all__ = [
    # Profiles and presets
    "DeviceProfile",
    "OsSettings",
    "ResolvedProfile",
    "ReviewSettings",
    "RunSettings",
    "ServiceSettings",
    "UseCasePreset",
    "builtin_dir",
    "builtin_template",
    "list_presets",
    "list_profiles",
    "load_preset",
    "load_profile",
    "preset_file",
    "resolve",
    "frame_size",
    "run_args",
    "train_args",
    "render_unit",
    "dump_yaml",
    # Deploy archives
    "FORMAT",
    "MANIFEST",
    "TOP",
    "DeployPackage",
    "archive_bytes",
    "build_deploy_archive",
    "deploy_files",
    "extract_archive",
    "verify_archive",
    # Signed archives
    "NAMESPACE",
    "SIGNATURE",
    "sign_manifest",
    "trusted_keys",
    "verify_manifest",
    # Wheelhouses
    "Target",
    "Wheelhouse",
    "build_wheelhouse",
    "edgesight_only",
    "target_of",
    # Deploying over SSH and staging onto an SD card
    "DEFAULT_PREFIX",
    "DEFAULT_USER",
    "DEPLOYED",
    "FAILED",
    "ROLLED_BACK",
    "DeployConfig",
    "HostResult",
    "HostTarget",
    "Release",
    "StageReport",
    "check_prefix",
    "firstboot_unit",
    "format_results",
    "merge_boot_config",
    "parse_env",
    "parse_host",
    "read_release",
    "ssh_option_args",
]
