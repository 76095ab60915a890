"""Put a deploy archive on devices: over SSH with health check and rollback, or onto an SD card.

``deploy`` drives the system OpenSSH client (key authentication, ``BatchMode=yes``, host keys
checked as the user's configuration says) against one host or many in parallel. On each device it:

1. streams the archive to a temporary folder and checks its sha256 there;
2. extracts it and runs its ``install.sh``, which verifies every file against ``MANIFEST.json``,
   copies the release to ``PREFIX/releases/<id>`` and points ``PREFIX/current`` at it atomically;
3. (re)starts the service: ``systemctl`` where systemd runs, otherwise ``edgesight run`` in the
   background under ``nohup`` (see ``start`` in ``REMOTE_SCRIPT``);
4. polls the service's status file until it reports processed frames, newer than the restart;
5. on a failure after the switch, points ``current`` back at the previous release, restarts it
   and reports the host as rolled back; then removes releases beyond ``--keep``.

A failure before the switch leaves the device as it was. Every remote command is one fixed
POSIX ``sh`` script (``REMOTE_SCRIPT``) whose inputs travel as ``shlex.quote``-d positional
arguments, so no user string is ever parsed by the remote shell.

``stage`` writes the same layout into a mounted root filesystem (an SD card) without a network,
plus a one-shot first-boot unit that runs ``install.sh`` on the device, where the venv can be built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

from ..model.bundle import sha256_file
from .archive import MANIFEST, TOP, extract_archive
from ..errors import DeployError
from ..fsutil import replace_dir, write_text

log = logging.getLogger("edgesight.deploy")

PathLike = Union[str, Path]
Progress = Callable[[str, str], None]

DEFAULT_PREFIX = "/opt/edgesight"
DEFAULT_USER = "edgesight"
UNIT = "edgesight.service"
FIRSTBOOT_UNIT = "edgesight-firstboot.service"
# install.sh writes the prefix and user into the unit with sed and refuses anything else.
PREFIX_RE = re.compile(r"/[A-Za-z0-9._/+-]*")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]*")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SSH_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Machine-readable lines of the remote script; everything else is install.sh's own output.
MARK = "@@edgesight "
DIE_PREFIX = "edgesight deploy: "
INSTALL_DIE_PREFIX = "install.sh: error: "
# ssh option values its config parser would split or cut (it also strips a '#' comment).
SSH_SPECIAL = re.compile(r"[\s\"'\\#]")
CONNECT_TIMEOUT_S = 15
STEP_TIMEOUT_S = 120.0
UPLOAD_TIMEOUT_S = 900.0
# pip may build wheels on a Raspberry Pi Zero: give the installer time.
INSTALL_TIMEOUT_S = 3600.0
BOOT_BEGIN = "# >>> edgesight"
BOOT_END = "# <<< edgesight <<<"

DEPLOYED, ROLLED_BACK, FAILED = "deployed", "rolled back", "failed"


# --------------------------------------------------------------------------------------------
# The device side: one fixed script, run as `sh -c SCRIPT edgesight-deploy STEP ARGS...`.

REMOTE_SCRIPT = r"""
set -eu
PY=${EDGESIGHT_PYTHON:-python3}
MARK='@@edgesight '
emit() { printf '%s%s=%s\n' "$MARK" "$1" "$2"; }
die() { printf 'edgesight deploy: %s\n' "$*" >&2; exit 1; }
now() { "$PY" -c 'import time; print("%.3f" % time.time())'; }

release_of() {
    # The release PREFIX/current points at (its last path part), or nothing.
    if [ -L "$1/current" ]; then basename "$(readlink "$1/current")"; fi
}

point_current() {
    # Like install.sh: a new link renamed over the old one, so 'current' is never missing.
    "$PY" - "$1" "$2" <<'PYEOF'
import os, sys
link = os.path.join(sys.argv[1], "current")
if sys.argv[2]:
    tmp = link + ".new"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink("releases/" + sys.argv[2], tmp)
    os.replace(tmp, link)
elif os.path.lexists(link):
    os.remove(link)
PYEOF
}

status_path() {
    # The --status-file of a release's run.args, relative to the service's working folder.
    sf=$(awk 'prev == "--status-file" { print; exit } { prev = $0 }' "$1/run.args")
    case $sf in
        "") ;;
        /*) printf '%s\n' "$sf" ;;
        *) printf '%s/%s\n' "$2" "$sf" ;;
    esac
}

runtime_pid() {
    # The pid of the background runtime started by deploy, if it still runs.
    pidfile=$1/state/edgesight.pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    case $pid in '' | *[!0-9]*) return 0 ;; esac
    kill -0 "$pid" 2>/dev/null || return 0
    # A stale pid file (after a reboot) may name an unrelated process that reuses the number;
    # a zombie has an empty command line and counts as stopped.
    if [ -r "/proc/$pid/cmdline" ]; then
        tr '\000' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$1/current/model" || return 0
    fi
    printf '%s\n' "$pid"
}

stop_background() {
    pid=$(runtime_pid "$1")
    if [ -n "$pid" ]; then
        kill -TERM "$pid"
        # SIGTERM makes edgesight run finish the frame and flush its outputs; 20 s as TimeoutStopSec.
        i=0
        while [ "$i" -lt 100 ] && [ -n "$(runtime_pid "$1")" ]; do sleep 0.2; i=$((i + 1)); done
        if [ -n "$(runtime_pid "$1")" ]; then kill -KILL "$pid"; fi
    fi
    rm -f "$1/state/edgesight.pid"
}

start_background() {
    state=$1/state
    release_dir=$1/current
    runtime=$2
    mkdir -p "$state"
    cd "$state"
    if [ -f edgesight.log ]; then mv -f edgesight.log edgesight.log.1; fi
    # run.args holds one argument per line: read them into "$@" without any word splitting.
    set --
    while IFS= read -r arg || [ -n "$arg" ]; do set -- "$@" "$arg"; done <"$release_dir/run.args"
    model=$release_dir/model
    nohup "$runtime" run "$model" "$@" >edgesight.log 2>&1 </dev/null &
    printf '%s\n' "$!" >edgesight.pid
}

stop_service() {
    if [ "$2" = systemd ]; then
        if systemctl is-active --quiet edgesight.service; then systemctl stop edgesight.service; fi
    else
        stop_background "$1"
    fi
}

step=$1
shift
case $step in
upload)
    command -v "$PY" >/dev/null 2>&1 || die "$PY not found: install python3 (3.9+) on the device or pass --env EDGESIGHT_PYTHON=PATH"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/edgesight-deploy.XXXXXX")
    emit tmp "$tmp"
    cat >"$tmp/archive.tar.gz"
    emit sha256 "$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$tmp/archive.tar.gz")"
    emit previous "$(release_of "$1")"
    emit uid "$(id -u)"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then emit systemd 1; else emit systemd 0; fi
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then emit sudo 1; else emit sudo 0; fi
    ;;
install)
    tmp=$1 prefix=$2 release=$3 user=$4
    cd "$tmp"
    tar -xzf archive.tar.gz || die "cannot extract the archive in $tmp (is the disk full?)"
    new=1
    if [ -e "$prefix/releases/$release" ]; then new=0; fi
    set -- --prefix "$prefix"
    if [ -n "$user" ]; then set -- "$@" --user "$user"; fi
    rc=0
    sh @TOP@/install.sh "$@" || rc=$?
    after=$(release_of "$prefix")
    emit current "$after"
    if [ "$rc" -ne 0 ] && [ "$after" != "$release" ] && [ "$new" = 1 ]; then
        # install.sh stopped before the switch: leave no trace of the new release.
        rm -rf "$prefix/releases/$release" "$prefix/releases/.$release.partial"
    fi
    exit "$rc"
    ;;
start)
    prefix=$1 mode=$2 runtime=$3
    stop_service "$prefix" "$mode"
    if [ "$mode" = systemd ]; then workdir=/var/lib/edgesight; else workdir=$prefix/state; fi
    status=$(status_path "$prefix/current" "$workdir")
    # A status file left by the previous run must not pass the health check.
    if [ -n "$status" ]; then rm -f "$status"; fi
    emit status_file "$status"
    emit started "$(now)"
    if [ "$mode" = systemd ]; then
        if systemctl is-failed --quiet edgesight.service; then systemctl reset-failed edgesight.service; fi
        # --no-block: Type=notify would hold 'start' until READY; the health check waits instead.
        systemctl start --no-block edgesight.service
    else
        start_background "$prefix" "$runtime"
    fi
    ;;
wait)
    # The health check runs here, next to the service: one round trip however long it takes.
    "$PY" - "$@" <<'PYEOF'
import json, os, subprocess, sys, time
prefix, mode, status_path, started, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
MARK = "@@edgesight "

def number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

def status():
    # Written atomically by edgesight run; missing until the first statistics interval.
    try:
        with open(status_path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

def running():
    if mode == "systemd":
        # Restart=on-failure keeps a crashing service 'activating'; 'failed' is final.
        state = subprocess.run(["systemctl", "is-active", "edgesight.service"], stdout=subprocess.PIPE, universal_newlines=True)
        return state.stdout.strip() != "failed"
    # As runtime_pid in sh: the pid file's process, with this prefix's model on its command line.
    try:
        with open(os.path.join(prefix, "state", "edgesight.pid")) as f:
            pid = int(f.read())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return (prefix + "/current/model").encode() in f.read().split(b"\0")
    except FileNotFoundError:
        return True

def last_lines():
    if mode == "systemd":
        out = subprocess.run(["journalctl", "-u", "edgesight.service", "-n", "3", "-o", "cat", "--no-pager"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True).stdout
        return out.splitlines()
    try:
        with open(os.path.join(prefix, "state", "edgesight.log"), errors="replace") as f:
            return f.read().splitlines()[-3:]
    except OSError:
        return []

deadline = time.monotonic() + timeout
while True:
    st = status()
    if number(st.get("frames")) > 0 and number(st.get("updated")) > started and not st.get("finished"):
        print(MARK + "healthy=%d" % number(st.get("frames")))
        break
    if st.get("finished") or not running():
        print(MARK + "stopped=1")
        for line in last_lines():
            print(MARK + "log=" + line)
        break
    if time.monotonic() >= deadline:
        print(MARK + "timeout=1")
        break
    time.sleep(0.5)
PYEOF
    ;;
rollback)
    prefix=$1 mode=$2 previous=$3
    stop_service "$prefix" "$mode"
    if [ -n "$previous" ] && [ -f "$prefix/releases/$previous/MANIFEST.json" ]; then
        point_current "$prefix" "$previous"
        if [ "$mode" = systemd ]; then
            # install.sh replaced the unit with the new release's: put the previous one back.
            cp "$prefix/releases/$previous/edgesight.service" /etc/systemd/system/edgesight.service
            systemctl daemon-reload
        fi
    else
        point_current "$prefix" ""
        if [ "$mode" = systemd ]; then systemctl disable edgesight.service; fi
    fi
    emit current "$(release_of "$prefix")"
    ;;
finish)
    tmp=$1 prefix=$2 keep=$3 protected=$4
    if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
    current=$(release_of "$prefix")
    if [ "$keep" -gt 0 ] && [ -n "$current" ]; then
        # The folder's time orders releases by deployment for --keep.
        touch "$prefix/releases/$current"
        n=0
        for r in $(ls -1t "$prefix/releases" | grep -E '^[0-9a-f]{16}$'); do
            n=$((n + 1))
            if [ "$n" -le "$keep" ]; then continue; fi
            case " $current $protected " in *" $r "*) continue ;; esac
            rm -rf "$prefix/releases/$r"
            emit pruned "$r"
        done
    fi
    ;;
*)
    die "unknown step '$step'"
    ;;
esac
""".replace("@TOP@", TOP)


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class DeployConfig:
    """How to reach the devices and what to do there (the options of ``edgesight deploy``).

    Attributes:
        prefix: install prefix on the device (``install.sh --prefix``); a host given as
            ``ssh://host/PATH`` uses PATH instead.
        user: service user for ``install.sh --user`` (None: install.sh's default, ``edgesight``).
        port: SSH port; ``ssh://host:PORT`` overrides it per host.
        identity: private key file for ``ssh -i``.
        ssh_options: extra ``ssh -o KEY=VALUE`` options (``UserKnownHostsFile=...``).
        keep: releases kept on the device, newest first (0: never remove any).
        health_timeout: seconds the new service has to report processed frames (0: no check).
        runtime: the ``edgesight`` executable of the background fallback (default
            ``PREFIX/current/venv/bin/edgesight``); systemd runs the unit's ``ExecStart``.
        env: ``(KEY, VALUE)`` pairs set for every remote command and ``install.sh``
            (``EDGESIGHT_SKIP_APT``, ``EDGESIGHT_PYTHON``, ``PIP_INDEX_URL``...).
        parallel: hosts deployed at the same time.
    """

    prefix: str = DEFAULT_PREFIX
    user: Optional[str] = None
    port: int = 22
    identity: Optional[str] = None
    ssh_options: Tuple[str, ...] = ()
    keep: int = 3
    health_timeout: float = 60.0
    runtime: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()
    parallel: int = 4


@dataclass(frozen=True)
class HostTarget:
    """One device to deploy to.

    Attributes:
        name: the ``--host`` value as given (it names the host in progress, results and errors).
        destination: ``[user@]host`` for ssh.
        port: SSH port.
        prefix: install prefix on this device.
    """

    name: str
    destination: str
    port: int
    prefix: str


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
    """

    archive: Path
    release_id: str
    sha256: str
    size: int
    profile: str
    status_file: Optional[str]


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


@dataclass(frozen=True)
class StageReport:
    """What ``stage`` wrote.

    Attributes:
        release: the release id.
        prefix_dir: ``TARGET/<prefix>`` on the host.
        written: files and links written, in order.
        boot_lines: settings written to ``config.txt`` (empty when it was already complete or no --boot).
    """

    release: str
    prefix_dir: Path
    written: Tuple[Path, ...]
    boot_lines: Tuple[str, ...]


class _StepFailed(Exception):
    """A remote step failed; the message is the one-line reason for the result table."""


# --------------------------------------------------------------------------------------------
# Validation (everything before the first connection)


def check_prefix(prefix: str, where: str = "--prefix") -> str:
    """Normalise an install prefix and refuse one that ``install.sh`` would refuse.

    Args:
        prefix: an absolute path on the device.
        where: what to name in the error (``--prefix`` or the host).

    Returns:
        The prefix without a trailing ``/``.

    Raises:
        DeployError: not absolute, ``/`` itself, or a character other than letters, digits and
            ``. _ / + -`` (install.sh writes the prefix into the systemd unit with sed).
    """
    norm = posixpath.normpath(prefix) if prefix else ""
    if not PREFIX_RE.fullmatch(prefix) or norm in ("/", "//"):
        raise DeployError(
            f"{where} '{prefix}': install.sh accepts only an absolute folder below / made of letters, digits "
            "and . _ / + - (e.g. /opt/edgesight); choose such a prefix"
        )
    return norm


def _check_user(user: Optional[str]) -> None:
    if user is not None and not USER_RE.fullmatch(user):
        raise DeployError(f"--user '{user}': install.sh accepts lower-case letters, digits, - and _ (starting with a letter or _)")


def parse_env(items: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
    """Parse ``KEY=VALUE`` items of ``--env``.

    Args:
        items: the values given.

    Returns:
        ``(KEY, VALUE)`` pairs in the order given (a later one wins on the device, as with ``env``).

    Raises:
        DeployError: an item without ``=``, a key that is not a shell variable name, or a value
            with a line break.
    """
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not ENV_KEY_RE.fullmatch(key):
            raise DeployError(f"--env '{item}': expected KEY=VALUE with a variable name as KEY, e.g. EDGESIGHT_SKIP_APT=1")
        if "\n" in value or "\r" in value:
            raise DeployError(f"--env {key}: the value must be on one line")
        out.append((key, value))
    return tuple(out)


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


def parse_host(spec: str, port: int = 22, prefix: str = DEFAULT_PREFIX) -> HostTarget:
    """Parse a ``--host`` value: ``[user@]host`` or ``ssh://[user@]host[:port][/prefix]``.

    Args:
        spec: the value.
        port: the port when the value names none.
        prefix: the install prefix when the value names none.

    Returns:
        The target.

    Raises:
        DeployError: an empty value, one starting with ``-`` (ssh would read an option), blanks,
            a path or port in the plain form, or a prefix install.sh would refuse.
    """
    if spec.startswith("ssh://"):
        try:
            url = urlsplit(spec)
            url_port = url.port
        except ValueError as e:
            raise DeployError(f"--host '{spec}': {e}; write ssh://[user@]host[:port][/prefix]") from e
        host = url.hostname or ""
        user = unquote(url.username) if url.username else ""
        path = unquote(url.path)
        if url.query or url.fragment or url.password:
            raise DeployError(f"--host '{spec}': write ssh://[user@]host[:port][/prefix], without a password, '?' or '#'")
        if path not in ("", "/"):
            prefix = check_prefix(path, f"--host '{spec}': prefix")
        port = url_port or port
        destination = f"{user}@{host}" if user else host
    else:
        destination, host = spec, spec.rpartition("@")[2]
        if "/" in spec or (host.count(":") == 1):
            raise DeployError(f"--host '{spec}': give [user@]host, or ssh://[user@]host:port/prefix for a port or prefix of its own")
    if not host or destination.startswith("-") or re.search(r"[\s]", destination):
        raise DeployError(f"--host '{spec}': expected [user@]host (no blanks, not starting with '-')")
    if not 0 < port < 65536:
        raise DeployError(f"--host '{spec}': port {port} is not between 1 and 65535")
    return HostTarget(name=spec, destination=destination, port=port, prefix=check_prefix(prefix))


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
    )


# --------------------------------------------------------------------------------------------
# SSH


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
    """Runs the steps of ``REMOTE_SCRIPT`` on one host with the system ssh client.

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
        argv += ["sh", "-c", REMOTE_SCRIPT, "edgesight-deploy", step, *args]
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
            switched, install_error = self._install(previous)
        except _StepFailed as e:
            self._finish_quietly(keep=0)
            return self.result(FAILED, f"{e}; the device is unchanged")
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

    def _install(self, previous: str) -> Tuple[bool, str]:
        """Run install.sh; returns (whether ``current`` changed, install.sh's error or '')."""
        self.say(f"installing into {self.t.prefix} (previous release: {previous or 'none'})")
        rc, reply = self.remote.call("install", self.tmp, self.t.prefix, self.rel.release_id, self.config.user or "",
                                     timeout=INSTALL_TIMEOUT_S, check=False)
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

    Everything is checked before the first connection: the archive against its manifest, the
    hosts, prefix, user, SSH options, ``--env`` and that the release writes a status file.

    Args:
        archive: the ``.tar.gz`` written by ``edgesight bundle``.
        hosts: ``[user@]host`` or ``ssh://[user@]host[:port][/prefix]`` values.
        config: ports, key, prefix, health timeout, ...
        progress: called as ``progress(host, message)`` from worker threads.

    Returns:
        One result per host, in the order given.

    Raises:
        DeployError: an invalid host, option or prefix; no ssh client; nothing to check health with.
        BundleError: the archive is unreadable or does not match its manifest.
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


# --------------------------------------------------------------------------------------------
# SD card staging


def _systemd_env(key: str, value: str) -> str:
    """One ``Environment=`` assignment, quoted for systemd (which expands % specifiers)."""
    text = f"{key}={value}".replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'Environment="{text}"'


def firstboot_unit(release: str, prefix: str, user: str, env: Sequence[Tuple[str, str]] = ()) -> str:
    """The one-shot unit that runs a staged release's ``install.sh`` on the device's first boot.

    It needs the network (the venv's requirements, apt packages), runs before ``edgesight.service``
    and, once install.sh succeeds, removes the staged installer and disables itself; after a
    failure (no network yet) it runs again at the next boot.

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
    """Point ``link`` at ``target`` atomically (a new link renamed over the old one)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.new")
    if os.path.lexists(tmp):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link


def _write_config(path: Path, text: str) -> Path:
    """Write a system configuration file atomically, readable by all like the files beside it."""
    write_text(path, text)
    # The atomic write's temporary file is private (0600); units and rules are normally 0644.
    path.chmod(0o644)
    return path


def stage(archive: PathLike, root: PathLike, prefix: str = DEFAULT_PREFIX, user: Optional[str] = None,
          boot: Optional[PathLike] = None, env: Sequence[Tuple[str, str]] = ()) -> StageReport:
    """Stage a deploy archive onto a mounted root filesystem (an SD card), without a network.

    Writes ``ROOT/<prefix>/releases/<id>`` (files only: a venv cannot be built for another
    architecture here), the relative ``ROOT/<prefix>/current`` link, the rendered unit in
    ``ROOT/etc/systemd/system`` enabled for ``multi-user.target``, udev rules in
    ``ROOT/etc/udev/rules.d``, the unmodified archive contents in ``ROOT/<prefix>/firstboot`` and
    the enabled ``edgesight-firstboot.service`` that installs them on the first boot. With
    ``boot``, the profile's ``config.txt.fragment`` settings go into ``BOOT/config.txt``.

    Args:
        archive: the ``.tar.gz``; it is verified before anything is written.
        root: the mounted root partition.
        prefix: install prefix on the device.
        user: service user (default ``edgesight``, created on the first boot).
        boot: the mounted boot partition, or None.
        env: ``(KEY, VALUE)`` pairs for the first-boot installer (``PIP_INDEX_URL``...).

    Returns:
        The release id and what was written.

    Raises:
        DeployError: ``root`` or ``boot`` does not look like the partition named, or an invalid
            prefix or user.
        BundleError: the archive is unreadable or does not match its manifest.
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
    with tempfile.TemporaryDirectory(prefix="edgesight-stage-") as tmp:
        src = extract_archive(archive, tmp)
        manifest_bytes = (src / MANIFEST).read_bytes()
        release = hashlib.sha256(manifest_bytes).hexdigest()[:16]
        manifest = json.loads(manifest_bytes)
        title = str(manifest.get("profile")) + (f" + {manifest['use_case']}" if manifest.get("use_case") else "")
        unit = (src / UNIT).read_text(encoding="utf-8").replace("@PREFIX@", prefix).replace("@USER@", user)
        base = root / prefix.lstrip("/")
        written: List[Path] = []
        boot_lines: List[str] = []

        target = base / "releases" / release
        if not (target / MANIFEST).is_file():
            staging = target.with_name(f".{release}.partial")
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
            shutil.copytree(src / "model", staging / "model")
            for name in ("profile.yaml", "run.args", "requirements.txt", MANIFEST):
                shutil.copyfile(src / name, staging / name)
            (staging / UNIT).write_text(unit, encoding="utf-8")
            # One rename, as install.sh does: the release exists complete or not at all.
            os.replace(staging, target)
        written.append(target)
        # The first-boot installer verifies these files against MANIFEST.json, so they stay as shipped.
        first = base / "firstboot"
        first.mkdir(parents=True, exist_ok=True)
        staging = first / f".{TOP}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        shutil.copytree(src, staging)
        written.append(replace_dir(staging, first / TOP))
        written.append(_link(base / "current", f"releases/{release}"))

        systemd_dir = root / "etc" / "systemd" / "system"
        wants = systemd_dir / "multi-user.target.wants"
        written.append(_write_config(systemd_dir / UNIT, unit))
        written.append(_link(wants / UNIT, f"/etc/systemd/system/{UNIT}"))
        written.append(_write_config(systemd_dir / FIRSTBOOT_UNIT, firstboot_unit(release, prefix, user, env)))
        written.append(_link(wants / FIRSTBOOT_UNIT, f"/etc/systemd/system/{FIRSTBOOT_UNIT}"))
        for rules in sorted(src.glob("*.rules")):
            written.append(_write_config(root / "etc" / "udev" / "rules.d" / rules.name, rules.read_text(encoding="utf-8")))

        fragment = src / "config.txt.fragment"
        if boot_config is not None and fragment.is_file():
            old = boot_config.read_text(encoding="utf-8")
            new, added = merge_boot_config(old, fragment.read_text(encoding="utf-8"), title)
            if new != old:
                boot_lines = added
                written.append(write_text(boot_config, new))
    return StageReport(release=release, prefix_dir=base, written=tuple(written), boot_lines=tuple(boot_lines))
