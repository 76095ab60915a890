"""``edgesight convert``: a run folder or .keras file -> a verified model bundle.

Bundle layout: ``model.tflite`` (with standard TFLite metadata: labels and normalisation),
``labels.txt``, ``model.json`` (the preprocessing spec from training plus quantisation details,
the calibration temperature, the drift ``baseline`` of the verification images and the sha256
of the .tflite), ``conversion_report.json``,
``reliability.png`` (accuracy against score, before and after calibration); with ``--edgetpu`` also
``edgetpu_report.json`` and, when the compiler is installed, ``model_edgetpu.tflite`` (its
sha256 in model.json's ``edgetpu_sha256``: the runtime checks it as it checks ``model.tflite``).
The bundle is assembled in ``<out>.partial`` and moved into place when complete.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .calibrate import Calibration, fit_split, format_ece_line
from .config import ConvertConfig
from edgesight.edge import __version__
from edgesight.edge.errors import BundleError, DatasetError
from edgesight.edge.fsutil import replace_dir, write_bytes, write_json
from edgesight.edge.model.bundle import EDGETPU_FILE, EDGETPU_SHA_KEY, sha256_file
from edgesight.edge.model.enroll_files import REFERENCE_FILE
from edgesight.edge.model.baseline import compute_baseline, input_stats
from edgesight.edge.model.interpreter import TFLiteClassifier
from edgesight.edge.model.spec import ModelInfo, write_model_info
from edgesight.training.data import Sample, Split, make_split, scan_dataset, unlabelled_images

MODE_NAMES = {"int8": "int8", "float16": "float16", "dynamic": "dynamic-range", "float32": "float32"}


@dataclass
class ConversionResult:
    bundle: Path
    report: Dict[str, Any]
    passed: bool


def calibration_samples(calib: Path, seed: int) -> Tuple[List[Sample], Optional[Split]]:
    """Samples to calibrate on from ``--calib DATA``: a labelled dataset (stratified, its test
    part held out for verification) or any folder of images.

    Returns:
        ``(samples, split)``; ``split`` is None for an unlabelled folder.
    """
    calib = Path(calib)
    if not calib.exists():
        raise DatasetError(f"{calib}: calibration data not found; give a folder of images or a dataset")
    try:
        split = make_split(scan_dataset(calib, progress=False), 0.0, 0.2, seed)
        return split.train + split.val, split
    except DatasetError:
        if calib.is_file():
            raise
    samples = unlabelled_images(calib)
    if not samples:
        raise DatasetError(f"{calib}: no readable images for calibration; give a folder with images like those the model will see")
    return samples, None


# Share of a plain --calib folder held out to compare the converted model with the Keras model
# when no labelled images are given to verify on (the same share a labelled --calib holds out).
HOLDOUT_SHARE = 0.2


def hold_out(samples: Sequence[Sample], share: float, seed: int, folder: Path) -> Tuple[List[Sample], List[Sample]]:
    """Split unlabelled ``samples`` into calibration and verification images, deterministically
    for ``seed``; at least one of each.

    Raises:
        DatasetError: fewer than 2 images.
    """
    if len(samples) < 2:
        raise DatasetError(f"{folder}: {len(samples)} readable image is too few to calibrate on and verify with; "
                           "add images like those the model will see, or give --eval DATA (labelled images)")
    order = np.random.default_rng(seed).permutation(len(samples))
    n = min(len(samples) - 1, max(1, round(len(samples) * share)))
    held = set(order[:n].tolist())
    return ([s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held])


def _sources(source: Path, labels: Optional[Path], calib: Optional[Path], eval_data: Optional[Path], cfg: ConvertConfig, trust: bool):
    """Resolve the model, its info, calibration and verification samples, and where the latter
    come from.

    Verification images, first found: ``--eval``; the held-out part of a labelled ``--calib``;
    a run's test (or validation) split; else part of a plain ``--calib`` folder, unlabelled.
    """
    from edgesight.training.evaluate import load_model_source, samples_to_evaluate

    model, info, run_dir = load_model_source(source, labels, trust)
    shape = tuple(model.inputs[0].shape[1:])
    spec = info.preprocess
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise BundleError(f"{source}: model input shape {shape} is not an image")
    if shape != (spec.height, spec.width, spec.channels):
        raise BundleError(f"{source}: model input {shape} does not match model.json ({spec.height}, {spec.width}, {spec.channels}); re-export the run")
    calib_samples: List[Sample] = []
    eval_samples: List[Sample] = []
    split = Split.load(run_dir / "split.json") if run_dir is not None else None
    calib_split: Optional[Split] = None
    if calib is not None:
        calib_samples, calib_split = calibration_samples(calib, cfg.seed)
    elif split is not None:
        calib_samples = split.train
    if eval_data is not None:
        eval_samples, _, _ = samples_to_evaluate(eval_data, "auto")
        where = "eval"
    elif calib_split is not None:
        eval_samples, where = calib_split.test, "calib-holdout"
    elif split is not None and (split.test or split.val):
        eval_samples, where = (split.test, "test") if split.test else (split.val, "val")
    elif calib is not None and calib_samples:
        # A plain folder has no labels: the converted model is compared with the Keras model on
        # images int8 was not calibrated on.
        if cfg.needs_calibration:
            calib_samples, eval_samples = hold_out(calib_samples, HOLDOUT_SHARE, cfg.seed, calib)
            where = "calib-holdout"
        else:
            eval_samples, where = list(calib_samples), "calib"
    if cfg.needs_calibration and not calib_samples:
        raise DatasetError(f"{source}: int8 needs calibration images: give --calib DATA (images like those the model will see)")
    if not eval_samples:
        raise DatasetError(f"{source}: nothing to verify the conversion on: give --eval DATA (labelled images) "
                           "or --calib FOLDER (any images like those the model will see)")
    unknown = sorted({s.label for s in eval_samples if s.label} - set(info.labels))
    if unknown:
        raise DatasetError(f"verification data has classes the model does not know: {', '.join(unknown)}")
    return model, info, run_dir, calib_samples, eval_samples, where, fit_split(split, calib_split, eval_data is not None)


def bundle_info(info: ModelInfo, clf: TFLiteClassifier, tflite: bytes, cfg: ConvertConfig, run_dir: Optional[Path], source: Path,
                calibration: Optional[Calibration] = None) -> ModelInfo:
    return ModelInfo(
        labels=info.labels,
        preprocess=info.preprocess,
        backbone=info.backbone,
        output=info.output,
        toolkit_version=__version__,
        source={**info.source, "run": str(run_dir.resolve()) if run_dir else None, "model": str(Path(source).resolve())},
        extra={
            **{k: v for k, v in info.extra.items() if k not in ("quantization", "model_file", "sha256", EDGETPU_SHA_KEY, "calibration", "baseline")},
            "model_file": "model.tflite",
            "calibration": (calibration or Calibration()).model_info(),
            "sha256": hashlib.sha256(tflite).hexdigest(),
            "quantization": {
                "mode": cfg.quant,
                "per_channel": not cfg.per_tensor,
                "input": clf.input.to_dict(),
                "output": clf.output_tensor.to_dict(),
            },
        },
    )


def check_out(out: Path, source: Path, replace_bundle: bool = True) -> None:
    """Refuse an ``--out`` whose replacement would lose data: the source itself or a folder
    holding it, a file, or a non-empty folder that is not a model bundle. An earlier bundle is
    replaced when ``replace_bundle``."""
    if not out.exists():
        return
    o, s = out.resolve(), source.resolve()
    if o == s or o in s.parents:
        raise BundleError(f"{out}: is or holds the model being converted ({source}); choose another --out")
    if not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder; choose another --out")
    if not any(out.iterdir()):
        return
    is_bundle = (out / "model.json").is_file() and (out / "conversion_report.json").is_file()
    if not is_bundle:
        raise BundleError(f"{out}: exists and is not a model bundle (no model.json and conversion_report.json); "
                          "choose another --out, nothing was written")
    if not replace_bundle:
        raise BundleError(f"{out}: a bundle is already there; choose another --out")


def convert_source(
    source: Path,
    out: Path,
    cfg: ConvertConfig,
    progress: bool = True,
    overwrite: bool = True,  # replace an earlier bundle at ``out`` (never anything else)
    verbose: bool = False,
) -> ConversionResult:
    """Convert, verify and write the bundle. Inputs are validated before conversion starts.

    What the converter prints natively is kept in the bundle's ``converter.log`` and logged at
    DEBUG (``edgesight -v``) whatever ``verbose`` says; ``verbose`` is accepted for callers that
    still pass it.

    Returns:
        The bundle path, the report, and whether the accuracy drop is within ``cfg.max_drop``.
        A failed check still writes the bundle, so the user can inspect it.

    Raises:
        BundleError, DatasetError, ConfigError: bad inputs (nothing is written).
        ConversionError: the converter rejected the model (nothing is written).
    """
    from tqdm import tqdm

    from .calibrate import calibrate_model, plot_reliability
    from .embedding import describe_outputs, embedding_agreement, embedding_model, enrolment_info, order_outputs, reference_file
    from .metadata import embed_metadata
    from .quantize import captured_native_output, convert_keras, stratified_sample
    from edgesight.training.pipeline import load_batch

    t0 = time.time()
    out = Path(out)
    check_out(out, Path(source), overwrite)
    paths = [Path(p) if p else None for p in (cfg.labels, cfg.calib, cfg.eval_data)]
    model, info, run_dir, calib_samples, eval_samples, where, fit = _sources(source, *paths, cfg, cfg.trust_model)
    spec = info.preprocess
    # The temperature goes into the model's last Dense layer before conversion, so every
    # converted form (and every runtime reading it) gives calibrated scores.
    with captured_native_output(what="calibrating scores") as (stream, _):
        cal = calibrate_model(model, spec, info.labels, fit, eval_samples, cfg.calibrate, progress, stream)
    # The embedding output is taken after the temperature is baked in (the layers are shared).
    two = embedding_model(model) if cfg.embedding else None
    exported = two if two is not None else model
    calibration = None
    n_calib = 0
    if cfg.needs_calibration:
        picked = stratified_sample(calib_samples, cfg.num_calib, cfg.seed)
        calibration = load_batch([s.path for s in picked], spec)
        n_calib = len(picked)
    # Fine-tuned weights are used for the conversion only: verification compares the int8 model
    # with the model as trained.
    trained_weights, qat = _finetune_for_int8(model, info, calib_samples, calibration, cfg, progress) if calibration is not None else (None, None)
    # The converter's output goes to converter.log, and to the log at DEBUG (edgesight -v).
    with captured_native_output(what="converting") as (stream, converter_log):
        with tqdm(total=n_calib, desc="calibrating", unit="img", file=stream, disable=(None if progress else True) if n_calib else True, leave=False) as bar:
            raw = convert_keras(exported, cfg, calibration, progress=bar.update)
        float_bytes = raw if cfg.quant == "float32" else convert_keras(exported, ConvertConfig.float32())
    if trained_weights is not None:
        model.set_weights(trained_weights)
    if two is not None:
        raw, float_bytes = (order_outputs(b, info.num_classes) for b in (raw, float_bytes))
    def with_metadata(model_bytes: bytes) -> bytes:
        return embed_metadata(
            model_bytes,
            labels=info.labels,
            input_mean=spec.input_mean,
            input_std=spec.input_std,
            name=f"{info.backbone} classifier ({MODE_NAMES[cfg.quant]})",
            description=f"Image classifier over {info.num_classes} classes: {', '.join(info.labels[:20])}{' ...' if info.num_classes > 20 else ''}",
            version=__version__,
            embedding=two is not None,
        )

    tflite = with_metadata(raw)
    # The float32 reference carries the same metadata, so the size ratio compares weights only.
    float_bytes = tflite if cfg.quant == "float32" else with_metadata(float_bytes)
    with captured_native_output(what="verifying") as (stream, _):
        inputs: List[Tuple[float, float]] = []
        verification, (y, kp, qp) = verify_and_size(model, tflite, float_bytes, info, eval_samples, progress, stream,
                                                    on_batch=lambda images: inputs.extend(input_stats(im) for im in images))
        clf = TFLiteClassifier(tflite)
        reference = None
        if two is not None:
            agreement = embedding_agreement(two, clf, info, eval_samples)
            reference = reference_file(clf, info, eval_samples, calib_samples, cfg.seed)
    report: Dict[str, Any] = {
        "mode": cfg.quant,
        "io": cfg.io if cfg.quant == "int8" else "float32",
        "config": cfg.to_dict(),
        "calibration_images": n_calib,
        "verification_split": where,
        **verification,
        "max_drop_pp": cfg.max_drop,
        # Without labels the drop cannot be measured; the share of changed labels bounds it.
        "passed": (verification["accuracy_drop_pp"] if verification["labelled"] else verification["changed_pp"]) <= cfg.max_drop,
        "input": clf.input.to_dict(),
        "output": clf.output_tensor.to_dict(),
        "calibration": cal.to_dict(),
        "ece": cal.ece(y, kp, qp) if verification["labelled"] else {},
        "toolkit_version": __version__,
    }
    if qat is not None:
        report["qat"] = qat
    if reference is not None:
        report["embedding"] = agreement
    if verification["distinct_predictions_quant"] == 1 and verification["distinct_predictions_float"] > 1:
        report.setdefault("warnings", []).append("the converted model predicts a single class for every image")
    # What the converted model's outputs and inputs looked like on the verification images: the
    # run loop measures drift against it.
    baseline = compute_baseline(qp, np.array(inputs), split=where)
    binfo = bundle_info(info, clf, tflite, cfg, run_dir, source, cal).with_extra(baseline=baseline.to_dict())
    if reference is not None:
        # Both outputs described by tensor name, and the reference embeddings enrolment needs.
        binfo = binfo.with_extra(outputs=describe_outputs(clf), enrolment=enrolment_info(reference),
                                 quantization={**binfo.extra["quantization"], "embedding": clf.embedding_tensor.to_dict()})

    def finish(staging: Path) -> None:
        write_bytes(staging / "converter.log", "".join(converter_log).encode("utf-8"))
        if reference is not None:
            write_bytes(staging / REFERENCE_FILE, reference)
        if verification["labelled"]:
            plot_reliability(staging / "reliability.png", y, cal.probs_before(kp), qp, cal.temperature, MODE_NAMES[cfg.quant])
        if cfg.edgetpu:
            report["edgetpu"] = _edgetpu(staging, tflite)
            compiled = staging / EDGETPU_FILE
            if compiled.is_file():
                # The runtime refuses a compiled model whose sha256 model.json does not record.
                write_model_info(staging, binfo.with_extra(**{EDGETPU_SHA_KEY: sha256_file(compiled)}))
        report["seconds"] = round(time.time() - t0, 2)
        write_json(staging / "conversion_report.json", report)

    save_bundle(out, tflite, binfo, finish)
    return ConversionResult(out, report, report["passed"])


def _finetune_for_int8(model, info: ModelInfo, samples: Sequence[Sample], calibration: np.ndarray, cfg: ConvertConfig,
                       progress: bool) -> Tuple[Optional[List[np.ndarray]], Optional[Dict[str, Any]]]:
    """Quantisation-aware fine-tuning (:mod:`.qat`) when the config asks for it and the model
    allows it: ``(the weights as trained, to restore after converting; what was done)``."""
    from tqdm import tqdm

    from .qat import MAX_IMAGES, batches, finetune_for_int8, unsupported
    from .quantize import captured_native_output, stratified_sample
    from edgesight.training.pipeline import load_batch

    if cfg.qat_epochs == 0:
        return None, None
    why = unsupported(model)
    if why:
        return None, {"skipped": why}
    picked = stratified_sample(samples, MAX_IMAGES, cfg.seed)
    images = load_batch([s.path for s in picked], info.preprocess)
    known = all(s.label in info.labels for s in picked)
    labels = np.array([info.labels.index(s.label) for s in picked]) if known else None
    weights = model.get_weights()
    with captured_native_output(what="fine-tuning for int8") as (stream, _):
        with tqdm(total=batches(len(images), cfg.qat_epochs, *images.shape[1:3]), desc="fine-tuning for int8", unit="batch", file=stream,
                  disable=None if progress else True, leave=False) as bar:
            done = finetune_for_int8(model, images, labels, calibration, cfg.qat_epochs, cfg.seed, on_batch=lambda: bar.update(1))
    return weights, done


def save_bundle(out: Path, tflite: bytes, info: ModelInfo, extra: Optional[Callable[[Path], None]] = None) -> Path:
    """Write ``model.tflite``, ``model.json`` and ``labels.txt`` (plus whatever ``extra`` writes
    into the staging folder) to ``<out>.partial``, then move it onto ``out`` in one rename.

    ``info`` should carry the sha256 of ``tflite`` (see :func:`bundle_info`); on any error the
    staging folder is removed and ``out`` is left as it was.
    """
    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        write_bytes(staging / "model.tflite", tflite)
        write_model_info(staging, info)
        if extra is not None:
            extra(staging)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def verify_and_size(model, tflite: bytes, float_bytes: bytes, info: ModelInfo, samples, progress: bool, stream=None, on_batch=None):
    """The verification figures plus sizes, and ``(labels, keras_probs, tflite_probs)``
    (``on_batch`` sees each batch of model inputs)."""
    from .verify import compare, compare_unlabelled, predict_both

    y, kp, qp = predict_both(model, tflite, info, samples, progress, stream=stream, on_batch=on_batch)
    v = compare(y, kp, qp, info.labels) if (y >= 0).all() else compare_unlabelled(kp, qp, info.labels)
    v["size_bytes"] = len(tflite)
    v["float_size_bytes"] = len(float_bytes)
    v["size_ratio"] = round(len(tflite) / len(float_bytes), 4)
    return v, (y, kp, qp)


def _edgetpu(staging: Path, tflite: bytes) -> Dict[str, Any]:
    from .edgetpu import edgetpu_report, run_edgetpu_compiler

    rep = edgetpu_report(tflite)
    rep["compiler"] = run_edgetpu_compiler(staging / "model.tflite", staging)
    compiled = rep["compiler"].get("path")
    if rep["compiler"].get("compiled") and compiled and Path(compiled).name != "model_edgetpu.tflite":
        Path(compiled).rename(staging / "model_edgetpu.tflite")
        rep["compiler"]["path"] = str(staging / "model_edgetpu.tflite")
    write_json(staging / "edgetpu_report.json", rep)
    return {k: rep[k] for k in ("num_ops", "num_mapped", "all_mapped", "first_unmapped") if k in rep} | {"compiler": rep["compiler"]}


_REMEDIES = (
    "more calibration images (--num-calib 1000), per-tensor weights (--per-tensor), --quant float16 (half the size, "
    "no activation quantisation), or fine-tuning longer so the model is less sensitive to rounding"
)
ADVICE = f"to recover accuracy try: {_REMEDIES}"


def _advice(report: Dict[str, Any]) -> str:
    calib = (report.get("config") or {}).get("calib")
    if not calib:
        return ADVICE
    # Calibration images unlike the camera's (darker, other scenes) set the int8 ranges wrong.
    return (f"first check that the --calib images ({calib}) look like what the camera sees (the same exposure, scenes "
            f"and objects; the training images are a safe choice), then try: {_REMEDIES}")


def failure_message(report: Dict[str, Any], out: Path) -> str:
    """The one line ``convert`` prints when the check failed."""
    kept = f"the bundle is kept in {out}"
    advice = _advice(report)
    if report.get("task") == "anomaly":
        what = (f"image AUROC dropped {report['auroc_drop_pp']:.2f} pp" if report.get("auroc_drop_pp") is not None else
                f"{100 * (1 - report['decision_agreement']):.2f} % of the held-out images changed between ok and defect")
        few = report.get("defect_images", 0) < 50 or report.get("holdout_images", 0) < 50
        hint = (f"measured on {report.get('holdout_images', 0)} held-out good and {report.get('defect_images', 0)} defect images, "
                "a difference this small is within the noise: train with more good images and --defects, or accept it with "
                "--max-drop" if few else "try per-tensor weights (--per-tensor)")
        return f"error: {what} (more than --max-drop {report['max_drop_pp']}); {kept}; {hint}"
    if report.get("labelled", True):
        return f"error: accuracy dropped {report['accuracy_drop_pp']:.2f} pp (more than --max-drop {report['max_drop_pp']}); {kept}; {advice}"
    return (f"error: {report['changed_pp']:.2f} % of the {report['num_samples']} held-out images changed label (more than --max-drop "
            f"{report['max_drop_pp']}; without labels that share bounds the accuracy drop); {kept}; give --eval DATA (labelled images) "
            f"to measure the drop itself; {advice}")


def format_conversion_report(report: Dict[str, Any]) -> str:
    """A short side-by-side table for the terminal."""
    mode = report["mode"]
    label = mode if mode != "int8" else f"int8/{report['io']}"
    mb = lambda n: f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"  # noqa: E731
    labelled = report.get("labelled", True)
    if labelled:
        top1 = f"{'top-1 accuracy':<18}{report['float_accuracy'] * 100:>9.2f}%{report['quant_accuracy'] * 100:>13.2f}%   ({-report['accuracy_drop_pp'] + 0.0:+.2f} pp)"
    else:
        top1 = f"{'top-1 accuracy':<18}{'-':>10}{'-':>14}   (no labels)"
    lines = [
        f"{'':<18}{'keras':>10}{label:>14}",
        top1,
        f"{'agreement':<18}{'':>10}{report['agreement'] * 100:>13.2f}%",
        f"{'mean |dp|':<18}{'':>10}{report['mean_abs_prob_diff']:>14.4f}",
        f"{'size (.tflite)':<18}{mb(report['float_size_bytes']):>10}{mb(report['size_bytes']):>14}   ({report['size_ratio']:.2f}x)",
        *format_ece_line(report),
    ]
    emb = report.get("embedding")
    if emb and emb.get("num_samples"):
        lines.append(f"{'embedding':<18}{emb['size']:>10}   values; float vs {label} cosine mean {emb['cosine_mean']:.4f}, "
                     f"min {emb['cosine_min']:.4f}")
    qat = report.get("qat") or {}
    if qat.get("epochs"):
        targets = "labels and the model's own scores" if qat["labels"] else "the model's own scores"
        lines.append(f"fine-tuned for int8: {qat['epochs']} epochs on {qat['images']} images ({targets}), {qat['seconds']:.0f} s")
    if labelled:
        lines.append(f"verified on {report['num_samples']} images ({report['verification_split']}), calibrated on {report['calibration_images']}")
        worst = sorted(report["per_class"].items(), key=lambda kv: kv[1]["change_pp"])[:3]
        worst = [f"{c} {v['change_pp']:+.1f} pp" for c, v in worst if v["change_pp"] < 0]
        if worst:
            lines.append("largest per-class drops: " + ", ".join(worst))
    else:
        lines.append(f"verified on {report['num_samples']} unlabelled images ({report['verification_split']}), calibrated on "
                     f"{report['calibration_images']}: compared with the Keras model's labels, {report['changed_pp']:.2f} % changed, "
                     "so accuracy fell by at most that; give --eval DATA (labelled images) to measure it")
        note = report.get("calibration", {}).get("note")
        if note:
            lines.append(f"calibration: {note}")
    for w in report.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)
