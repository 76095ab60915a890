"""The one module that imports a LiteRT backend.

Backends are tried in order: ``ai_edge_litert`` (current LiteRT), ``tflite_runtime`` (older
Raspberry Pi OS images; NumPy 1.x only) and ``tensorflow.lite`` (when TensorFlow happens to be
installed). Nothing is imported until a model is loaded.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import BundleError, MissingDependencyError
from ..native_log import native_output
from .quant import dequantize, input_feeder, softmax

BACKENDS = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow.lite", "tensorflow.lite"),
)


@dataclass(frozen=True)
class Backend:
    name: str
    version: str
    interpreter_class: Callable[..., Any]
    load_delegate: Optional[Callable[..., Any]]


def _import_backend(name: str, module: str) -> Backend:
    if name == "tensorflow.lite":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with native_output("importing TensorFlow"):
            tf = importlib.import_module("tensorflow")
        lite = tf.lite
        return Backend(name, str(getattr(tf, "__version__", "unknown")), lite.Interpreter, getattr(lite.experimental, "load_delegate", None))
    with native_output(f"importing {name}"):
        mod = importlib.import_module(module)
    top = importlib.import_module(name.split(".")[0])
    return Backend(name, str(getattr(top, "__version__", "unknown")), mod.Interpreter, getattr(mod, "load_delegate", None))


def probe_backends() -> List[Tuple[str, Optional[Backend], str]]:
    """Try every backend: ``(name, backend or None, why it failed)`` in preference order."""
    out: List[Tuple[str, Optional[Backend], str]] = []
    for name, module in BACKENDS:
        try:
            out.append((name, _import_backend(name, module), ""))
        except Exception as e:  # a backend built for another NumPy raises more than ImportError
            out.append((name, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    return out


def load_backend(prefer: Optional[str] = None) -> Backend:
    """Import the first LiteRT backend that loads (or only ``prefer``).

    Raises:
        MissingDependencyError: none of the backends can be imported.
    """
    errors: List[str] = []
    for name, module in BACKENDS:
        if prefer and name != prefer:
            continue
        try:
            return _import_backend(name, module)
        except Exception as e:  # a backend built for another NumPy raises more than ImportError
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise MissingDependencyError(
        "no LiteRT interpreter could be imported (" + "; ".join(errors) + "); install one with: pip install ai-edge-litert"
    )


EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
EDGETPU_INSTALL = (
    "install the Edge TPU runtime from Coral's apt repository (sudo apt-get install libedgetpu1-std; "
    "see https://coral.ai/docs/accelerator/get-started/) and connect the accelerator"
)


def edgetpu_delegate(backend: Backend, device: Optional[str] = None):
    """Load the Coral Edge TPU delegate (``libedgetpu.so.1`` on Linux).

    Args:
        backend: the LiteRT backend whose ``load_delegate`` to use.
        device: ``usb``, ``pci``, ``usb:0``... to pick one accelerator (None: the first).

    Raises:
        MissingDependencyError: the runtime library or the device is missing, with how to fix it.
    """
    import platform

    import ctypes

    lib = EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")
    if backend.load_delegate is None:
        raise MissingDependencyError(f"the {backend.name} backend cannot load delegates; pip install ai-edge-litert")
    try:
        # Probe the library first: LiteRT's Delegate raises a second, confusing error from
        # its destructor when the library is missing.
        ctypes.CDLL(lib)
        return backend.load_delegate(lib, {"device": device} if device else {})
    except (ValueError, OSError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MissingDependencyError(f"the Edge TPU delegate {lib} could not be loaded ({reason}); {EDGETPU_INSTALL}") from e


@dataclass(frozen=True)
class TensorInfo:
    name: str
    index: int
    shape: Tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.dtype.kind in "iu" and self.scale != 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name, "scale": self.scale, "zero_point": self.zero_point}


def _tensor_info(d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(d["name"], int(d["index"]), tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]), float(scale), int(zp))


# Roles of a model's outputs: the class scores, and the optional feature vector before the
# classifier head (``edgesight convert --embedding``).
SCORES, EMBEDDING = "scores", "embedding"
# The names edgesight's TFLite metadata gives those outputs.
_METADATA_ROLES = {"probability": SCORES, "embedding": EMBEDDING}


def pick_outputs(outs: Sequence[dict], described: Optional[Mapping[str, Any]], model: Union[str, Path, bytes],
                 where: str) -> Tuple[dict, Optional[dict]]:
    """The output details of the class scores and of the embedding (None when the model has
    none), found by name, never by position: a converter may list two outputs in any order.

    Args:
        outs: the interpreter's output details.
        described: model.json's ``outputs`` (``{"scores": {"name": ...}, "embedding": {...}}``);
            without it a second output is identified by the model's TFLite metadata.
        model: the model (path or bytes), to read that metadata.
        where: the model, for messages.

    Raises:
        BundleError: a described tensor is missing, an output is not described, or nothing
            says which of two outputs holds the scores.
    """
    if described:
        by_name = {d["name"]: d for d in outs}
        picked = {}
        for role in (SCORES, EMBEDDING):
            entry = described.get(role)
            if not isinstance(entry, Mapping):
                continue
            name = entry.get("name")
            if name not in by_name:
                raise BundleError(f"{where}: model.json outputs.{role} names tensor {name!r}, which the model does not have "
                                  f"({', '.join(map(repr, by_name))}); copy the whole bundle again or re-run 'edgesight convert'")
            picked[role] = by_name[name]
        if SCORES not in picked or len(picked) != len(outs):
            raise BundleError(f"{where}: {len(outs)} output tensors but model.json outputs describes {', '.join(picked) or 'none'}; "
                              "copy the whole bundle again or re-run 'edgesight convert'")
        return picked[SCORES], picked.get(EMBEDDING)
    if len(outs) == 1:
        return outs[0], None
    if len(outs) == 2:
        from .metadata import read_metadata

        try:
            meta = read_metadata(model if isinstance(model, bytes) else Path(model).read_bytes(), source=where)
        except (BundleError, OSError):
            meta = None
        roles = [_METADATA_ROLES.get(n) for n in (meta.output_names if meta else ())]
        if sorted(r for r in roles if r) == [EMBEDDING, SCORES]:
            found = dict(zip(roles, outs))
            return found[SCORES], found[EMBEDDING]
    raise BundleError(f"{where}: {len(outs)} output tensors and nothing says which holds the class scores; "
                      "use the bundle folder (its model.json describes the outputs) or convert the model with edgesight")


class TFLiteClassifier:
    """A TFLite image classifier: uint8 pixels in, class probabilities out.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        num_threads: interpreter threads (None: the backend's default).
        delegates: delegate objects (e.g. the Edge TPU's) to attach.
        output: ``probabilities`` or ``logits`` (softmax is applied to logits).
        input_mean, input_std: caller-side normalisation for float inputs (from model.json).
        backend: a loaded :class:`Backend` (default: :func:`load_backend`).
        outputs: model.json's ``outputs``, naming the scores and embedding tensors (see
            :func:`pick_outputs`).

    Attributes:
        embedding_tensor: the embedding output, or None.
        enrolled: classes enrolled from a few images
            (:class:`~edgesight.edge.model.enroll.EnrolledSet`), scored after the trained ones
            by :meth:`output_probabilities`; shared with clones, so an enrolment reaches every
            interpreter of a running loop.

    Raises:
        BundleError: the file is not a TFLite model or its input is not an image.
    """

    def __init__(
        self,
        model: Union[str, Path, bytes],
        num_threads: Optional[int] = None,
        delegates: Sequence[Any] = (),
        output: str = "probabilities",
        input_mean: float = 0.0,
        input_std: float = 1.0,
        backend: Optional[Backend] = None,
        outputs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.backend = backend or load_backend()
        self._model = model
        self.has_delegates = bool(delegates)
        where = str(model) if not isinstance(model, bytes) else "<model bytes>"
        kwargs: dict = {"num_threads": num_threads}
        if delegates:
            kwargs["experimental_delegates"] = list(delegates)
        if isinstance(model, bytes):
            kwargs["model_content"] = model
        else:
            if not Path(model).is_file():
                raise BundleError(f"{model}: model file not found")
            kwargs["model_path"] = str(model)
        try:
            # LiteRT announces its XNNPACK delegate on fd 2 here; -v shows it, errors keep it.
            with native_output(f"loading {where}"):
                self._interp = self.backend.interpreter_class(**kwargs)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{where}: not a loadable TFLite model ({str(e).splitlines()[0] if str(e) else type(e).__name__}); give a .tflite file written by a TFLite converter") from e
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or not 1 <= len(outs) <= 2:
            raise BundleError(f"{where}: expected one input and one or two output tensors, found {len(ins)} and {len(outs)}")
        scores, embedding = pick_outputs(outs, outputs, model, where)
        self._outputs = outputs
        self.input = _tensor_info(ins[0])
        self.output_tensor = _tensor_info(scores)
        self.embedding_tensor = _tensor_info(embedding) if embedding is not None else None
        self._enrolled: List[Any] = [None]
        shape = self.input.shape
        if len(shape) != 4 or shape[3] not in (1, 3):
            raise BundleError(f"{where}: input shape {shape} is not an image (expected 1 x height x width x 1 or 3)")
        self.output_kind = output
        self.input_mean, self.input_std = float(input_mean), float(input_std)
        # CPU threads inference keeps busy (an accelerator leaves the CPU to the rest of the loop).
        self.cpu_threads = 1 if delegates else max(1, num_threads or 1)
        self._feed = input_feeder(self.input.dtype, self.input.scale, self.input.zero_point, self.input_mean, self.input_std)
        self._input_shape = self.input.shape

    def clone(self, num_threads: Optional[int] = None) -> "TFLiteClassifier":
        """Another interpreter of the same model and settings (no delegates), for another thread."""
        twin = type(self)(self._model, num_threads=num_threads, output=self.output_kind, input_mean=self.input_mean,
                          input_std=self.input_std, backend=self.backend, outputs=self._outputs)
        twin._enrolled = self._enrolled
        return twin

    @property
    def input_size(self) -> Tuple[int, int]:
        return self.input.shape[1], self.input.shape[2]

    @property
    def num_classes(self) -> int:
        return int(self.output_tensor.shape[-1])

    @property
    def enrolled(self) -> Any:
        return self._enrolled[0]

    @enrolled.setter
    def enrolled(self, value: Any) -> None:
        # One holder for this interpreter and its clones: replacing the set is one assignment.
        self._enrolled[0] = value if value is not None and len(value) else None

    @property
    def enrolled_names(self) -> Tuple[str, ...]:
        """Names of the enrolled classes, in score order after the trained ones."""
        e = self._enrolled[0]
        return e.names if e is not None else ()

    @property
    def num_scores(self) -> int:
        """Entries of :meth:`output_probabilities`: trained classes plus enrolled ones."""
        return self.num_classes + len(self.enrolled_names)

    def set_pixels(self, pixels: np.ndarray) -> None:
        """Load one ``HxWxC`` uint8 image (already resized) into the input tensor."""
        self._interp.set_tensor(self.input.index, self._feed(pixels).reshape(self._input_shape))

    def invoke(self) -> None:
        self._interp.invoke()

    def raw_output(self) -> np.ndarray:
        return self._interp.get_tensor(self.output_tensor.index)[0]

    def output_probabilities(self) -> np.ndarray:
        """The current output as float32 probabilities (dequantised; softmax for logits),
        followed by those of the enrolled classes when there are any."""
        out = self.raw_output()
        if self.output_tensor.quantized:
            out = dequantize(out, self.output_tensor.scale, self.output_tensor.zero_point)
        else:
            out = out.astype(np.float32)
        probs = softmax(out) if self.output_kind == "logits" else out
        enrolled = self._enrolled[0]
        if enrolled is not None:
            probs = enrolled.combine(probs, self.output_embedding())
        return probs

    def output_embedding(self) -> np.ndarray:
        """The current embedding output as a float32 vector (dequantised, not normalised).

        Raises:
            BundleError: the model has no embedding output.
        """
        t = self.embedding_tensor
        if t is None:
            raise BundleError("this model has no embedding output; convert it again with 'edgesight convert --embedding'")
        raw = self._interp.get_tensor(t.index)[0]
        return dequantize(raw, t.scale, t.zero_point) if t.quantized else raw.astype(np.float32)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for one uint8 image, ``HxWxC`` at the model's input size."""
        self.set_pixels(pixels)
        self.invoke()
        return self.output_probabilities()

    def predict_batch(self, batch: np.ndarray, progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """Probabilities for ``NxHxWxC`` uint8 images, one invoke each (the model has batch 1)."""
        out = np.zeros((len(batch), self.num_scores), np.float32)
        for i, img in enumerate(batch):
            out[i] = self.predict(img)
            if progress:
                progress(1)
        return out
