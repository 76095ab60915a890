"""``edgesight explain``: heatmaps of what a model's decisions rest on.

A bundle is explained with the LiteRT interpreter only (occlusion maps, no TensorFlow needed);
a run folder or ``.keras`` file with Grad-CAM, which needs the ``train`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

import click

from edgesight.edge.errors import ConfigError, EdgesightError


@click.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Folder for one PNG per image and index.json.")
@click.option("--target", help="Explain this label in every image instead of its predicted one.")
@click.option("--patch", type=int, help="Bundles: side of the grey occluding square in input pixels [default: about a fifth of the input side].")
@click.option("--stride", type=int, help="Bundles: step of the square in input pixels [default: half the patch].")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="labels.txt for a bare .keras or .tflite file.")
@click.option("--no-verify", is_flag=True, help="Bundles: load a model whose sha256 model.json does not record or match.")
@click.option("--trust-model", is_flag=True, help="Keras models: allow Lambda/custom layers, which run code from the model file.")
def explain(model: Path, images: Tuple[str, ...], out: Path, target: Optional[str], patch: Optional[int], stride: Optional[int],
            labels: Optional[Path], no_verify: bool, trust_model: bool) -> int:
    """Write heatmaps of where MODEL looks in IMAGES (files, folders, glob patterns): occlusion
    maps for a bundle folder or .tflite (interpreter only), Grad-CAM for a run folder or .keras."""
    from edgesight.edge.tools.classify import expand_paths
    from edgesight.edge.tools.explain import explain_files

    from .evaluate import is_tflite_source

    files, problems = expand_paths(images)
    for item, reason in problems:
        click.echo(f"warning: {item}: {reason}", err=True)
    if not files:
        raise EdgesightError("no images to explain; give image files, folders or glob patterns")
    if is_tflite_source(model):
        from edgesight.edge.classifier import Classifier
        from edgesight.edge.tools.explain import OcclusionExplainer

        clf = Classifier(model, labels=labels, threads=os.cpu_count(), verify=not no_verify)
        explainer = OcclusionExplainer(clf.model, clf.bundle.model_path, clf.info, patch=patch, stride=stride)
    else:
        if patch is not None or stride is not None:
            raise ConfigError(f"--patch/--stride: {model} is a Keras model, explained with Grad-CAM; leave them out, or give its converted bundle")
        from .explain import GradCamExplainer

        explainer = GradCamExplainer(model, labels, trust_model)
    index = explain_files(files, explainer, out, target=target)
    for item in index["skipped"]:
        click.echo(f"skipped {item['image']}: {item['reason']}", err=True)
    click.echo(f"{len(index['images'])} {explainer.method} map(s) in {out} (index: {out / 'index.json'})")
    return 0 if index["images"] else 1
