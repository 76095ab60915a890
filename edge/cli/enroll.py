"""``edgesight embed`` and ``edgesight enroll``: embeddings and few-shot classes, no TensorFlow."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Tuple

import click

from ..errors import ConfigError, EdgesightError


def _files(paths: Tuple[str, ...], what: str):
    from ..tools.classify import expand_paths

    files, problems = expand_paths(paths)
    for item, reason in problems:
        click.echo(f"warning: {item}: {reason}", err=True)
    if not files:
        given = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        raise EdgesightError(f"no images to {what} in {given or 'the arguments'}; give image files, folders or glob patterns")
    return files


def _classifier(bundle: Path, no_verify: bool):
    from ..classifier import Classifier

    return Classifier(bundle, verify=not no_verify)


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .npy file to write (N x D float32, one L2-normalised row per image); FILE.json lists the images in row order.")
@click.option("--no-verify", is_flag=True, help="Use a model whose sha256 is not checked against model.json.")
def embed(bundle: Path, paths: Tuple[str, ...], out: Path, no_verify: bool) -> int:
    """Write the embeddings of image files, folders and glob patterns with BUNDLE: the pooled
    features before the classifier head, L2-normalised (the dot product of two rows is their
    cosine similarity)."""
    from tqdm import tqdm

    from ..fsutil import write_bytes, write_json
    from ..model.enroll_files import npy_bytes
    from ..tools.enroll import embed_files

    if out.suffix.lower() != ".npy":
        raise ConfigError(f"--out {out}: give a file name ending in .npy (its list of images goes to {out.with_suffix('.json').name})")
    clf = _classifier(bundle, no_verify)
    files = _files(paths, "embed")
    with tqdm(total=len(files), desc="embedding", unit="img", disable=None, leave=False, file=sys.stderr) as bar:
        vectors, done, skipped = embed_files(clf, files, progress=bar.update)
    for path, reason in skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    if not done:
        raise EdgesightError("none of the images could be read; nothing was written")
    write_bytes(out, npy_bytes(vectors.astype("float32")))
    write_json(out.with_suffix(".json"), {"bundle": str(bundle), "size": int(vectors.shape[1]), "paths": done,
                                          "skipped": [{"path": p, "reason": r} for p, r in skipped]})
    click.echo(f"{len(done)} embeddings of {vectors.shape[1]} values: {out} (images in order: {out.with_suffix('.json')})")
    return 0


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("images", nargs=-1)
@click.option("--class", "name", metavar="NAME", help="The class to enrol from IMAGES (five or more photos work best); enrolling a name again replaces it.")
@click.option("--remove", metavar="NAME", help="Remove this enrolled class.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), help="Write the changed bundle here (default: change BUNDLE in place).")
@click.option("--no-verify", is_flag=True, help="Use a bundle whose sha256s are not checked against model.json.")
def enroll(bundle: Path, images: Tuple[str, ...], name: Optional[str], remove: Optional[str], out: Optional[Path], no_verify: bool) -> int:
    """Add a class to BUNDLE from a few IMAGES (files, folders, globs), without training; or
    --remove one. Without either, list the enrolled classes.

    The class's prototype (the normalised mean embedding) goes into the bundle as a plain .npy
    file; the runtime scores it by cosine similarity on the trained head's scale, so top-k,
    --threshold and --smooth cover it. Needs a bundle converted with the embedding output.
    """
    from ..tools.enroll import describe

    if name and remove:
        raise ConfigError("--class and --remove: give one (enrol a class, or remove one)")
    if remove and images:
        raise ConfigError(f"--remove {remove} takes no images; drop {images[0]}")
    if images and not name:
        raise ConfigError("images given without --class NAME; name the class they show")
    clf = _classifier(bundle, no_verify)
    if name:
        files = _files(images, "enrol")
        dest = clf.enroll(name, files, out=out)
        click.echo(f"enrolled '{name.strip()}' from {len(files)} image{'s' if len(files) != 1 else ''} into {dest}")
    elif remove:
        dest = clf.unenroll(remove, out=out)
        click.echo(f"removed '{remove}' from {dest}")
    classes = describe(clf)
    if not (name or remove):
        click.echo(json.dumps(classes, indent=2) if classes else f"{bundle}: no enrolled classes")
    else:
        click.echo("enrolled classes: " + (", ".join(c["label"] for c in classes) or "none"))
    return 0
