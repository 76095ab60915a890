"""The system OpenSSH client, driven step by step against one device.

Every remote command is one fixed POSIX ``sh`` script, ``firmware_configs/remote.sh.in``, run as
``sh -c SCRIPT edgesight-deploy STEP ARGS...`` with each word ``shlex.quote``-d, so no user string
is ever parsed by the remote shell. Its steps (``upload``, ``install``, ``start``, ``wait``,
``rollback``, ``finish``) answer in ``@@edgesight key=value`` lines; everything else on stdout is
``install.sh``'s own output. ssh runs with key authentication only (``BatchMode=yes``) and checks
host keys as the user's configuration says.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import DeployError
from .archive import TOP
from .profiles import builtin_template
from .targets import DeployConfig, HostTarget

log = logging.getLogger("edgesight.deploy")

SSH_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Machine-readable lines of the remote script; everything else is install.sh's own output.
MARK = "@@edgesight "
DIE_PREFIX = "edgesight deploy: "
# ssh option values its config parser would split or cut (it also strips a '#' comment).
SSH_SPECIAL = re.compile(r"[\s\"'\\#]")
CONNECT_TIMEOUT_S = 15
STEP_TIMEOUT_S = 120.0


@functools.lru_cache(maxsize=None)
def remote_script() -> str:
    """The device-side script, with the archive's top folder (where ``install.sh`` lies) filled in."""
    return builtin_template("remote.sh.in").replace("@TOP@", TOP)


class _StepFailed(Exception):
    """A remote step failed; the message is the one-line reason for the result table."""


def ssh_option_args(options: Sequence[str]) -> List[str]:
    """``-o`` arguments for ssh from ``KEY=VALUE`` items, values quoted for ssh's own parser.

    ssh splits an option's value at blanks (``UserKnownHostsFile`` takes several files) and cuts
    it at ``#``; a value with such characters is wrapped in double quotes.

    Args:
        options: the ``--ssh-option`` values.

    Returns:
        The ssh arguments (``-o``, ``KEY=VALUE``, ...).

    Raises:
        DeployError: not ``KEY=VALUE``; ``BatchMode`` (deploy needs it on: a password prompt in
            parallel runs would hang); ``StrictHostKeyChecking=no``/``off`` (deploy checks host keys).
    """
    args: List[str] = []
    for item in options:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not SSH_KEY_RE.fullmatch(key) or not value or "\n" in value:
            raise DeployError(f"--ssh-option '{item}': expected KEY=VALUE, e.g. UserKnownHostsFile=~/.ssh/known_hosts_fleet")
        if key.lower() == "batchmode":
            raise DeployError("--ssh-option BatchMode: deploy always uses BatchMode=yes (key authentication, no prompts); remove it")
        if key.lower() == "stricthostkeychecking" and value.strip().lower() in ("no", "off", "false"):
            raise DeployError(
                "--ssh-option StrictHostKeyChecking=no: deploy keeps host-key checking on; add the device's key to a "
                "known_hosts file after checking its fingerprint (ssh-keyscan HOST) and pass UserKnownHostsFile=FILE"
            )
        args += ["-o", f"{key}={_ssh_quote(value)}"]
    return args


def _ssh_quote(value: str) -> str:
    """A value as ssh's option parser reads it back unchanged."""
    if not SSH_SPECIAL.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Reply:
    fields: Dict[str, List[str]]
    output: List[str]
    stderr: str

    def get(self, key: str) -> str:
        values = self.fields.get(key)
        return values[-1] if values else ""


def _parse_reply(stdout: str, stderr: str) -> _Reply:
    """Split the remote output into ``MARK key=value`` fields and the other (install.sh's) lines."""
    fields: Dict[str, List[str]] = {}
    output: List[str] = []
    for line in stdout.splitlines():
        if line.startswith(MARK):
            key, _, value = line[len(MARK):].partition("=")
            fields.setdefault(key, []).append(value)
        else:
            output.append(line)
    return _Reply(fields, output, stderr)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Warning: Permanently added")]
    return lines[-1] if lines else ""


def _error_line(*texts: str) -> str:
    """The last line of the first text that has one, without the remote script's own prefix."""
    why = next((line for line in map(_last_line, texts) if line), "")
    return why[len(DIE_PREFIX):] if why.startswith(DIE_PREFIX) else why


class _Remote:
    """Runs the steps of the remote script on one host with the system ssh client.

    ``open`` starts one master connection that every step reuses through a control socket: a
    deployment makes a dozen calls (more while polling the health), and a fresh handshake costs
    about a second on a Raspberry Pi.
    """

    def __init__(self, target: HostTarget, config: DeployConfig, ssh_args: List[str]) -> None:
        self.target = target
        self.config = config
        self.ssh_args = ssh_args
        self.privileged = False
        self._mux: List[str] = []
        self._dir: Optional[str] = None
        self._master: Optional[subprocess.Popen] = None

    def _base(self) -> List[str]:
        # ssh keeps the first value it gets for an option: ours that must hold come first, then the
        # user's, then defaults the user may override.
        return ["ssh", "-T", "-o", "BatchMode=yes", *self._mux, *self.ssh_args,
                "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                "-p", str(self.target.port)]

    def open(self) -> None:
        """Connect (and authenticate) once.

        Raises:
            _StepFailed: ssh could not connect or authenticate.
        """
        self._dir = tempfile.mkdtemp(prefix="edgesight-ssh-")
        sock = os.path.join(self._dir, "mux")
        # A Unix socket path has at most 107 bytes; with a longer TMPDIR every step connects anew.
        if len(sock.encode()) > 100:
            return
        errors = os.path.join(self._dir, "master.err")
        control = ["-o", "ControlPath=" + _ssh_quote(sock.replace("%", "%%"))]
        self._mux = ["-o", "ControlMaster=yes", *control]
        with open(errors, "wb") as err:
            self._master = subprocess.Popen(self._base() + ["-N", "--", self.target.destination],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        self._mux = []
        wait = CONNECT_TIMEOUT_S + 10
        deadline = time.monotonic() + wait
        while not os.path.exists(sock):
            if self._master.poll() is not None:
                with open(errors, encoding="utf-8", errors="replace") as f:
                    raise _StepFailed(self._ssh_reason(f.read()))
            if time.monotonic() > deadline:
                raise _StepFailed(f"ssh: no connection to {self.target.destination} within {wait} s; check the network")
            time.sleep(0.05)
        self._mux = ["-o", "ControlMaster=no", *control]

    def close(self) -> None:
        """End the master connection and remove its socket folder."""
        if self._master is not None:
            self._master.terminate()
            try:
                self._master.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._master.kill()
                self._master.wait()
            self._master = None
        self._mux = []
        if self._dir is not None:
            shutil.rmtree(self._dir)
            self._dir = None

    def command(self, step: str, *args: str) -> str:
        """The remote command line: every word quoted, so the login shell parses nothing of ours."""
        argv = (["sudo", "-n"] if self.privileged else []) + ["env", *(f"{k}={v}" for k, v in self.config.env)]
        argv += ["sh", "-c", remote_script(), "edgesight-deploy", step, *args]
        return " ".join(shlex.quote(a) for a in argv)

    def argv(self, step: str, *args: str) -> List[str]:
        """The local ssh command of one step (a list: no local shell is involved)."""
        return self._base() + ["--", self.target.destination, self.command(step, *args)]

    def call(self, step: str, *args: str, stdin: Optional[Path] = None, timeout: float = STEP_TIMEOUT_S,
             check: bool = True) -> Tuple[int, _Reply]:
        """Run one step.

        Returns:
            The remote exit status and the parsed output.

        Raises:
            _StepFailed: ssh could not connect or authenticate, timed out, or (with ``check``) the
                step exited non-zero; the message says why and what to do.
        """
        argv = self.argv(step, *args)
        try:
            if stdin is not None:
                with open(stdin, "rb") as f:
                    proc = subprocess.run(argv, stdin=f, capture_output=True, timeout=timeout)
            else:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise _StepFailed(f"{step}: no answer from the device within {timeout:g} s") from e
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace")
        reply = _parse_reply(stdout, stderr)
        for line in reply.output:
            log.debug("%s: %s", self.target.name, line)
        if proc.returncode == 255:
            raise _StepFailed(self._ssh_reason(stderr))
        if check and proc.returncode != 0:
            raise _StepFailed(_error_line(stderr, stdout) or f"{step} exited with status {proc.returncode}")
        return proc.returncode, reply

    def _ssh_reason(self, stderr: str) -> str:
        t = self.target
        host = t.destination.rpartition("@")[2]
        last = _last_line(stderr).rstrip(".") or "ssh failed (exit status 255)"
        if "Host key verification failed" in stderr or "IDENTIFICATION HAS CHANGED" in stderr:
            fix = (f"check the device's host key fingerprint, then add it to known_hosts (ssh-keyscan -p {t.port} {host} "
                   ">> ~/.ssh/known_hosts) or pass --ssh-option UserKnownHostsFile=FILE")
        elif "Permission denied" in stderr:
            fix = f"install your public key on the device (ssh-copy-id -p {t.port} {t.destination}) or pass --identity KEY"
        elif any(s in stderr for s in ("Could not resolve", "Connection refused", "timed out", "No route to host", "unreachable")):
            fix = "check that the device is on, reachable and runs sshd on that port"
        else:
            fix = ""
        return (last if last.startswith("ssh:") else f"ssh: {last}") + (f"; {fix}" if fix else "")
