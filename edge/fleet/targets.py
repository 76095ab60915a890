"""Where a release goes and how: the install prefix and service user, the hosts, the deploy options.

Shared by ``deploy`` (over SSH) and ``stage`` (onto an SD card). These values are checked before
the first connection or the first file written, so one that ``install.sh`` or the remote shell
would refuse fails at once on this machine, not on the device after the upload.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from ..errors import DeployError

DEFAULT_PREFIX = "/opt/edgesight"
DEFAULT_USER = "edgesight"
# install.sh writes the prefix and user into the unit with sed and refuses anything else.
PREFIX_RE = re.compile(r"/[A-Za-z0-9._/+-]*")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]*")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# pip may build wheels on a Raspberry Pi Zero: give the installer time.
INSTALL_TIMEOUT_S = 3600.0


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
        trust: allowed_signers lines (``signing.trusted_keys``) added on each device before the
            install; the archive must be signed by one of them.
        allow_unsigned: install without any signature check (``EDGESIGHT_ALLOW_UNSIGNED=1``).
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
    trust: Tuple[str, ...] = ()
    allow_unsigned: bool = False


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
    if user == "root":
        raise DeployError("--user root: the service never runs as root; leave --user out (install.sh creates the "
                          f"'{DEFAULT_USER}' system user) or name an unprivileged account")


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
