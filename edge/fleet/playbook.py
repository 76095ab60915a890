"""``edgesight fleet ansible``: an Ansible playbook that rolls a deploy archive out to a fleet.

A plant that already runs Ansible keeps its inventories, vaulted secrets, batches and failure
limits; edgesight writes a playbook that drives the same device-side steps as ``edgesight
deploy`` (the archive's own ``install.sh``, the release layout, the health check, the
rollback), with Ansible's modules doing the connecting and copying. It needs ``ansible-core``
on the machine that runs the play, never on a device.

The folder it writes::

    site.yml                       the play: --hosts, serial batches, max_fail_percentage
    ansible.cfg                    inventory = INV (so `cd DIR && ansible-playbook site.yml` works)
    roles/edgesight_release/
        defaults/main.yml          release, sha256, prefix, user, keep, health timeout, env, trust
        tasks/main.yml             probe, upload, trust, install.sh, start, health; rescue: rollback
        filter_plugins/edgesight.py  reads the device script's answers
        files/remote.sh, files/ARCHIVE
    results/                       HOST.json per host after each run: deployed, rolled back, failed

Variables in ``defaults/main.yml`` have Ansible's lowest precedence: an inventory's host or
group variables override them (a prefix per device, ``edgesight_env`` from a vault...).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import yaml

from ..errors import DeployError
from ..fsutil import replace_dir, unique_sibling, write_text
from .deploy import Release, read_release
from .profiles import builtin_template
from .signing import ALLOW_UNSIGNED_ENV, verify_manifest
from .ssh import remote_script
from .targets import DEFAULT_PREFIX, _check_user, check_prefix

PathLike = Union[str, Path]
ROLE = "edgesight_release"
SERIAL_RE = re.compile(r"[1-9][0-9]*%?")
INVENTORY_TIMEOUT_S = 60


@dataclass(frozen=True)
class PlaybookConfig:
    """The options of ``edgesight fleet ansible``.

    Attributes:
        hosts: the Ansible host pattern the play targets.
        serial: batch sizes, a number of hosts or ``N%`` each; the last repeats (``("1", "25%")``:
            one canary host, then a quarter of the fleet at a time).
        max_fail_percentage: the play stops before the next batch once more than this share of
            a batch failed (0: at the first failure).
        prefix, user, keep, health_timeout, runtime, env, trust, allow_unsigned: as for
            ``edgesight deploy`` (:class:`~edgesight.edge.fleet.targets.DeployConfig`).
    """

    hosts: str = "all"
    serial: Tuple[str, ...] = ("1", "25%")
    max_fail_percentage: int = 0
    prefix: str = DEFAULT_PREFIX
    user: Optional[str] = None
    keep: int = 3
    health_timeout: float = 60.0
    runtime: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()
    trust: Tuple[str, ...] = ()
    allow_unsigned: bool = False


@dataclass(frozen=True)
class PlaybookReport:
    """What :func:`write_playbook` wrote.

    Attributes:
        out: the folder.
        release: the archive's release.
        signer: who signed the archive (checked against ``trust``), or None when not checked.
        hosts: hosts the inventory lists (None when ``ansible-inventory`` is not installed here).
    """

    out: Path
    release: Release
    signer: Optional[str]
    hosts: Optional[int]

    @property
    def command(self) -> str:
        return f"cd {self.out} && ansible-playbook site.yml"


def _check(config: PlaybookConfig) -> None:
    if not config.serial or not all(SERIAL_RE.fullmatch(s) and (not s.endswith("%") or int(s[:-1]) <= 100) for s in config.serial):
        raise DeployError(f"--serial {' '.join(config.serial) or '(none)'}: give batch sizes as a number of hosts or a percentage "
                          "of 1-100%, e.g. --serial 1 --serial 25%")
    if not 0 <= config.max_fail_percentage <= 100:
        raise DeployError(f"--max-fail-percentage {config.max_fail_percentage}: give 0-100")
    if not config.hosts.strip() or "\n" in config.hosts:
        raise DeployError("--hosts: give an Ansible host pattern on one line, e.g. all or cameras:&line1")
    if config.keep < 0 or config.health_timeout < 0:
        raise DeployError("--keep and --health-timeout cannot be negative")
    check_prefix(config.prefix)
    _check_user(config.user)
    if config.runtime is not None and not config.runtime.startswith("/"):
        raise DeployError(f"--runtime '{config.runtime}': give the absolute path of edgesight on the device")


def count_hosts(inventory: Path, pattern: str) -> Optional[int]:
    """Hosts of ``inventory`` that ``pattern`` selects, read with ``ansible-inventory``; None when
    ansible-core is not installed here.

    Raises:
        DeployError: ansible-inventory cannot read the inventory.
    """
    # ansible-core installed beside edgesight (the fleet extra), else on the PATH.
    exe = shutil.which("ansible-inventory", path=str(Path(sys.executable).parent)) or shutil.which("ansible-inventory")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-i", str(inventory), "--list", "--limit", pattern], capture_output=True, text=True,
                              timeout=INVENTORY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DeployError(f"{inventory}: ansible-inventory did not read it within {INVENTORY_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        raise DeployError(f"{inventory}: ansible-inventory cannot read it ({lines[-1] if lines else 'exit status %d' % proc.returncode})")
    try:
        return len(json.loads(proc.stdout).get("_meta", {}).get("hostvars", {}))
    except ValueError:
        return None


def _defaults(rel: Release, config: PlaybookConfig) -> str:
    env = dict(config.env)
    if config.allow_unsigned:
        env[ALLOW_UNSIGNED_ENV] = "1"
    values = {
        "edgesight_release": rel.release_id,
        "edgesight_archive": rel.archive.name,
        "edgesight_sha256": rel.sha256,
        "edgesight_prefix": config.prefix,
        "edgesight_user": config.user or "",
        "edgesight_keep": config.keep,
        "edgesight_health_timeout": config.health_timeout,
        "edgesight_runtime": config.runtime or "",
        "edgesight_env": env,
        "edgesight_trust": list(config.trust),
        "edgesight_no_log": True,
    }
    head = (f"# Release {rel.release_id} ({rel.profile}) of {rel.archive.name}, written by `edgesight fleet ansible`.\n"
            "# Inventory host and group variables override these. edgesight_env is the environment of the\n"
            "# device-side steps and install.sh (EDGESIGHT_PYTHON, EDGESIGHT_SKIP_APT, PIP_INDEX_URL...); keep\n"
            "# secrets in it vaulted (ansible-vault). edgesight_no_log hides the steps' output and environment\n"
            "# from Ansible's output and logs; set it false to see install.sh's lines with -v.\n")
    return head + yaml.safe_dump(values, sort_keys=False)


def _site(rel: Release, config: PlaybookConfig) -> str:
    serial = [int(s) if s.isdigit() else s for s in config.serial]
    play = [{
        "name": f"Roll out edgesight release {rel.release_id} ({rel.profile})",
        "hosts": config.hosts,
        "serial": serial if len(serial) > 1 else serial[0],
        "max_fail_percentage": config.max_fail_percentage,
        "gather_facts": False,
        "roles": [ROLE],
    }]
    head = ("# Written by `edgesight fleet ansible`. Run: ansible-playbook -i INVENTORY site.yml\n"
            "# Hosts go in batches (serial); once more than max_fail_percentage of a batch failed, the next\n"
            "# batches are not started. A host whose new release fails is rolled back to its previous one.\n")
    return head + yaml.safe_dump(play, sort_keys=False)


def write_playbook(archive: PathLike, inventory: PathLike, out: PathLike, config: PlaybookConfig = PlaybookConfig(),
                   overwrite: bool = False) -> PlaybookReport:
    """Write the playbook folder that rolls ``archive`` out to the hosts of ``inventory``.

    Everything is checked first: the options, the archive against its manifest, its signature
    (against ``config.trust`` when given; an unsigned archive needs ``allow_unsigned``), that
    the release writes a status file for the health check, and the inventory.

    Returns:
        What was written and checked.

    Raises:
        DeployError: a bad option, an unsigned archive, no status file, an unreadable inventory,
            or ``out`` exists (without ``overwrite``).
        BundleError: the archive is unreadable, does not match its manifest, or no ``trust`` key
            signed it.
    """
    _check(config)
    archive, inventory, out = Path(archive), Path(inventory), Path(out)
    if not inventory.is_file():
        raise DeployError(f"--inventory {inventory}: no such file; give an Ansible inventory (INI or YAML) of the devices")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DeployError(f"{out}: already exists; choose another --out or pass --overwrite")
    rel = read_release(archive)
    signer = None
    if rel.signature is None and not config.allow_unsigned:
        raise DeployError(f"{archive}: not signed; bundle it with --sign KEY (and give the devices that key with --trust KEY.pub), "
                          "or pass --allow-unsigned for development")
    if config.trust and not config.allow_unsigned:
        signer = verify_manifest(rel.manifest, rel.signature, "\n".join(config.trust) + "\n", str(archive), "--trust")
    if config.health_timeout > 0 and not rel.status_file:
        raise DeployError(f"{archive}: profile {rel.profile} writes no status file, so the health check cannot see frames; "
                          "set runtime.status_file: status.json in the profile and bundle again, or pass --health-timeout 0")
    hosts = count_hosts(inventory, config.hosts)
    if hosts == 0:
        raise DeployError(f"{inventory}: no host matches --hosts {config.hosts}")

    staging = unique_sibling(out, "partial")
    role = staging / "roles" / ROLE
    try:
        for folder in ("defaults", "tasks", "filter_plugins", "files"):
            (role / folder).mkdir(parents=True)
        (staging / "results").mkdir()
        write_text(staging / "site.yml", _site(rel, config))
        write_text(staging / "ansible.cfg", "[defaults]\n"
                   f"inventory = {inventory.resolve()}\nretry_files_enabled = False\ninterpreter_python = auto_silent\n")
        write_text(role / "defaults" / "main.yml", _defaults(rel, config))
        write_text(role / "tasks" / "main.yml", builtin_template("ansible_tasks.yml.in"))
        write_text(role / "filter_plugins" / "edgesight.py", builtin_template("ansible_filters.py.in"))
        write_text(role / "files" / "remote.sh", remote_script())
        shutil.copyfile(archive, role / "files" / archive.name)
        (role / "files" / archive.name).chmod(0o644)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PlaybookReport(out, rel, signer, hosts)
