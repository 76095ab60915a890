"""``edgesight deploy``: install a deploy archive on devices over SSH, or stage it on an SD card."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional, Tuple

import click

from ..errors import DeployError


@click.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", "-H", "hosts", multiple=True, metavar="[USER@]HOST",
              help="Device to deploy to (repeatable); ssh://[user@]host[:port][/prefix] gives one its own port or prefix.")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True, help="SSH port.")
@click.option("--identity", "-i", type=click.Path(dir_okay=False, path_type=Path), help="Private key for SSH (key authentication only).")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="Extra ssh -o option (repeatable), e.g. UserKnownHostsFile=~/.ssh/fleet_hosts. Host keys are always checked.")
@click.option("--prefix", default="/opt/edgesight", show_default=True, envvar="EDGESIGHT_PREFIX", help="Install prefix on the device.")
@click.option("--user", "service_user", help="Service user install.sh creates and the unit runs as (default: edgesight).")
@click.option("--keep", type=click.IntRange(min=0), default=3, show_default=True, help="Releases kept on the device, newest first (0: all).")
@click.option("--health-timeout", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Seconds the new service has to report processed frames before it is rolled back (0: no check).")
@click.option("--runtime", metavar="PATH",
              help="edgesight on the device for hosts without systemd (default: PREFIX/current/venv/bin/edgesight).")
@click.option("--env", "-e", "env", multiple=True, metavar="KEY=VALUE",
              help="Environment for install.sh on the device (repeatable), e.g. EDGESIGHT_SKIP_APT=1 or PIP_INDEX_URL=...")
@click.option("--parallel", "-j", type=click.IntRange(min=1), default=4, show_default=True, help="Hosts deployed at the same time.")
@click.option("--target", type=click.Path(file_okay=False, path_type=Path), help="Stage onto this mounted root filesystem instead (no network).")
@click.option("--boot", type=click.Path(file_okay=False, path_type=Path), help="With --target: the mounted boot partition, for config.txt.")
@click.option("--trust", "trust", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="PUBKEY",
              help="Public key (KEY.pub) the device trusts to sign archives (repeatable): added to its "
                   "/etc/edgesight/allowed_signers; from then on it refuses archives no trusted key signed.")
@click.option("--allow-unsigned", is_flag=True,
              help="Install without checking the archive's signature (development only; every install says so).")
def deploy(archive: Path, hosts: Tuple[str, ...], port: int, identity: Optional[Path], ssh_options: Tuple[str, ...], prefix: str,
           service_user: Optional[str], keep: int, health_timeout: float, runtime: Optional[str], env: Tuple[str, ...],
           parallel: int, target: Optional[Path], boot: Optional[Path], trust: Tuple[Path, ...], allow_unsigned: bool) -> int:
    """Install ARCHIVE (from `edgesight bundle`) on devices and check that it runs.

    \b
    Over SSH (key authentication; the device needs python3 and tar):
      edgesight deploy signs-rpi5.tar.gz --host pi@cam1.local --host pi@cam2.local
    Each host gets the archive, runs its install.sh (PREFIX/releases/ID, PREFIX/current switched
    atomically), restarts the service (systemd, or a background `edgesight run` with its pid in
    PREFIX/state where systemd does not run) and must report processed frames within
    --health-timeout; otherwise the previous release is made current again and restarted.

    \b
    Onto a mounted SD card (installed on the first boot from the card's wheels):
      edgesight deploy signs-rpi5.tar.gz --target /media/$USER/rootfs --boot /media/$USER/bootfs

    \b
    Signed archives (edgesight bundle --sign KEY): the first deploy pins the key, later ones
    must be signed by it:
      edgesight deploy signs-rpi5.tar.gz --host pi@cam1.local --trust ~/.ssh/edgesight-release.pub
    """
    from ..fleet.deploy import deploy as deploy_hosts
    from ..fleet.deploy import format_results
    from ..fleet.signing import ALLOW_UNSIGNED_ENV, trusted_keys
    from ..fleet.stage import stage
    from ..fleet.targets import DeployConfig, parse_env

    if target is not None and hosts:
        raise DeployError("give either --host (over SSH) or --target (a mounted SD card), not both")
    if boot is not None and target is None:
        raise DeployError("--boot needs --target: it edits the boot partition of a mounted SD card")
    environment = parse_env(env)
    signers = trusted_keys(trust)
    if allow_unsigned or dict(environment).get(ALLOW_UNSIGNED_ENV) == "1":
        click.echo("WARNING: --allow-unsigned: the archive's signature is NOT checked on the devices; for development only", err=True)
    if target is not None:
        report = stage(archive, target, prefix=prefix, user=service_user, boot=boot, env=environment, trust=signers,
                       allow_unsigned=allow_unsigned)
        for warning in report.warnings:
            click.echo(f"WARNING: {warning}", err=True)
        click.echo(f"staged release {report.release} in {report.prefix_dir} ({len(report.written)} files and links)")
        if report.trusted:
            click.echo(f"the card trusts {report.trusted} new signing key(s) (--trust)")
        if report.signer:
            click.echo(f"signature checked: signed by {report.signer}")
        if boot is not None:
            added = ", ".join(report.boot_lines)
            click.echo(f"{boot / 'config.txt'}: " + (f"added {added}" if added else "already has the camera settings"))
        click.echo("on the first boot edgesight-firstboot.service runs install.sh, which installs the venv from the card's wheels, "
                   "and starts edgesight.service; it needs the network only for what the card lacks (the profile's apt packages, "
                   "or a --no-wheelhouse archive's wheels; add -e EDGESIGHT_SKIP_APT=1 when the image has the apt packages)")
        return 0

    config = DeployConfig(prefix=prefix, user=service_user, port=port, identity=str(identity) if identity else None,
                          ssh_options=ssh_options, keep=keep, health_timeout=health_timeout, runtime=runtime,
                          env=environment, parallel=parallel, trust=signers, allow_unsigned=allow_unsigned)
    lock = threading.Lock()

    def progress(host: str, message: str) -> None:
        with lock:
            click.echo(f"[{host}] {message}", err=True)

    results = deploy_hosts(archive, hosts, config, progress)
    click.echo(format_results(results), nl=False)
    for r in results:
        if not r.ok:
            click.echo(f"error: {r.host}: {r.reason}", err=True)
    return 0 if all(r.ok for r in results) else 1
