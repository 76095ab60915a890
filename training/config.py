"""``TrainConfig``: every training option, declared once.

The ``train`` command's flags, ``--config`` YAML files, the device profiles' training recipe
and the Python API (``edgesight.train``) all derive from these fields (see
:mod:`edgesight.edge.options`). The resolved config is saved into the run folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import yaml

from edgesight.edge import options
from edgesight.edge.fsutil import write_text
from edgesight.edge.model.spec import COLORS, INTERPOLATIONS, RESIZE_MODES

from .backbones import POOLINGS, list_backbones

AUGMENT_PRESETS = ("auto", "none", "light", "standard", "strong", "robust")
CLASS_WEIGHTS = ("auto", "balanced", "none")
STRATEGIES = ("none", "mirrored", "multiworker")
TASKS = ("classify", "anomaly")
ANOMALY_METHODS = ("patchcore", "padim", "autoencoder")
ALIGN_MODES = ("auto", "euclidean", "none")
CACHE_MODES = ("memory", "disk", "none")
opt = options.option


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``edgesight train``. Field names are the ``--config`` YAML keys and, with
    ``-`` for ``_``, the flags (``learning_rate`` is ``--lr``).

    ``img_size`` and ``weights`` may be left ``None`` to use the backbone's defaults.
    """

    data: str = opt("", "Dataset: class folders (optionally under train/ val/ test/) or a CSV of path,label rows.", cli=False)
    out: str = opt("runs/train", "Run folder to create.", short="o")
    model: str = opt("cnn_small", "Backbone.", choices=list_backbones())
    img_size: Optional[int] = opt(None, "Square input side in pixels (default: the backbone's; 64 for cnn_small, 224 otherwise).", min=8)
    img_height: Optional[int] = opt(None, "Input height when it differs from the width (overrides --img-size).", min=8)
    img_width: Optional[int] = opt(None, "Input width when it differs from the height (overrides --img-size).", min=8)
    color: str = opt("rgb", "Colour mode of the model's input.", choices=COLORS)
    resize: str = opt("stretch", "How images of another aspect ratio are fitted: stretch, crop (centre) or pad (letterbox).", choices=RESIZE_MODES)
    interpolation: str = opt("bilinear", "OpenCV interpolation for resizing; the runtime uses the same (area: a box filter, smoother when shrinking camera frames a lot, about 10x slower per frame on the device).", choices=INTERPOLATIONS)
    weights: Optional[str] = opt(None, "imagenet, none, or a path to a local weights file (default: imagenet for pretrained backbones).")
    init_from: Optional[str] = opt(None, "Continue from an earlier run's model: its backbone, input size, colour and pooling unless given; "
                                   "its classes kept by name, new classes added; fewer epochs unless given (printed).", metavar="RUN")
    alpha: float = opt(1.0, "Width multiplier.", min=0.0, min_open=True)
    dropout: float = opt(0.2, "Dropout before the classifier head.", min=0.0, max=0.99)
    pooling: str = opt("avg", "How the backbone's last feature map becomes the feature vector before the head (the bundle's embedding): "
                       "avg, or max (each channel's strongest response anywhere in the image; better embeddings for enrolling new "
                       "classes, see benchmarks/fewshot.py).", choices=POOLINGS)
    epochs: Optional[int] = opt(None, "Epochs (phase 1 for pretrained backbones; default: 20, 8 with --init-from).", min=1)
    batch_size: int = opt(32, "Images per batch.", min=1)
    learning_rate: float = opt(1e-3, "Learning rate (Adam); the --config key is learning_rate.", flag="lr", min=0.0, min_open=True)
    label_smoothing: float = opt(0.1, "Label smoothing of the cross-entropy loss.", min=0.0, max=0.99)
    class_weights: str = opt("auto", "Weigh classes by inverse frequency: balanced always, auto when the largest class has more than 3x the images of the smallest.", choices=CLASS_WEIGHTS)
    augment: str = opt("auto", "Augmentation strength: rotation, zoom, translation, brightness, contrast (+ flips); robust: light geometry plus camera corruptions (occlusion, blur, exposure, low contrast or a bright veil, noise, JPEG), ramped up over the first 8,000 images; it needs about 30 epochs; auto: light for pretrained backbones or large datasets, standard for small ones from scratch (printed).", choices=AUGMENT_PRESETS)
    hflip: Optional[bool] = opt(None, "Random horizontal flips (default: on unless a mirrored class looks like another class or a class name says left/right; printed). Turn off when a mirror image is another class (traffic signs, text).", negatable=True)
    early_stopping: int = opt(5, "Patience in epochs on validation loss (0 disables).", min=0)
    time_limit: float = opt(0.0, "Seconds of training at most (0: none): no epoch is started that would end past it; the best epoch is kept.", min=0.0)
    reduce_lr_patience: int = opt(3, "Epochs without improvement before the learning rate halves.", min=1)
    feature_copies: int = opt(4, "Phase 1 of transfer learning trains the head on cached backbone features of each training image and this many minus one augmented copies (0: run the backbone every epoch instead).", min=0)
    fine_tune_layers: int = opt(60, "Top backbone layers unfrozen in phase 2 (0: all).", min=0)
    fine_tune_epochs: Optional[int] = opt(None, "Epochs of phase 2 (fine-tuning with AdamW, a one-epoch warm-up and cosine decay) for pretrained backbones (default: 10 with pretrained weights, 3 with --init-from, 0 otherwise).", min=0)
    fine_tune_lr: float = opt(1e-4, "Peak learning rate of phase 2.", min=0.0, min_open=True)
    val_split: float = opt(0.1, "Share of each class held out for validation (when DATA is not pre-split).", min=0.0, max=0.9)
    test_split: float = opt(0.1, "Share of each class held out for the test report (when DATA is not pre-split).", min=0.0, max=0.9)
    seed: int = opt(42, "Seed of the split, the initialisation and augmentation.")
    deterministic: bool = opt(False, "Deterministic TensorFlow ops (bit-identical reruns, slower).")
    strategy: str = opt("none", "tf.distribute strategy; multiworker reads TF_CONFIG (one process per machine, see the README).", choices=STRATEGIES)
    worker_timeout: float = opt(300.0, "multiworker: seconds to wait for the other workers to join, and at each exchange, before stopping with an error.", min=1.0)
    cache: str = opt("memory", "Where decoded images are cached between epochs.", choices=CACHE_MODES)
    probe: bool = opt(True, "With pretrained weights, also fit a linear probe on the frozen backbone's features and report it beside the model.")
    task: str = opt("classify", "classify: a classifier of the class folders; anomaly: a detector of anything unlike DATA, a folder of good images only (see the README's anomaly detection).", choices=TASKS)
    anomaly_method: str = opt("padim", "--task anomaly: patchcore (nearest good patch), padim (a Gaussian per image location) or autoencoder (reconstruction error).", choices=ANOMALY_METHODS, flag="method")
    defects: Optional[str] = opt(None, "--task anomaly: a folder of defect images (sub-folders name the kinds), for the report and the best-F1 threshold; never trained on.", metavar="DIR")
    false_reject: float = opt(0.01, "--task anomaly: share of held-out good images the threshold may flag (held out: --val-split + --test-split of the good images, at least 10).", min=0.0, max=0.5, min_open=True)
    align: str = opt("auto", "--task anomaly: align every image to the mean good image (shift and rotation) before scoring; "
                     "auto: when the good images show one part in about the same place (printed).", choices=ALIGN_MODES)
    image_score: str = opt("max", "--task anomaly: an image's score from its patches' scores: max (a defect anywhere: QC parts) or "
                           "mean (the whole image unlike the good ones: another kind of item).", choices=("max", "mean"))
    memory_bank: int = opt(2000, "--task anomaly --method patchcore: good patches kept (greedy coreset); more is slower per frame.", min=1)
    overwrite: bool = opt(False, "Replace an existing run folder.")

    def __post_init__(self) -> None:
        options.validate(self)

    def input_size(self, default: int) -> tuple:
        """(height, width) from ``img_size`` or ``img_height``/``img_width``, else ``default``."""
        h = self.img_height or self.img_size or default
        w = self.img_width or self.img_size or default
        return int(h), int(w)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        """The options as ``--config`` reads them; ``overwrite`` is left out (it is what one run
        was allowed to do, not a setting to repeat)."""
        d = self.to_dict()
        d.pop("overwrite")
        return yaml.safe_dump(d, sort_keys=False)

    def save(self, path: Path) -> None:
        write_text(path, self.to_yaml())

    def updated(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)

    @staticmethod
    def size_given(values: Dict[str, Any], given: Mapping[str, Any]) -> Dict[str, Any]:
        """``values`` where an ``img_size`` given on the command line (or as a keyword) wins
        over the ``img_height``/``img_width`` of a config file, as a flag wins over a file."""
        if given.get("img_size") is not None:
            for key in ("img_height", "img_width"):
                if key not in given:
                    values[key] = None
        return values

    @staticmethod
    def adjust(values: Dict[str, Any], given: Mapping[str, Any]) -> Dict[str, Any]:
        """:meth:`size_given`, then the options an ``init_from`` run settles when they are not
        set (see :func:`edgesight.training.initfrom.inherit`)."""
        from .initfrom import inherit

        return inherit(TrainConfig.size_given(values, given))

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str = "config") -> "TrainConfig":
        return options.make(cls, options.from_mapping(cls, d, where), where)

    @classmethod
    def from_yaml(cls, path: Path) -> "TrainConfig":
        return options.make(cls, options.load_file(cls, path), str(path))
