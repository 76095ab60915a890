"""``edgesight profiles list|show`` and ``edgesight bundle``: device profiles and deploy archives."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


@click.group()
def profiles() -> None:
    """Device profiles (rpi5, coral-usb, ...) and use-case presets (drone, qc-line, ...).

    A profile or preset is a built-in name or the path of your own YAML file (start from
    `edgesight profiles show NAME`).
    """


@profiles.command("list")
def list_profiles_cmd() -> None:
    """List the built-in device profiles and use-case presets."""
    from ..fleet.profiles import list_presets, list_profiles, load_preset, load_profile

    rows = [("Device profiles (--profile):", [(n, load_profile(n).description) for n in list_profiles()]),
            ("Use-case presets (--use-case):", [(n, load_preset(n).description) for n in list_presets()])]
    width = max(len(n) for _, items in rows for n, _ in items)
    for title, items in rows:
        click.echo(title)
        for name, description in items:
            click.echo(f"  {name:<{width}}  {description}")


@profiles.command("show")
@click.argument("name")
@click.option("--preset", "--use-case", "preset", help="Use-case preset to layer on the profile (name or YAML file).")
def show(name: str, preset: Optional[str]) -> None:
    """Print device profile NAME, with a use-case preset applied, as YAML."""
    from ..fleet.profiles import load_preset, load_profile, resolve

    resolved = resolve(load_profile(name), load_preset(preset) if preset else None)
    click.echo(resolved.to_yaml(), nl=False)


@click.command()
@click.argument("model_bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--profile", "-p", "profile", required=True, envvar="EDGESIGHT_PROFILE",
              help="Device profile: a name from `edgesight profiles list` or a YAML file.")
@click.option("--use-case", "-u", "use_case", help="Use-case preset layered on the profile (name or YAML file).")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Archive to write (default: <bundle>-<profile>[-<use-case>].tar.gz).")
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path), envvar="EDGESIGHT_SIGN_KEY",
              help="OpenSSH private key that signs the archive (ssh-keygen -Y sign); devices that trust its .pub "
                   "(deploy --trust) refuse archives it did not sign.")
@click.option("--wheelhouse/--no-wheelhouse", "wheelhouse", default=True, show_default=True, envvar="EDGESIGHT_WHEELHOUSE",
              help="Carry every dependency wheel for the profile's platform and Python, so the device installs with no "
                   "network; --no-wheelhouse: edgesight's wheel only, the rest from the device's package index.")
@click.option("--offline", is_flag=True, envvar="EDGESIGHT_OFFLINE",
              help="Take the wheels from the cache only, never from a package index (fill it with `edgesight wheels fetch`).")
def bundle(model_bundle: Path, profile: str, use_case: Optional[str], out: Optional[Path], sign_key: Optional[Path],
           wheelhouse: bool, offline: bool) -> None:
    """Package MODEL_BUNDLE with a device profile into a deploy archive (.tar.gz).

    \b
    Signed with a key of your own (devices pin its .pub with `edgesight deploy --trust`):
      ssh-keygen -t ed25519 -f ~/.ssh/edgesight-release
      edgesight bundle models/signs-int8 -p rpi5 --sign ~/.ssh/edgesight-release
    On the device (no network needed: the wheels travel in the archive):
      tar xzf ARCHIVE && sudo sh edgesight-deploy/install.sh
    """
    from ..fleet.archive import build_deploy_archive
    from ..fleet.profiles import load_preset, load_profile, resolve
    from ..fleet.signing import signing_key
    from ..fleet.wheelhouse import build_wheelhouse, edgesight_only

    resolved = resolve(load_profile(profile), load_preset(use_case) if use_case else None)
    # The key is checked before the wheels are fetched, its passphrase asked for after.
    key = signing_key(sign_key) if sign_key is not None else None
    out = out or Path(f"{model_bundle.resolve().name}-{resolved.profile}" + (f"-{resolved.use_case}" if resolved.use_case else "") + ".tar.gz")
    progress = lambda line: click.echo(line, err=True)  # noqa: E731
    wheels = build_wheelhouse(resolved, offline=offline, progress=progress) if wheelhouse else edgesight_only()
    package = build_deploy_archive(model_bundle, resolved, out, sign=key, wheelhouse=wheels)
    click.echo(wheels.summary(), err=True)
    for warning in package.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {out} ({resolved.title}, {len(package.files)} files)")
    if package.signer:
        public = sign_key if sign_key.suffix == ".pub" else f"{sign_key}.pub"
        click.echo(f"signed by {package.signer}; devices trust it with: edgesight deploy {out.name} --trust {public} ...")
    click.echo(f"on the device: tar xzf {out.name} && sudo sh edgesight-deploy/install.sh")
