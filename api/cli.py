"""The ``edgesight`` command line.

Subcommands are loaded lazily: ``edgesight --help`` and the runtime commands never import
TensorFlow, so they work on a Raspberry Pi with only the base install.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple

import click

from edgesight.edge import __version__
from edgesight.edge.errors import EdgesightError

# name -> (module, attribute, one-line help shown by `edgesight --help` without importing it)
COMMANDS: Dict[str, Tuple[str, str, str]] = {
    "demo": ("edgesight.cli", "demo", "The whole pipeline on built-in traffic-sign data: train, convert, run."),
    "train": ("edgesight.training.cli", "train", "Train a classifier from a folder of labelled images."),
    "evaluate": ("edgesight.training.cli", "evaluate", "Measure a trained model on labelled images."),
    "datasets": ("edgesight.training.cli", "datasets", "Generate and inspect datasets; add captured frames to them."),
    "convert": ("edgesight.convert.cli", "convert", "Convert a trained model to a verified int8/float16 TFLite bundle."),
    "explain": ("edgesight.training.explain_cli", "explain", "Heatmaps of where a model looks: Grad-CAM (run folder) or occlusion (bundle, no TensorFlow)."),
    "run": ("edgesight.edge.cli.runtime", "run", "Classify a camera, stream, video or folder in real time."),
    "classify": ("edgesight.edge.cli.runtime", "classify", "Classify image files and folders with a model bundle."),
    "embed": ("edgesight.edge.cli.enroll", "embed", "Write the embeddings (pooled features) of images as a .npy file."),
    "enroll": ("edgesight.edge.cli.enroll", "enroll", "Add a class to a bundle from a few photos, without training (or remove one)."),
    "doctor": ("edgesight.edge.cli.runtime", "doctor", "Check this machine: backend, cameras, Edge TPU, temperature, disk."),
    "benchmark": ("edgesight.edge.cli.runtime", "benchmark", "Measure a bundle's latency, throughput and memory."),
    "profiles": ("edgesight.edge.cli.profiles", "profiles", "List and show device profiles and use-case presets."),
    "bundle": ("edgesight.edge.cli.profiles", "bundle", "Package a model bundle and a device profile as a deploy archive."),
    "deploy": ("edgesight.edge.cli.deploy", "deploy", "Install a deploy archive on devices over SSH (health check, rollback), or stage it on an SD card."),
    "wheels": ("edgesight.edge.cli.wheels", "wheels", "Fetch the wheels of device profiles into the cache that deploy archives are built from."),
    "fleet": ("edgesight.edge.cli.fleet", "fleet", "Roll a release out with Ansible; watch a fleet's results, FPS and drift over MQTT."),
    "review": ("edgesight.edge.cli.web", "review", "Relabel a capture folder's images in a browser (the /review page without a camera)."),
    "serve": ("edgesight.edge.cli.web", "serve", "Serve a bundle over HTTP without a camera: POST an image to /classify, get JSON."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class State:
    """Options of the top-level group, handed to subcommands through the click context."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgesight")
@click.option("-v", "--verbose", is_flag=True, envvar="EDGESIGHT_VERBOSE", help="Show debug logs and full tracebacks.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """edgesight: from a folder of labelled images to a live int8 classifier on a small device.

    \b
    Typical flow:
      edgesight train photos/ --out runs/signs
      edgesight evaluate runs/signs holdout/
      edgesight convert runs/signs --quant int8 --out models/signs-int8
    """
    # Our loggers at INFO (DEBUG with -v, which includes what TensorFlow and LiteRT print
    # natively: see edgesight.edge.native_log); other libraries' only from WARNING up.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("edgesight").setLevel(logging.DEBUG if verbose else logging.INFO)
    ctx.obj = State(verbose)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit status 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    # the same reading of EDGESIGHT_VERBOSE as click's flag (0, false, no, off: not verbose)
    env = os.environ.get("EDGESIGHT_VERBOSE", "").strip().lower()
    verbose = "-v" in args or "--verbose" in args or env not in ("", "0", "false", "no", "off", "n", "f")
    if not verbose:
        # OpenCV's and FFmpeg's own warnings (a camera that does not open, a damaged video)
        # duplicate the one-line error edgesight prints; -v keeps them.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        rv = cli.main(args=args, prog_name="edgesight", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except EdgesightError as e:
        if verbose:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


@click.command()
@click.option("--out", "-o", default="edgesight-demo", show_default=True, type=click.Path(file_okay=False), help="Folder for every artefact.")
@click.option("--classes", help="Comma-separated sign classes (default: all of them).")
@click.option("--fast", is_flag=True, help="Tiny dataset and one epoch: checks the whole pipeline in about a minute.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated signs, the training split and initialisation, the calibration sample and the video.")
@click.option("--time-budget", type=float, default=300.0, show_default=True, help="Seconds the whole demo may take (0: no limit); training stops early, keeping its best epoch, to stay within it.")
def demo(out: str, classes: Optional[str], fast: bool, seed: int, time_budget: float) -> None:
    """Generate traffic-sign data, train, convert to int8, and run the camera loop on a
    generated dashcam video; no data or network needed."""
    from edgesight.training.synth import SIGN_CLASSES

    from .demo import DemoConfig, run_demo

    names = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else SIGN_CLASSES
    run_demo(DemoConfig(out=out, classes=names, fast=fast, seed=seed, time_budget=time_budget), echo=click.echo)


if __name__ == "__main__":
    main()
