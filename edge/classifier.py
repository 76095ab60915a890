"""``Classifier``: a model bundle ready to classify images, frames and live sources.

The Python front door of the device runtime; ``edgesight classify`` and ``edgesight run`` use
the same class. Only NumPy, OpenCV and LiteRT are imported, never TensorFlow::

    import edgesight as es
    clf = es.Classifier("models/signs-int8")
    r = clf("photo.jpg")                  # or a BGR numpy frame
    print(r.label, r.score, r.top_k)
    for r in clf.stream("0", threshold=0.6, smooth=5, max_frames=100):
        print(r.frame_index, r.label)
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConfigError, EdgesightError
from .frames import Frame, Result
from .model.anomaly import AnomalyDecider
from .model.anomaly_model import open_model
from .model.bundle import Bundle, check_model_json, labels_arg, load_bundle
from .model.interpreter import TFLiteClassifier, edgetpu_delegate, load_backend
from .model.postprocess import Decider
from .model.preprocess import ImageReadError, frame_to_pixels, prepare_image, read_image

log = logging.getLogger("edgesight")

ImageLike = Union[str, Path, np.ndarray]


@dataclass(frozen=True)
class Prediction:
    """The classification of one image.

    Attributes:
        label: the best label, or ``unknown`` when its probability is under the threshold.
        score: that label's probability.
        top_k: ``(label, probability)`` pairs of the model output, best first.
        path: the image file, when one was given.
    """

    label: str
    score: float
    top_k: Tuple[Tuple[str, float], ...]
    path: Optional[str] = None

    def to_dict(self) -> dict:
        """``path`` (when known), ``label``, ``score``, ``top_k`` as a list of objects (the JSON
        of ``edgesight classify --format json``)."""
        d = {"path": self.path} if self.path is not None else {}
        return {**d, "label": self.label, "score": round(self.score, 6),
                "top_k": [{"label": lab, "score": round(v, 6)} for lab, v in self.top_k]}


class Classifier:
    """A model bundle loaded into a LiteRT interpreter.

    Args:
        bundle: a bundle folder (``model.tflite`` + ``model.json`` + ``labels.txt``) or a bare
            ``.tflite`` with embedded labels.
        labels: a ``labels.txt`` for a bare ``.tflite`` without metadata.
        device: ``cpu``, or ``coral`` / ``coral:usb`` / ``coral:pci`` for an Edge TPU (a
            ``*_edgetpu.tflite`` model uses it by itself).
        threads: interpreter threads (default 1).
        verify: check the model against the sha256 that model.json records (``sha256``, and
            ``edgetpu_sha256`` for ``model_edgetpu.tflite``). False (``--no-verify``) loads a model
            without one, or an edited one, and logs a warning that it is not verified.
        max_pixels: image files with more pixels are refused (``ImageTooLargeError``); large
            PNG and JPEG files are decoded reduced when the model input is much smaller.

    Raises:
        BundleError: the bundle is missing, altered (sha256), records no sha256, is not a model,
            or its model.json disagrees with the model (input size, dtype, quantisation, labels).
        MissingDependencyError: no LiteRT runtime, or no Edge TPU library when one is asked for.
    """

    def __init__(self, bundle: Union[str, Path], *, labels: Optional[Union[str, Path]] = None,
                 device: str = "cpu", threads: Optional[int] = None, verify: bool = True,
                 max_pixels: Optional[int] = None) -> None:
        from .loop.config import RunConfig

        # The same checks as `edgesight run --device/--threads/--labels/--no-verify/--max-pixels`.
        cfg = RunConfig(device=device, threads=threads, no_verify=not verify,
                        **({} if max_pixels is None else {"max_pixels": max_pixels}))
        self.max_pixels = cfg.max_pixels
        if labels is not None and not Path(labels).is_file():
            raise ConfigError(f"labels: '{labels}' is not a file")
        self.device = device
        # A LiteRT interpreter serves one thread at a time: calls from several threads queue here.
        self._lock = threading.Lock()
        self.bundle: Bundle = load_bundle(Path(bundle), labels_arg(Path(labels) if labels else None),
                                          prefer_edgetpu=device.startswith("coral"), verify=verify)
        self.verified = verify
        if not verify:
            log.warning("model %s is not verified (--no-verify): its sha256 is not checked against model.json", self.bundle.model_path)
        self.backend = load_backend()
        delegates = []
        if device.startswith("coral") or self.bundle.edgetpu:
            delegates.append(edgetpu_delegate(self.backend, device.split(":", 1)[1] if ":" in device else None))
        spec = self.bundle.info.preprocess
        self.model = open_model(self.bundle, num_threads=threads, delegates=delegates, verify=verify,
                                output=self.bundle.info.output, input_mean=spec.input_mean[0],
                                input_std=spec.input_std[0], backend=self.backend,
                                outputs=self.bundle.info.extra.get("outputs"))
        check_model_json(self.bundle, self.model)
        from .tools.enroll import load_enrolment

        self._reference = None
        load_enrolment(self, verify)

    @property
    def info(self):
        """The bundle's :class:`~edgesight.edge.model.spec.ModelInfo` (preprocessing, labels)."""
        return self.bundle.info

    @property
    def labels(self) -> List[str]:
        """The trained classes, then the enrolled ones (the order of the scores)."""
        return [*self.bundle.info.labels, *self.model.enrolled_names] if self.model is not None else list(self.bundle.info.labels)

    @property
    def enrolled(self) -> Tuple[str, ...]:
        """Names of the classes enrolled from a few images (:meth:`enroll`)."""
        return self._open().enrolled_names

    def embed(self, image: ImageLike) -> np.ndarray:
        """The embedding of one image (a path or a BGR ``uint8`` frame): the model's pooled
        features before the classifier head, dequantised and L2-normalised (float32), so the
        dot product of two is their cosine similarity.

        Raises:
            BundleError: the model has no embedding output (convert it with ``--embedding``).
            ImageReadError: the file is not a readable image.
        """
        from .tools.enroll import embed_images

        return embed_images(self, [image])[0]

    def enroll(self, name: str, images: Sequence[ImageLike], *, out: Optional[Union[str, Path]] = None,
               save: bool = True) -> Optional[Path]:
        """Add the class ``name`` from a few images (five or more work best), without training.

        Its prototype (the normalised mean embedding) is scored by cosine similarity on the
        trained head's scale (see :mod:`edgesight.edge.model.enroll`), so top-k, threshold and
        smoothing cover it; enrolling a name again replaces it.

        Args:
            images: paths or BGR ``uint8`` frames of the new class.
            out: write the enrolled bundle here instead of changing this one.
            save: False changes only this classifier, not the bundle on disk.

        Returns:
            The bundle folder written, or None without ``save``.

        Raises:
            ConfigError: no images, or ``name`` is a trained class, ``unknown`` or not one line.
            ImageReadError: an image cannot be read (nothing is changed).
            BundleError: the model has no embedding output or reference embeddings, or the
                bundle cannot be written (nothing is changed).
        """
        from .tools.enroll import enroll

        return enroll(self, name, list(images), Path(out) if out is not None else None, save)

    def unenroll(self, name: str, *, out: Optional[Union[str, Path]] = None, save: bool = True) -> Optional[Path]:
        """Remove the enrolled class ``name`` (arguments and errors as :meth:`enroll`)."""
        from .tools.enroll import unenroll

        return unenroll(self, name, Path(out) if out is not None else None, save)

    def describe(self) -> str:
        """One line: the model file, the runtime and the delegate in use."""
        return (f"model {self.bundle.model_path} on {self.backend.name} {self.backend.version}"
                + (" with the Edge TPU delegate" if self.model.has_delegates else ""))

    def _pixels(self, image: ImageLike) -> np.ndarray:
        spec = self.bundle.info.preprocess
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or 0 in image.shape:
                raise EdgesightError(f"expected a BGR uint8 image (HxWx3), got {image.dtype} {image.shape}")
            return frame_to_pixels(_as_bgr(image), spec)
        if not isinstance(image, (str, Path)):
            hint = " (cv2.imread returns None for a file it cannot read)" if image is None else ""
            raise EdgesightError(f"expected an image path or a BGR uint8 numpy frame, got {type(image).__name__}{hint}")
        return prepare_image(read_image(Path(image), spec.color, target=spec.size, max_pixels=self.max_pixels), spec)

    def _open(self) -> TFLiteClassifier:
        if self.model is None:
            raise EdgesightError("this Classifier is closed; make a new one")
        return self.model

    def __call__(self, image: ImageLike, *, top_k: int = 3, threshold: float = 0.0) -> Prediction:
        """Classify one image: a file path or a BGR ``uint8`` frame (OpenCV's convention).

        Args:
            top_k: entries of the model output returned in ``top_k`` (at least 1).
            threshold: below this probability the label is ``unknown`` (0 to 1).

        Raises:
            ImageReadError: the file is not a readable image.
            ConfigError: ``top_k`` or ``threshold`` out of range.
        """
        _check_decision(top_k, threshold)
        model = self._open()
        pixels = self._pixels(image)
        with self._lock:
            scores = model.predict(pixels)
            decide = self.decider(threshold=threshold, k=top_k, n=len(scores))
        label, score, top, _ = decide(scores)
        path = None if isinstance(image, np.ndarray) else str(image)
        return Prediction(label, float(score), tuple((lab, float(v)) for lab, v in top), path)

    @property
    def is_anomaly(self) -> bool:
        """True for an anomaly detector (scores ``ok``/``defect``, see ``train --task anomaly``)."""
        return getattr(self.model, "detector", None) is not None

    def decider(self, threshold: float = 0.0, k: int = 3, n: Optional[int] = None, anomaly_threshold: float = 1.0) -> Any:
        """The decision rule of this model: class labels with ``threshold``, or ``ok``/``defect``
        at ``anomaly_threshold`` (1.0 = the bundle's calibrated threshold) for an anomaly detector."""
        if self.is_anomaly:
            return AnomalyDecider(anomaly_threshold)
        return Decider(self.labels[: n or len(self.labels)], threshold=threshold, k=k)

    def classify_files(self, paths: Sequence[Union[str, Path]], *, top_k: int = 3, threshold: float = 0.0,
                       progress: Optional[Callable[[int], None]] = None) -> Tuple[List[Prediction], List[Tuple[str, str]]]:
        """Classify image files one by one.

        Returns:
            ``(predictions, skipped)``: one :class:`Prediction` per readable image and
            ``(path, reason)`` per unreadable one.
        """
        _check_decision(top_k, threshold)
        done: List[Prediction] = []
        skipped: List[Tuple[str, str]] = []
        for path in paths:
            try:
                done.append(self(path, top_k=top_k, threshold=threshold))
            except ImageReadError as e:
                skipped.append((str(path), str(e).split(": ", 1)[-1]))
            if progress:
                progress(1)
        return done, skipped

    def explain(self, image: ImageLike, *, target: Optional[Union[str, int]] = None, patch: Optional[int] = None,
                stride: Optional[int] = None) -> np.ndarray:
        """Occlusion-sensitivity heatmap of one image: where covering it with a grey square
        lowers the probability of ``target`` most (``edgesight explain`` on a bundle).

        Args:
            image: a file path or a BGR ``uint8`` frame.
            target: the label (or class index) to explain; default: the predicted one.
            patch, stride: the square's side and step in input pixels (default: about a fifth
                of the input side, and half of that).

        Returns:
            float32 ``HxW`` at the model's input size, 0 to 1 (1: what the decision rests on
            most; all 0 when no position lowers the probability).

        Raises:
            ImageReadError: the file is not a readable image.
            ConfigError: ``target`` is not a label, or ``patch``/``stride`` is out of range.
        """
        from .tools.explain import OcclusionExplainer, resolve_target

        model = self._open()
        t = resolve_target(target, self.labels)
        pixels = self._pixels(image)
        with self._lock:
            explainer = OcclusionExplainer(model, self.bundle.model_path, self.bundle.info, patch=patch, stride=stride)
            return explainer.explain(pixels, t).heatmap

    def stream(self, source: Union[str, int] = "0", **options: Any) -> Iterator[Result]:
        """The camera loop as an iterator: classify ``source`` and yield a
        :class:`~edgesight.edge.frames.Result` per frame (``label``, ``score``, ``top_k``,
        ``frame_index``, ``latency_ms``...).

        ``source`` is any ``edgesight run --source`` string (camera index, ``/dev/videoN``,
        ``rtsp://`` URL, video file, image folder or glob, ``picamera2``, ``synthetic``).
        ``options`` are ``edgesight run`` options by field name: ``threshold``, ``smooth``,
        ``hysteresis``, ``top_k``, ``roi``, ``max_frames``, ``duration``, ``width``,
        ``height``, ``fps``, ``realtime``, ``loop``, and ``capture=DIR`` with its
        ``capture_*`` options (frames saved as a dataset to review and train on, as
        ``edgesight run --capture``). Other outputs (``jsonl``, ``http``...) belong to
        ``edgesight run``; here the caller consumes the results.

        A live source (a camera, a stream, ``realtime`` playback) yields the newest result each
        time the caller asks, dropping older ones it did not take; a file or folder yields every
        frame in order. Leaving the ``for`` loop (``break``) stops the source. The stream runs
        on an interpreter of its own, so calling the classifier meanwhile is safe.

        Raises:
            ConfigError: an unknown option or a value out of range (at the call, before any
                frame is read).
        """
        from .loop.config import RunConfig

        cfg = _stream_config(RunConfig, source, options)
        if cfg.capture_dir:
            from .loop.preflight import check_output_path
            from .loop.session import check_labels

            check_labels(cfg, self.labels)
            check_output_path("capture", cfg.capture_dir, "folder")
        model = self._open()
        # CPU interpreters are cheap to duplicate; a delegate's device is not, so it is shared.
        worker = model if model.has_delegates else model.clone(num_threads=model.cpu_threads)
        return self._stream(cfg, worker)

    def _stream(self, cfg: Any, model: TFLiteClassifier) -> Iterator[Result]:
        from .loop.runner import StopFlag, run_loop
        from .loop.session import capture_sink
        from .sinks import AsyncSink, Sink
        from .sources import open_source

        results: "queue.Queue[Any]" = queue.Queue(maxsize=8)
        stop = StopFlag()
        done = object()
        live = threading.Event()

        class _Yield(Sink):
            def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
                while not stop.is_set():
                    if live.is_set():
                        # a camera's consumer wants the newest result, not a backlog: only this
                        # thread puts, so after the drain there is room
                        _drain(results)
                        results.put_nowait(result)
                        return
                    else:
                        # a file's every result reaches the consumer, in order
                        try:
                            results.put(result, timeout=0.1)
                            return
                        except queue.Full:
                            continue

        failure: List[BaseException] = []

        def work() -> None:
            outputs: List[Sink] = []
            try:
                if cfg.capture_dir:
                    outputs.append(AsyncSink(capture_sink(cfg, self)))
                with open_source(cfg.source, width=cfg.width, height=cfg.height, fps=cfg.fps, realtime=cfg.realtime,
                                 loop=cfg.loop, compute_threads=model.cpu_threads, max_pixels=self.max_pixels,
                                 target=None if cfg.roi else self.bundle.info.preprocess.size) as src:
                    if getattr(src, "live", False) or cfg.realtime:
                        live.set()
                    run_loop(model, self.bundle.info, src, [*outputs, _Yield()], cfg.updated(stats_interval=0),
                             stop, printer=log.info)
            except BaseException as e:  # handed to the consumer's thread below
                failure.append(e)
            finally:
                for out in outputs:
                    out.close()
                while True:
                    try:
                        results.put(done, timeout=0.1)
                        break
                    except queue.Full:
                        if stop.is_set() or live.is_set():
                            _drop_oldest(results)

        thread = threading.Thread(target=work, name="edgesight-stream", daemon=True)
        thread.start()
        try:
            while True:
                item = results.get()
                if item is done:
                    break
                yield item
        finally:
            stop.set("stream closed")
            _drain(results)
            thread.join()
        if failure:
            raise failure[0]

    def close(self) -> None:
        """Release the interpreter (and the Edge TPU)."""
        self.model = None  # type: ignore[assignment]

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Classifier({str(self.bundle.root)!r}, labels={self.labels!r})"


STREAM_OPTIONS = ("threshold", "smooth", "hysteresis", "top_k", "roi", "max_frames", "duration",
                  "width", "height", "fps", "realtime", "loop", "frame_workers",
                  "capture", "capture_below", "capture_margin", "capture_every", "capture_random", "capture_max_mb",
                  "capture_label")


def _stream_config(run_config: type, source: Union[str, int], options: dict):
    unknown = sorted(set(options) - set(STREAM_OPTIONS))
    if unknown:
        raise ConfigError(f"stream(): unknown option(s) {', '.join(unknown)}; valid: {', '.join(STREAM_OPTIONS)}")
    return run_config(source=str(source), **options)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _check_decision(top_k: Any, threshold: Any) -> None:
    from .loop.config import RunConfig
    from .options import check_value, spec

    check_value(spec(RunConfig, "top_k"), top_k, "")
    check_value(spec(RunConfig, "threshold"), threshold, "")


def _drop_oldest(q: "queue.Queue[Any]") -> None:
    try:
        q.get_nowait()
    except queue.Empty:
        pass


def _drain(q: "queue.Queue[Any]") -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
