"""``edgesight convert``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgesight.edge import options


def _convert_config_options(f):
    from .config import ConvertConfig

    return options.click_options(ConvertConfig)(f)


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file of options (keys: the flags' names with underscores, e.g. num_calib); flags given on the command line win.")
@_convert_config_options
@click.pass_context
def convert(ctx: click.Context, source: Path, out: Path, config_path: Optional[Path], **_: object) -> int:
    """Convert SOURCE (a run folder, or a .keras file with --labels and --calib) to a verified
    TFLite model bundle."""
    from .config import ConvertConfig
    from .anomaly import convert_any, format_report
    from .convert import failure_message

    cfg = options.build(ConvertConfig, ctx, config_path)
    verbose = bool(ctx.find_root().params.get("verbose"))
    res = convert_any(source, out, cfg, verbose=verbose)
    click.echo(format_report(res.report))
    if "edgetpu" in res.report:
        from .edgetpu import format_edgetpu_report
        import json

        click.echo(format_edgetpu_report(json.loads((out / "edgetpu_report.json").read_text())))
    click.echo(f"bundle: {out}")
    if not res.passed:
        click.echo(failure_message(res.report, out), err=True)
        return 1
    return 0
