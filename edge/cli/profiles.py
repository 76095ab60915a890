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
def bundle(model_bundle: Path, profile: str, use_case: Optional[str], out: Optional[Path]) -> None:
    """Package MODEL_BUNDLE with a device profile into a deploy archive (.tar.gz).

    \b
    On the device:
      tar xzf ARCHIVE && sudo sh edgesight-deploy/install.sh
    """
    from ..fleet.archive import build_deploy_archive
    from ..fleet.profiles import load_preset, load_profile, resolve

    resolved = resolve(load_profile(profile), load_preset(use_case) if use_case else None)
    out = out or Path(f"{model_bundle.resolve().name}-{resolved.profile}" + (f"-{resolved.use_case}" if resolved.use_case else "") + ".tar.gz")
    package = build_deploy_archive(model_bundle, resolved, out)
    for warning in package.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {out} ({resolved.title}, {len(package.files)} files)")
    click.echo(f"on the device: tar xzf {out.name} && sudo sh edgesight-deploy/install.sh")
