"""``edgesight convert``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--quant", type=click.Choice(["int8", "float16", "dynamic", "float32"]), default="int8", show_default=True)
@click.option("--io", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True, help="Input/output type of an int8 model.")
@click.option("--num-calib", type=int, default=300, show_default=True, help="Calibration images (stratified sample of the training split).")
@click.option("--max-drop", type=float, default=1.0, show_default=True, help="Largest tolerated top-1 accuracy drop in percentage points; exit 1 beyond it.")
@click.option("--edgetpu", is_flag=True, help="Edge TPU: full int8, uint8 I/O, batch 1, op compatibility report; compiles when edgetpu_compiler is installed.")
@click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weight quantisation.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="labels.txt for a bare .keras file.")
@click.option("--calib", type=click.Path(exists=True, path_type=Path), help="Calibration images for a bare .keras file (dataset or plain folder).")
@click.option("--eval", "eval_data", type=click.Path(exists=True, path_type=Path), help="Labelled images to verify on (default: the run's test split).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--trust-model", is_flag=True, help="Allow Lambda/custom layers, which run code from the model file.")
@click.pass_context
def convert(ctx: click.Context, source: Path, out: Path, quant: str, io: str, num_calib: int, max_drop: float, edgetpu: bool, per_tensor: bool,
            labels: Optional[Path], calib: Optional[Path], eval_data: Optional[Path], seed: int, trust_model: bool) -> int:
    """Convert SOURCE (a run folder, or a .keras file with --labels and --calib) to a verified
    TFLite model bundle."""
    from .config import ConvertConfig
    from .convert import ADVICE, convert_source, format_conversion_report

    cfg = ConvertConfig(quant=quant, io=io, num_calib=num_calib, max_drop=max_drop, edgetpu=edgetpu, per_tensor=per_tensor, seed=seed)
    verbose = bool(ctx.find_root().params.get("verbose"))
    res = convert_source(source, out, cfg, labels=labels, calib=calib, eval_data=eval_data, trust=trust_model, verbose=verbose)
    click.echo(format_conversion_report(res.report))
    if "edgetpu" in res.report:
        from .edgetpu import format_edgetpu_report
        import json

        click.echo(format_edgetpu_report(json.loads((out / "edgetpu_report.json").read_text())))
    click.echo(f"bundle: {out}")
    if not res.passed:
        click.echo(
            f"error: accuracy dropped {res.report['accuracy_drop_pp']:.2f} pp (more than --max-drop {max_drop}); the bundle is kept in {out}; {ADVICE}",
            err=True,
        )
        return 1
    return 0
