"""``edgesight fleet``: roll a release out with Ansible, and watch a fleet over MQTT."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Tuple

import click

from ..fleet.targets import DEFAULT_PREFIX


@click.group()
def fleet() -> None:
    """Roll releases out with Ansible and watch a fleet's results over MQTT."""


@fleet.command("ansible")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--inventory", "inventory", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Ansible inventory of the devices (INI or YAML); its host and group variables override the role's defaults.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write the playbook to.")
@click.option("--hosts", default="all", show_default=True, help="Ansible host pattern the play targets.")
@click.option("--serial", multiple=True, default=("1", "25%"), show_default=True, metavar="N|N%",
              help="Batch size (repeatable; the last repeats): hosts or a share of them, e.g. --serial 1 --serial 25% (a canary first).")
@click.option("--max-fail-percentage", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Stop before the next batch once more than this share of a batch failed (0: at the first failure).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, envvar="EDGESIGHT_PREFIX", help="Install prefix on the devices (edgesight_prefix).")
@click.option("--user", "service_user", help="Service user install.sh creates and the unit runs as (default: edgesight).")
@click.option("--keep", type=click.IntRange(min=0), default=3, show_default=True, help="Releases kept on each device, newest first (0: all).")
@click.option("--health-timeout", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Seconds the new service has to report processed frames before it is rolled back (0: no check).")
@click.option("--runtime", metavar="PATH", help="edgesight on the devices without systemd (default: PREFIX/current/venv/bin/edgesight).")
@click.option("--env", "-e", "env", multiple=True, metavar="KEY=VALUE",
              help="Environment of install.sh and the device-side steps (repeatable); secrets belong in a vaulted edgesight_env instead.")
@click.option("--trust", "trust", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="PUBKEY",
              help="Public key (KEY.pub) the devices trust to sign archives (repeatable); the archive must be signed by one.")
@click.option("--allow-unsigned", is_flag=True, help="Roll out an unsigned archive, unchecked on the devices (development only).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
def ansible(archive: Path, inventory: Path, out: Path, hosts: str, serial: Tuple[str, ...], max_fail_percentage: int, prefix: str,
            service_user: Optional[str], keep: int, health_timeout: float, runtime: Optional[str], env: Tuple[str, ...],
            trust: Tuple[Path, ...], allow_unsigned: bool, overwrite: bool) -> None:
    """Write an Ansible playbook that rolls ARCHIVE (from `edgesight bundle --sign`) out to the
    devices of an inventory: in batches, stopping at a failure share, each device installed by
    the archive's own install.sh, health-checked and rolled back to its previous release when
    the new one fails.

    \b
      edgesight fleet ansible signs-rpi5.tar.gz --inventory plant.ini --out rollout --trust release.pub
      cd rollout && ansible-playbook site.yml        # needs ansible-core (pip install 'edgesight[fleet]')
    """
    from ..fleet.playbook import PlaybookConfig, write_playbook
    from ..fleet.signing import trusted_keys
    from ..fleet.targets import parse_env

    if allow_unsigned:
        click.echo("WARNING: --allow-unsigned: the archive's signature is NOT checked on the devices; for development only", err=True)
    config = PlaybookConfig(hosts=hosts, serial=tuple(serial), max_fail_percentage=max_fail_percentage, prefix=prefix,
                            user=service_user, keep=keep, health_timeout=health_timeout, runtime=runtime, env=parse_env(env),
                            trust=trusted_keys(trust), allow_unsigned=allow_unsigned)
    report = write_playbook(archive, inventory, out, config, overwrite=overwrite)
    rel = report.release
    click.echo(f"wrote {out}: release {rel.release_id} ({rel.profile}), batches of {' then '.join(config.serial)}, "
               f"stop above {max_fail_percentage}% failed" + (f", {report.hosts} host(s) in {inventory}" if report.hosts is not None else ""))
    if report.signer:
        click.echo(f"signature checked: signed by {report.signer}")
    click.echo(f"run: {report.command}   (results: {out / 'results'}/HOST.json)")


@fleet.command("watch")
@click.argument("url", metavar="mqtt://BROKER/PREFIX")
@click.option("--stale", type=click.FloatRange(min=0, min_open=True), default=30, show_default=True,
              help="Seconds without a message after which a device shows as stale.")
@click.option("--window", type=click.FloatRange(min=0, min_open=True), default=60, show_default=True,
              help="Seconds of results the label rates cover.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="Seconds between table updates.")
@click.option("--duration", type=click.FloatRange(min=0), default=0, show_default=True, help="Stop after N seconds (0: at Ctrl-C).")
@click.option("--quiet", "-q", is_flag=True, help="No table in the terminal (with --http or --json).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the last table as JSON when stopping.")
@click.option("--http", metavar="HOST:PORT", help="Also serve the table as a page on HOST:PORT (127.0.0.1 unless a host is given).")
@click.option("--http-allow-host", multiple=True, metavar="NAME", help="Another host name the page may be reached by (repeatable).")
@click.option("--http-token", envvar="EDGESIGHT_HTTP_TOKEN", metavar="TOKEN",
              help="Token every --http request must carry (?token= or Authorization: Bearer); needed to serve a non-loopback address.")
@click.option("--http-insecure", is_flag=True, help="Serve --http on a non-loopback address without a token.")
def watch(url: str, stale: float, window: float, interval: float, duration: float, quiet: bool, json_out: Optional[Path],
          http: Optional[str], http_allow_host: Tuple[str, ...], http_token: Optional[str], http_insecure: bool) -> None:
    """Show every device publishing under mqtt://BROKER/PREFIX (devices run
    `edgesight run ... --mqtt mqtt://BROKER/PREFIX/DEVICE`): last seen, FPS, label, label rates,
    drift alerts and release, live in the terminal and, with --http, as a page.

    \b
      edgesight fleet watch mqtt://broker.local/plant --http 0.0.0.0:8090 --http-token "$TOKEN"
    """
    from ..fleet.watch import FleetWatcher, format_table
    from ..fsutil import write_json
    from ..loop.config import parse_hostport

    watcher = FleetWatcher(url, stale=stale, window=window)
    server = None
    stop = threading.Event()
    try:
        if http:
            from ..web.fleet import fleet_routes
            from ..web.server import WebServer

            server = WebServer(*parse_hostport(http), fleet_routes(watcher.snapshot), allow_hosts=http_allow_host,
                               token=http_token, insecure=http_insecure)
            click.echo(f"fleet page at {server.url}" + (" (protected by a token)" if http_token else ""), err=True)
        if not watcher.wait_connected(10):
            click.echo(f"waiting for the MQTT broker at {watcher.target.display()}...", err=True)
        old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            tty = sys.stdout.isatty()
            waited = 0.0
            while not stop.wait(interval):
                waited += interval
                if not quiet:
                    table = format_table(watcher.snapshot())
                    click.echo(("\x1b[H\x1b[2J" if tty else "") + table, nl=False)
                if duration and waited >= duration:
                    break
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        if not quiet and stop.is_set():
            click.echo(format_table(watcher.snapshot()), nl=False)  # the table as it was when stopped
        if json_out is not None:
            write_json(json_out, watcher.snapshot())
    finally:
        if server is not None:
            server.close()
        watcher.close()
