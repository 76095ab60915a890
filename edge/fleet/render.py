"""The systemd unit of a resolved profile.

``render_unit`` fills ``firmware_configs/edgesight.service.in`` with the ``edgesight run`` command
line (``run_args``) and the service settings; ``edgesight bundle`` ships the result with
placeholders for the install prefix and user, which ``install.sh`` fills in on the device.
"""

from __future__ import annotations

import re
from string import Template

from ..errors import ProfileError
from .profiles import builtin_template
from .runsettings import _arg, run_args
from .settings import ResolvedProfile


def _systemd_word(arg: str) -> str:
    """Quote one ExecStart argument: systemd expands % specifiers and $VARIABLES itself."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not re.search(r"[\s\"'\\;]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(resolved: ResolvedProfile, prefix: str, user: str) -> str:
    """The systemd unit that runs ``edgesight run`` with the profile's settings.

    The service runs as ``user`` with the profile's groups, ``Type=notify`` with a watchdog that
    the runtime feeds, and ``Restart=on-failure``. ``ExecStart`` is
    ``<prefix>/current/venv/bin/edgesight run <prefix>/current/model <run_args>``.

    Args:
        resolved: the resolved profile.
        prefix: the install prefix, absolute (or the ``@PREFIX@`` placeholder of a deploy archive).
        user: the service user (or ``@USER@``).

    Returns:
        The unit file's text.

    Raises:
        ProfileError: a prefix or user name that cannot be written into a unit safely.
    """
    if not re.fullmatch(r"/[A-Za-z0-9._/+-]*|@PREFIX@", prefix):
        raise ProfileError(f"install prefix '{prefix}': use an absolute path of letters, digits and . _ / + -")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]*|@USER@", user):
        raise ProfileError(f"service user '{user}': use lower-case letters, digits, - and _")
    prefix = prefix.rstrip("/") or "/"
    argv = [f"{prefix}/current/venv/bin/edgesight", "run", f"{prefix}/current/model", *run_args(resolved)]
    svc = resolved.service
    return Template(builtin_template("edgesight.service.in")).substitute(
        profile=resolved.profile,
        use_case=f" + {resolved.use_case}" if resolved.use_case else "",
        user=user,
        groups=" ".join(svc.groups),
        exec_start=" ".join(_systemd_word(a) for a in argv),
        restart_sec=_arg(svc.restart_sec),
        watchdog_sec=_arg(svc.watchdog_sec),
        timeout_start_sec=_arg(svc.timeout_start_sec),
    )
