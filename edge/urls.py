"""URLs as they may be shown: every place that prints or writes a user's URL (errors, logs,
statistics files, the systemd status) passes it through :func:`redact_url` first."""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Hide the password in a URL so logs, error messages and written files never show it.

    Args:
        url: e.g. ``rtsp://admin:secret@10.0.0.5/stream1``; any other text is returned as is.

    Returns:
        The URL with the password replaced by ``***``; unchanged when it has none.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL (e.g. an unbalanced '[' in a file name)
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable only from this machine."""
    import ipaddress

    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def protection_problem(host: str, token: Optional[str], insecure: bool) -> Optional[str]:
    """Why serving on ``host`` this way is refused (a token is needed off loopback), or None."""
    if token or insecure or is_loopback(host):
        return None
    return (f"--http {host}: serving the camera to the network without a token; give --http-token "
            "(or EDGESIGHT_HTTP_TOKEN), or --http-insecure to serve it unprotected on purpose")
