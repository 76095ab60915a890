"""``edgesight wheels fetch``: fill the wheel cache for device profiles ahead of ``bundle``."""

from __future__ import annotations

from typing import Optional, Tuple

import click


@click.group()
def wheels() -> None:
    """The wheel cache that deploy archives' wheelhouses are built from.

    Wheels are cached per platform in $EDGESIGHT_CACHE_DIR/wheels (default
    ~/.cache/edgesight/wheels); `edgesight bundle` takes them from there, and with --offline
    from there only.
    """


@wheels.command("fetch")
@click.argument("profiles", nargs=-1, required=True)
@click.option("--use-case", "-u", "use_case", help="Use-case preset layered on each profile (its extras add wheels).")
@click.option("--offline", is_flag=True, help="Only check that the cache already holds every wheel; never contact an index.")
def fetch(profiles: Tuple[str, ...], use_case: Optional[str], offline: bool) -> None:
    """Fetch every dependency wheel the devices of PROFILES need into the cache.

    \b
    A profile's arch, os.python and os.glibc name the platform; `arch: any` is this machine's.
      edgesight wheels fetch rpi5 generic-linux
      edgesight bundle models/signs-int8 -p rpi5 --offline
    """
    from ..fleet.profiles import load_preset, load_profile, resolve
    from ..fleet.wheelhouse import fetch_dependencies

    preset = load_preset(use_case) if use_case else None
    for name in profiles:
        resolved = resolve(load_profile(name), preset)
        target, chosen = fetch_dependencies(resolved, offline=offline, progress=lambda line: click.echo(line, err=True))
        size = sum(w.path.stat().st_size for w in chosen) / 1e6
        click.echo(f"{resolved.title}: {len(chosen)} wheels, {size:.1f} MB, for {target.describe()}")
