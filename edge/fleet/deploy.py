"""Put a deploy archive on devices over SSH, with health check and rollback.

``deploy`` drives the system OpenSSH client (``ssh``) against one host or many in parallel. On
each device it:

1. streams the archive to a temporary folder and checks its sha256 there;
2. with ``--trust``, adds those keys to the device's ``allowed_signers`` (see ``signing``);
3. extracts it and runs its ``install.sh``, which checks the signature of ``MANIFEST.json`` against
   the signers the device trusts, verifies every file against the manifest, copies the release
   to ``PREFIX/releases/<id>`` and points ``PREFIX/current`` at it atomically;
4. (re)starts the service: ``systemctl`` where systemd runs, otherwise ``edgesight run`` in the
   background under ``nohup`` (see ``start`` in ``firmware_configs/remote.sh.in``);
5. polls the service's status file until it reports processed frames, newer than the restart;
6. on a failure after the switch, points ``current`` back at the previous release, restarts it
   and reports the host as rolled back; then removes releases beyond ``--keep``.

A failure before the switch leaves the device as it was, but for the ``--trust`` keys added. ``format_results`` prints the per-host
outcome as a table. Without a network, ``stage`` puts the same layout onto an SD card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import DeployError
from ..model.bundle import sha256_file
from .archive import MANIFEST, extract_archive
from .signing import ALLOW_UNSIGNED_ENV, SIGNATURE, verify_manifest
from .ssh import STEP_TIMEOUT_S, _error_line, _Remote, _StepFailed, ssh_option_args
from .targets import INSTALL_TIMEOUT_S, DeployConfig, HostTarget, _check_user, check_prefix, parse_host

log = logging.getLogger("edgesight.deploy")

PathLike = Union[str, Path]
Progress = Callable[[str, str], None]

INSTALL_DIE_PREFIX = "install.sh: error: "
INSTALL_WARNING = "install.sh: WARNING: "
UPLOAD_TIMEOUT_S = 900.0

DEPLOYED, ROLLED_BACK, FAILED = "deployed", "rolled back", "failed"


@dataclass(frozen=True)
class Release:
    """What a verified deploy archive installs.

    Attributes:
        archive: the ``.tar.gz``.
        release_id: its id on the device: the first 16 hex digits of the sha256 of ``MANIFEST.json``,
            as ``install.sh`` computes it.
        sha256: of the whole archive (checked after the upload).
        size: archive size in bytes.
        profile: the profile title (``rpi5 + traffic-sign``).
        status_file: the ``--status-file`` of its run arguments, or None.
        manifest: the ``MANIFEST.json`` bytes.
        signature: the ``MANIFEST.json.sig`` bytes, or None when the archive is unsigned.
    """

    archive: Path
    release_id: str
    sha256: str
    size: int
    profile: str
    status_file: Optional[str]
    manifest: bytes = b""
    signature: Optional[bytes] = None


@dataclass(frozen=True)
class HostResult:
    """The outcome on one host.

    Attributes:
        host: the ``--host`` value.
        release: the release deployed (or attempted).
        status: ``deployed``, ``rolled back`` (the new release failed after the switch and the
            previous one is current again) or ``failed``.
        seconds: time spent on the host.
        reason: why it is not ``deployed``, with what was done about it; empty on success.
        detail: a short note on success (frames seen, releases pruned).
    """

    host: str
    release: str
    status: str
    seconds: float
    reason: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == DEPLOYED


def read_release(archive: PathLike) -> Release:
    """Verify a deploy archive and read what it installs.

    Args:
        archive: the ``.tar.gz`` written by ``edgesight bundle``.

    Returns:
        The release id, archive hash and size, profile and status file.

    Raises:
        BundleError: the archive is unreadable, unsafe or does not match its manifest.
    """
    archive = Path(archive)
    with tempfile.TemporaryDirectory(prefix="edgesight-deploy-") as tmp:
        root = extract_archive(archive, tmp)
        manifest_bytes = (root / MANIFEST).read_bytes()
        signature = (root / SIGNATURE).read_bytes() if (root / SIGNATURE).is_file() else None
        args = (root / "run.args").read_text(encoding="utf-8").splitlines()
    manifest = json.loads(manifest_bytes)
    status_file = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--status-file"), None)
    profile = str(manifest.get("profile")) + (f" + {manifest['use_case']}" if manifest.get("use_case") else "")
    return Release(
        archive=archive,
        release_id=hashlib.sha256(manifest_bytes).hexdigest()[:16],
        sha256=sha256_file(archive),
        size=archive.stat().st_size,
        profile=profile,
        status_file=status_file,
        manifest=manifest_bytes,
        signature=signature,
    )


# --------------------------------------------------------------------------------------------
# One host


class _HostDeploy:
    """The deployment of one release to one host (upload, install, restart, health, rollback)."""

    def __init__(self, target: HostTarget, rel: Release, config: DeployConfig, ssh_args: List[str], progress: Progress) -> None:
        self.t = target
        self.rel = rel
        self.config = config
        self.remote = _Remote(target, config, ssh_args)
        self.progress = progress
        self.mode = "background"
        self.tmp = ""
        self.trusted = 0
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        self.progress(self.t.name, message)

    def result(self, status: str, reason: str = "", detail: str = "") -> HostResult:
        return HostResult(self.t.name, self.rel.release_id, status, round(time.monotonic() - self.started, 1), reason, detail)

    def run(self) -> HostResult:
        """Deploy, check, roll back on failure; every failure becomes the result's reason."""
        self.started = time.monotonic()
        try:
            return self._run()
        finally:
            self.remote.close()

    def _run(self) -> HostResult:
        try:
            self.remote.open()
            previous = self._upload()
            self._trust()
            switched, install_error = self._install(previous)
        except _StepFailed as e:
            self._finish_quietly(keep=0)
            unchanged = (f"the release is not installed (the device now trusts the {self.trusted} --trust key(s) added)"
                         if self.trusted else "the device is unchanged")
            return self.result(FAILED, f"{e}; {unchanged}")
        note = ""
        try:
            if install_error:
                reason = f"install.sh failed: {install_error}"
            else:
                healthy, note = self._start_and_check(self.rel.release_id)
                reason = "" if healthy else f"health check failed: {note}"
        except _StepFailed as e:
            reason = str(e)
        if not reason:
            return self._succeed(note)
        if not switched:
            self._finish_quietly(keep=0)
            return self.result(FAILED, f"{reason}; release {self.rel.release_id} was already current, so there is nothing to roll back to")
        return self._roll_back(previous, reason)

    def _succeed(self, note: str) -> HostResult:
        try:
            pruned = self._finish(self.config.keep, protected=())
            detail = note + (f"; removed {len(pruned)} old release(s)" if pruned else "")
        except _StepFailed as e:
            # The new release runs and passed its check: a failed clean-up does not undo that.
            detail = f"{note}; removing the upload or old releases failed: {e}"
        self.say(f"deployed release {self.rel.release_id}: {detail}")
        return self.result(DEPLOYED, detail=detail)

    def _upload(self) -> str:
        """Stream the archive to the device; returns the release ``current`` points at ('' if none)."""
        self.say(f"uploading {self.rel.archive.name} ({self.rel.size / 1e6:.1f} MB, release {self.rel.release_id}, {self.rel.profile})")
        _, reply = self.remote.call("upload", self.t.prefix, stdin=self.rel.archive, timeout=UPLOAD_TIMEOUT_S)
        self.tmp = reply.get("tmp")
        if not self.tmp.startswith("/") or "edgesight-deploy." not in self.tmp:
            raise _StepFailed(f"upload: unexpected answer from the device (temporary folder '{self.tmp}')")
        log.debug("%s: uploaded to %s", self.t.name, self.tmp)
        if reply.get("sha256") != self.rel.sha256:
            raise _StepFailed("upload: the archive arrived damaged (sha256 differs); try again")
        systemd, uid, sudo = reply.get("systemd") == "1", reply.get("uid"), reply.get("sudo") == "1"
        self.remote.privileged = uid != "0" and sudo
        # Without root (or sudo) the system unit cannot be managed: run the service ourselves.
        self.mode = "systemd" if systemd and (uid == "0" or sudo) else "background"
        return reply.get("previous")

    def _trust(self) -> None:
        """Add the ``--trust`` keys to the device's allowed_signers (before install.sh checks it)."""
        if not self.config.trust:
            return
        _, reply = self.remote.call("trust", *self.config.trust)
        self.trusted = int(reply.get("added") or 0)
        where = reply.get("signers")
        self.say(f"trusts {self.trusted} new signer(s) in {where}" if self.trusted else f"{where} already lists the --trust key(s)")

    def _install(self, previous: str) -> Tuple[bool, str]:
        """Run install.sh; returns (whether ``current`` changed, install.sh's error or '')."""
        self.say(f"installing into {self.t.prefix} (previous release: {previous or 'none'})")
        rc, reply = self.remote.call("install", self.tmp, self.t.prefix, self.rel.release_id, self.config.user or "",
                                     timeout=INSTALL_TIMEOUT_S, check=False)
        for line in reply.stderr.splitlines():
            # An install without a signature check says so loudly, on every host.
            if line.startswith(INSTALL_WARNING):
                self.say(f"WARNING: {line[len(INSTALL_WARNING):]}")
        for line in reply.output:
            # install.sh lists what it left to the user (apt packages, the camera settings...);
            # without systemd, starting the service is what deploy does next.
            if line.startswith("  - ") and not (self.mode == "background" and line.startswith("  - systemd unit")):
                self.say(f"install.sh did not do: {line[4:]}")
        current = reply.get("current")
        error = "" if rc == 0 else (_error_line(reply.stderr) or f"install.sh exited with status {rc}")
        error = error[len(INSTALL_DIE_PREFIX):] if error.startswith(INSTALL_DIE_PREFIX) else error
        if current == previous and previous != self.rel.release_id:
            raise _StepFailed(f"install.sh failed: {error}" if error else f"install.sh did not switch {self.t.prefix}/current")
        if not error and current != self.rel.release_id:
            error = f"{self.t.prefix}/current points at '{current}', not at release {self.rel.release_id}"
        return current != previous, error

    def _start_and_check(self, release: str) -> Tuple[bool, str]:
        """(Re)start the service of ``current`` and wait for processed frames.

        Returns:
            (healthy, what was seen: frames, or why not).
        """
        how = "systemctl" if self.mode == "systemd" else "a background process (no systemd)"
        self.say(f"starting release {release} with {how}")
        runtime = self.config.runtime or f"{self.t.prefix}/current/venv/bin/edgesight"
        _, reply = self.remote.call("start", self.t.prefix, self.mode, runtime)
        status_file = reply.get("status_file")
        timeout = self.config.health_timeout
        if timeout <= 0:
            return True, "health check skipped (--health-timeout 0)"
        if not status_file:
            return False, f"release {release} has no runtime.status_file to check"
        self.say(f"waiting up to {timeout:g} s for processed frames in {status_file}")
        _, reply = self.remote.call("wait", self.t.prefix, self.mode, status_file, reply.get("started") or "0", f"{timeout:g}",
                                    timeout=timeout + STEP_TIMEOUT_S)
        if reply.get("healthy"):
            return True, f"{reply.get('healthy')} frames processed"
        if not reply.get("stopped"):
            return False, f"no frames processed within {timeout:g} s"
        logged = reply.fields.get("log", [])
        # The runtime's own one-line error says more than the log lines around it.
        why = ([line for line in logged if line.startswith("error:")] or logged)[-1:]
        note = "the service stopped" + (f": {why[0].strip()}" if why else "")
        if why and "failed to run command" in why[0] and not self.config.runtime:
            note += "; the release's venv has no edgesight: let install.sh install the requirements, or pass --runtime PATH"
        return False, note

    def _roll_back(self, previous: str, reason: str) -> HostResult:
        self.say(f"{reason}; rolling back to " + (f"release {previous}" if previous else "no release (there was none before)"))
        try:
            _, reply = self.remote.call("rollback", self.t.prefix, self.mode, previous)
            if reply.get("current") != previous:
                raise _StepFailed(f"{self.t.prefix}/current points at '{reply.get('current')}' after the rollback")
            if previous:
                healthy, note = self._start_and_check(previous)
                after = f"rolled back to release {previous}" + ("" if healthy else f", which is not healthy either: {note}")
            else:
                after = f"no previous release: removed {self.t.prefix}/current and stopped the service"
        except _StepFailed as e:
            self._finish_quietly(keep=0)
            return self.result(FAILED, f"{reason}; the rollback failed too ({e}): check {self.t.prefix}/current on the device")
        try:
            # The failed release stays for a post-mortem until a later deploy prunes it.
            self._finish(self.config.keep, protected=(self.rel.release_id,))
        except _StepFailed as e:
            after += f"; removing the upload or old releases failed: {e}"
        self.say(after)
        return self.result(ROLLED_BACK, f"{reason}; {after}")

    def _finish(self, keep: int, protected: Sequence[str]) -> List[str]:
        """Remove the upload and releases beyond ``keep``; returns the releases removed."""
        _, reply = self.remote.call("finish", self.tmp, self.t.prefix, str(keep), " ".join(protected))
        self.tmp = ""
        return reply.fields.get("pruned", [])

    def _finish_quietly(self, keep: int) -> None:
        """Remove the upload after a failure; a second failure is logged, the first one reported."""
        if not self.tmp:
            return
        try:
            self._finish(keep, protected=())
        except _StepFailed as e:
            log.warning("%s: could not remove %s: %s", self.t.name, self.tmp, e)


# --------------------------------------------------------------------------------------------
# Many hosts


def deploy(archive: PathLike, hosts: Sequence[str], config: DeployConfig = DeployConfig(),
           progress: Optional[Progress] = None) -> List[HostResult]:
    """Deploy a deploy archive to hosts over SSH, in parallel, with health check and rollback.

    Everything is checked before the first connection: the archive against its manifest (and,
    with ``config.trust``, its signature against those keys), the hosts, prefix, user, SSH
    options, ``--env`` and that the release writes a status file.

    Args:
        archive: the ``.tar.gz`` written by ``edgesight bundle``.
        hosts: ``[user@]host`` or ``ssh://[user@]host[:port][/prefix]`` values.
        config: ports, key, prefix, health timeout, ...
        progress: called as ``progress(host, message)`` from worker threads.

    Returns:
        One result per host, in the order given.

    Raises:
        DeployError: an invalid host, option or prefix; no ssh client; nothing to check health with.
        BundleError: the archive is unreadable or does not match its manifest; with
            ``config.trust``, it is not signed by one of those keys.
    """
    if not hosts:
        raise DeployError("no --host given; name at least one device, e.g. --host pi@cam1.local")
    if config.keep < 0 or config.parallel < 1 or config.health_timeout < 0:
        raise DeployError("--keep and --health-timeout cannot be negative and --parallel must be at least 1")
    check_prefix(config.prefix)
    _check_user(config.user)
    targets = [parse_host(h, config.port, config.prefix) for h in hosts]
    seen: Dict[Tuple[str, int, str], str] = {}
    for t in targets:
        key = (t.destination, t.port, t.prefix)
        if key in seen:
            raise DeployError(f"--host '{t.name}' installs into the same place as '{seen[key]}'; give each one once")
        seen[key] = t.name
    if config.identity is not None and not Path(config.identity).expanduser().is_file():
        raise DeployError(f"--identity {config.identity}: no such key file")
    if config.runtime is not None and not config.runtime.startswith("/"):
        raise DeployError(f"--runtime '{config.runtime}': give the absolute path of edgesight on the device")
    ssh_args = ssh_option_args(config.ssh_options)
    if config.identity is not None:
        # IdentitiesOnly: agent keys tried first could use up the server's MaxAuthTries.
        ssh_args = ["-i", str(Path(config.identity).expanduser()), "-o", "IdentitiesOnly=yes"] + ssh_args
    if shutil.which("ssh") is None:
        raise DeployError("the OpenSSH client 'ssh' is not installed here: apt-get install openssh-client")
    rel = read_release(archive)
    if config.allow_unsigned and dict(config.env).get(ALLOW_UNSIGNED_ENV) != "1":
        config = replace(config, env=config.env + ((ALLOW_UNSIGNED_ENV, "1"),))
    if config.trust and dict(config.env).get(ALLOW_UNSIGNED_ENV) != "1":
        # Refused here, before any upload, rather than by install.sh on every device.
        verify_manifest(rel.manifest, rel.signature, "\n".join(config.trust) + "\n", str(rel.archive), "--trust")
    if config.health_timeout > 0 and not rel.status_file:
        raise DeployError(
            f"{rel.archive}: profile {rel.profile} writes no status file, so the health check cannot see frames; "
            "set runtime.status_file: status.json in the profile and bundle again, or pass --health-timeout 0"
        )
    say = progress or (lambda host, message: log.info("%s: %s", host, message))
    with ThreadPoolExecutor(max_workers=min(config.parallel, len(targets)), thread_name_prefix="deploy") as pool:
        futures = [pool.submit(_HostDeploy(t, rel, config, ssh_args, say).run) for t in targets]
        return [f.result() for f in futures]


def format_results(results: Sequence[HostResult]) -> str:
    """The per-host result table (host, release, status, seconds, reason or note), one line each."""
    rows = [("host", "release", "status", "seconds", "reason")]
    rows += [(r.host, r.release, r.status, f"{r.seconds:.1f}", r.reason or r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([cell.ljust(w) for cell, w in zip(row[:4], widths)] + [row[4]]).rstrip() for row in rows]
    return "\n".join(lines) + "\n"
