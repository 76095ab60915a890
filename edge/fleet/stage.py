"""Stage a deploy archive onto a mounted SD card, without a network.

``stage`` writes the layout that ``install.sh`` would leave (``PREFIX/releases/<id>``,
``PREFIX/current``, the enabled unit, udev rules) into a mounted root filesystem, plus a one-shot
first-boot unit that runs ``install.sh`` on the device, where the venv can be built. With the boot
partition it also adds the profile's camera settings to ``config.txt``. With ``--trust`` it pins
signing keys in the card's ``allowed_signers``; the archive's signature is checked against the
keys the card will trust, as the first-boot ``install.sh`` will check it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from ..errors import DeployError
from ..fsutil import inside_root, replace_dir, replace_link, write_text
from .archive import MANIFEST, TOP, extract_archive
from .signing import ALLOW_UNSIGNED_ENV, DEFAULT_SIGNERS, SIGNATURE, SIGNERS_ENV, check_signature, has_signers, merge_signers
from .targets import DEFAULT_PREFIX, DEFAULT_USER, INSTALL_TIMEOUT_S, _check_user, check_prefix

PathLike = Union[str, Path]

UNIT = "edgesight.service"
FIRSTBOOT_UNIT = "edgesight-firstboot.service"
BOOT_BEGIN = "# >>> edgesight"
BOOT_END = "# <<< edgesight <<<"


@dataclass(frozen=True)
class StageReport:
    """What ``stage`` wrote.

    Attributes:
        release: the release id.
        prefix_dir: ``TARGET/<prefix>`` on the host.
        written: files and links written, in order.
        boot_lines: settings written to ``config.txt`` (empty when it was already complete or no --boot).
        signer: who signed the archive, when a key the card trusts was checked; '' otherwise.
        trusted: ``--trust`` keys added to the card's allowed_signers.
        warnings: what the card's device will not check, one sentence each.
    """

    release: str
    prefix_dir: Path
    written: Tuple[Path, ...]
    boot_lines: Tuple[str, ...]
    signer: str = ""
    trusted: int = 0
    warnings: Tuple[str, ...] = ()


def _systemd_env(key: str, value: str) -> str:
    """One ``Environment=`` assignment, quoted for systemd (which expands % specifiers)."""
    text = f"{key}={value}".replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'Environment="{text}"'


def firstboot_unit(release: str, prefix: str, user: str, env: Sequence[Tuple[str, str]] = ()) -> str:
    """The one-shot unit that runs a staged release's ``install.sh`` on the device's first boot.

    It may need the network (missing apt packages, a slim archive's requirements), runs before
    ``edgesight.service`` and, once install.sh succeeds, removes the staged installer and disables
    itself; after a failure (no network yet) it runs again at the next boot.

    Args:
        release: the release id (named in the unit's description).
        prefix: install prefix on the device (checked by ``check_prefix``: safe in a unit file).
        user: the service user for ``install.sh --user``.
        env: ``(KEY, VALUE)`` pairs for the installer's environment.

    Returns:
        The unit file's text.
    """
    installer = f"{prefix}/firstboot/{TOP}/install.sh"
    lines = [
        f"# Written by `edgesight deploy --target` for release {release}: installs it on the first boot.",
        "[Unit]",
        f"Description=edgesight first-boot installation of release {release}",
        "Wants=network-online.target",
        "After=network-online.target",
        f"Before={UNIT}",
        f"ConditionPathExists={installer}",
        "",
        "[Service]",
        "Type=oneshot",
        *(_systemd_env(k, v) for k, v in env),
        f"ExecStart=/bin/sh {installer} --prefix {prefix} --user {user}",
        f"ExecStartPost=/bin/rm -rf {prefix}/firstboot",
        f"ExecStartPost=/bin/systemctl disable {FIRSTBOOT_UNIT}",
        f"TimeoutStartSec={int(INSTALL_TIMEOUT_S)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def merge_boot_config(existing: str, fragment: str, title: str) -> Tuple[str, List[str]]:
    """Add a boot-config fragment's settings that ``existing`` lacks, between marker comments.

    An earlier edgesight block is replaced, so running it again changes nothing. Comment lines
    of the fragment are left out; the block starts with ``[all]`` so a preceding ``[pi4]``-style
    section filter does not swallow it.

    Args:
        existing: the text of ``config.txt``.
        fragment: the profile's ``config.txt.fragment``.
        title: the profile named in the marker.

    Returns:
        (the new text, the settings added).
    """
    kept: List[str] = []
    inside = had_block = False
    for line in existing.splitlines():
        if line.startswith(BOOT_BEGIN):
            inside = had_block = True
        elif inside and line.strip() == BOOT_END:
            inside = False
        elif not inside:
            kept.append(line)
    present = {line.strip() for line in kept}
    wanted = [s.strip() for s in fragment.splitlines() if s.strip() and not s.strip().startswith("#")]
    missing = [s for s in dict.fromkeys(wanted) if s not in present]
    if not missing and not had_block:
        return existing, []
    text = "\n".join(kept).rstrip("\n") + "\n"
    if missing:
        block = [f"{BOOT_BEGIN} ({title}): camera settings added by edgesight deploy >>>", "[all]", *missing, BOOT_END]
        text += "\n" + "\n".join(block) + "\n"
    return text, missing


def _link(link: Path, target: str) -> Path:
    """Point ``link`` at ``target`` atomically (a new link, uniquely named, renamed over the old one)."""
    return replace_link(link, target)


def _write_config(path: Path, text: str) -> Path:
    """Write a system configuration file atomically, readable by all like the files beside it (0644)."""
    return write_text(path, text)


def _contained(root: Path, path: Path, replaced: bool = False) -> Path:
    """``path``, checked to stay inside ``root`` however the links on the way resolve.

    ``replaced``: ``path`` itself is renamed over (a file or link we write), so only the folders
    leading to it matter; a link in its place is replaced, not followed.
    """
    try:
        inside_root(root, path.parent if replaced else path)
    except ValueError as e:
        raise DeployError(f"{e}: refusing to write through it; make it a real folder on the card, "
                          "or choose another --prefix") from None
    return path


def _card_signers(path: Path) -> str:
    """The allowed_signers text already on the card ('' when there is none)."""
    if not os.path.lexists(path):
        return ""
    if path.is_symlink() or not path.is_file():
        raise DeployError(f"{path} is a link or not a file, which the device's install.sh refuses; make it a real file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DeployError(f"{path}: cannot read it ({e}); fix or remove it, then pin keys again with --trust") from e


def stage(archive: PathLike, root: PathLike, prefix: str = DEFAULT_PREFIX, user: Optional[str] = None,
          boot: Optional[PathLike] = None, env: Sequence[Tuple[str, str]] = (), trust: Sequence[str] = (),
          allow_unsigned: bool = False) -> StageReport:
    """Stage a deploy archive onto a mounted root filesystem (an SD card), without a network.

    Writes ``ROOT/<prefix>/releases/<id>`` (files only: a venv cannot be built for another
    architecture here), the relative ``ROOT/<prefix>/current`` link, the rendered unit in
    ``ROOT/etc/systemd/system`` enabled for ``multi-user.target``, udev rules in
    ``ROOT/etc/udev/rules.d``, the unmodified archive contents in ``ROOT/<prefix>/firstboot`` and
    the enabled ``edgesight-firstboot.service`` that installs them on the first boot. With
    ``boot``, the profile's ``config.txt.fragment`` settings go into ``BOOT/config.txt``.

    Every path is resolved inside ``root`` (``boot``) before anything is written: a link on the
    way whose target leaves it (``ROOT/opt -> /opt`` on a crafted card) is refused, naming the
    link, so nothing lands on this machine's own folders.

    Args:
        archive: the ``.tar.gz``; it is verified before anything is written.
        root: the mounted root partition.
        prefix: install prefix on the device.
        user: service user (default ``edgesight``, created on the first boot).
        boot: the mounted boot partition, or None.
        env: ``(KEY, VALUE)`` pairs for the first-boot installer (``PIP_INDEX_URL``...).
        trust: allowed_signers lines (``signing.trusted_keys``) to add to the card's
            ``allowed_signers`` (``EDGESIGHT_ALLOWED_SIGNERS`` in ``env`` names another path).
        allow_unsigned: check no signature, here or on the first boot (development only).

    Returns:
        The release id, what was written, who signed and what is not checked.

    Raises:
        DeployError: ``root`` or ``boot`` does not look like the partition named, a link in it
            leads outside, or an invalid prefix or user (root included).
        BundleError: the archive is unreadable or does not match its manifest, or the card trusts
            a signer and the archive is not signed by one.
    """
    prefix = check_prefix(prefix)
    _check_user(user)
    user = user or DEFAULT_USER
    root = Path(root)
    if not (root / "etc").is_dir():
        raise DeployError(f"--target {root}: no etc/ folder, so not a root filesystem; give the mounted root partition (rootfs)")
    boot_config = Path(boot) / "config.txt" if boot is not None else None
    if boot_config is not None and not boot_config.is_file():
        raise DeployError(f"--boot {boot}: no config.txt; give the mounted boot partition (bootfs)")
    signers_path = dict(env).get(SIGNERS_ENV, DEFAULT_SIGNERS)
    if not signers_path.startswith("/") or ".." in signers_path.split("/"):
        raise DeployError(f"--env {SIGNERS_ENV}={signers_path}: give an absolute path on the device, e.g. {DEFAULT_SIGNERS}")
    if allow_unsigned and dict(env).get(ALLOW_UNSIGNED_ENV) != "1":
        env = tuple(env) + ((ALLOW_UNSIGNED_ENV, "1"),)
    # --env EDGESIGHT_ALLOW_UNSIGNED=1 tells the first boot the same: nothing is checked here either.
    allow_unsigned = dict(env).get(ALLOW_UNSIGNED_ENV) == "1"
    with tempfile.TemporaryDirectory(prefix="edgesight-stage-") as tmp:
        src = extract_archive(archive, tmp)
        manifest_bytes = (src / MANIFEST).read_bytes()
        release = hashlib.sha256(manifest_bytes).hexdigest()[:16]
        manifest = json.loads(manifest_bytes)
        title = str(manifest.get("profile")) + (f" + {manifest['use_case']}" if manifest.get("use_case") else "")
        unit = (src / UNIT).read_text(encoding="utf-8")
        unit = unit.replace("@PREFIX@", prefix).replace("@USER@", user).replace("@RELEASE@", release)
        base = root / prefix.lstrip("/")
        written: List[Path] = []
        boot_lines: List[str] = []

        systemd_dir = root / "etc" / "systemd" / "system"
        wants = systemd_dir / "multi-user.target.wants"
        target = base / "releases" / release
        first = base / "firstboot"
        rules = {root / "etc" / "udev" / "rules.d" / r.name: r for r in sorted(src.glob("*.rules"))}
        signers_file = root / signers_path.lstrip("/")
        # Every place written is checked before the first write, and again as it is written.
        for path in (target, first / TOP, systemd_dir, wants, signers_file.parent, *rules):
            _contained(root, path)
        for path in (base / "current", systemd_dir / UNIT, systemd_dir / FIRSTBOOT_UNIT, wants / UNIT, wants / FIRSTBOOT_UNIT,
                     signers_file):
            _contained(root, path, replaced=True)
        if boot_config is not None:
            _contained(Path(boot), boot_config)

        # The signers the device will trust, and the signature checked against them as install.sh
        # will check it on the first boot: a card that would refuse the archive gets nothing.
        on_card = _card_signers(signers_file)
        signers, trusted = merge_signers(on_card, trust)
        signed = {MANIFEST: manifest_bytes}
        if (src / SIGNATURE).is_file():
            signed[SIGNATURE] = (src / SIGNATURE).read_bytes()
        source = f"{signers_file}" + (" with --trust" if trusted else "") if has_signers(on_card) else "--trust"
        signer = check_signature(str(archive), signed, signers, source, allow_unsigned)
        warnings: List[str] = []
        if not has_signers(signers):
            warnings.append(f"the device trusts no signer yet ({signers_file} lists none), so it installs ANY archive; "
                            "pin your release key: --trust ~/.ssh/edgesight-release.pub")
        elif allow_unsigned:
            warnings.append(f"--allow-unsigned: the first boot installs WITHOUT checking the signature against {signers_path}; "
                            "for development only")

        if not (_contained(root, target) / MANIFEST).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{release}.partial-", dir=target.parent))
            try:
                staging.chmod(0o755)
                shutil.copytree(src / "model", staging / "model")
                # The release keeps its signature, so install.sh can check it again as shipped.
                for name in ("profile.yaml", "run.args", "requirements.txt", *signed):
                    shutil.copyfile(src / name, staging / name)
                write_text(staging / UNIT, unit)
                # The release exists complete or not at all, as install.sh leaves it.
                replace_dir(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        written.append(target)
        # The first-boot installer verifies these files against MANIFEST.json, so they stay as shipped.
        _contained(root, first).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{TOP}.partial-", dir=first))
        try:
            staging.chmod(0o755)
            shutil.copytree(src, staging, dirs_exist_ok=True)
            written.append(replace_dir(staging, _contained(root, first / TOP)))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        written.append(_link(_contained(root, base / "current", replaced=True), f"releases/{release}"))

        written.append(_write_config(_contained(root, systemd_dir / UNIT, replaced=True), unit))
        written.append(_link(_contained(root, wants / UNIT, replaced=True), f"/etc/systemd/system/{UNIT}"))
        firstboot = firstboot_unit(release, prefix, user, env)
        written.append(_write_config(_contained(root, systemd_dir / FIRSTBOOT_UNIT, replaced=True), firstboot))
        written.append(_link(_contained(root, wants / FIRSTBOOT_UNIT, replaced=True), f"/etc/systemd/system/{FIRSTBOOT_UNIT}"))
        for dest, rules_file in rules.items():
            written.append(_write_config(_contained(root, dest, replaced=True), rules_file.read_text(encoding="utf-8")))
        if trusted:
            folder = _contained(root, signers_file.parent)
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
            written.append(_write_config(_contained(root, signers_file, replaced=True), signers))
            if os.geteuid() != 0:
                # The first-boot install.sh, as root, refuses a trust file another user could edit.
                warnings.append(f"{signers_file} belongs to you, not root: the device refuses it until "
                                f"sudo chown -R root:root {folder}")

        fragment = src / "config.txt.fragment"
        if boot_config is not None and fragment.is_file():
            old = _contained(Path(boot), boot_config).read_text(encoding="utf-8")
            new, added = merge_boot_config(old, fragment.read_text(encoding="utf-8"), title)
            if new != old:
                boot_lines = added
                written.append(write_text(boot_config, new))
    return StageReport(release=release, prefix_dir=base, written=tuple(written), boot_lines=tuple(boot_lines),
                       signer=signer, trusted=trusted, warnings=tuple(warnings))
