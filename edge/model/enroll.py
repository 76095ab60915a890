"""Few-shot enrolment: a class added from a few images, scored beside the trained classes.

Plain NumPy on the model's embedding output (the pooled features before the classifier head,
``edgesight convert --embedding``); no TensorFlow, no retraining.

**Embeddings.** ``v(x) = e(x) / ||e(x)||`` is the L2-normalised, dequantised embedding of image
``x`` (:meth:`Classifier.embed`). Pooled post-ReLU features are all non-negative, so any two
images have a high cosine; as in SimpleShot (Wang et al., 2019), they are centred before they
are compared: ``u(x) = (v(x) - c) / ||v(x) - c||``, where ``c`` is the mean over the trained
classes of each class's mean ``v`` over the reference images that ``convert`` stores in the
bundle (``reference_embeddings.npy``: a few images per trained class, with their labels).

**Prototype** (weight imprinting, Qi et al., 2018). A class enrolled from shots ``x_1..x_n`` is
represented by ``m = (u(x_1) + ... + u(x_n)) / ||u(x_1) + ... + u(x_n)||``.

**Scores on the trained head's scale.** The model outputs probabilities ``p_1..p_K``
(temperature-calibrated by ``convert``), whose logits are ``l_i = log p_i`` up to a constant
per image. Enrolled class ``e`` gets the logit ``z_e(x) = a_e * cos(u(x), m_e) + b_e`` and
the reported scores are ``softmax(l_1..l_K, z_1..z_M)``, that is::

    P(i | x) = p_i / S,   P(e | x) = exp(z_e) / S,   S = p_1 + ... + p_K + exp(z_1) + ... + exp(z_M).

With one enrolled class, ``P(e | x) = sigmoid(z_e)`` and ``P(i | x) = (1 - P(e | x)) p_i``:
``z_e`` is the log-odds that ``x`` shows ``e`` rather than any trained class, the trained
classes keep their order among themselves, and without enrolled classes the scores are the
model's own. Top-k, ``--threshold`` and ``--smooth`` apply to the whole vector.

**Calibration** of ``(a_e, b_e)`` at enrolment, by weighted logistic regression (Platt
scaling) of "same class or not" on the cosine to the new prototype, from the bundle's reference
embeddings of the trained classes:

* negatives: every reference image against ``m_e``: how close the trained classes come to the
  new class (a trained look-alike shows up here);
* positives, what an unseen image of the new class scores against an ``n``-shot prototype
  (``n`` the number of shots): the trained classes' own ``n``-shot prototypes against their
  other reference images (:data:`DRAWS` draws per class), and with two shots or more each shot
  against the prototype of the others (leave one out), the two sources weighing the same.

The positives weigh ``1 / (K + 1)`` in all and the negatives ``K / (K + 1)`` (every class, trained
or new, weighs the same: the new class is taken to be as common as any other, which keeps an
enrolled class from taking over a trained look-alike's images); a small ridge on ``a`` keeps it
finite when they separate completely. The fit is deterministic (fixed draws), so the same shots
give the same bundle bytes. How well an enrolled class is told from the trained ones is bounded
by the embedding: a backbone trained from scratch on a few classes learns only what separates
them, so a new class may land on a trained look-alike (see ``benchmarks/fewshot.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import numpy as np

# Reference images per trained class that convert stores, and simulated prototypes per class.
REFERENCE_PER_CLASS = 20
DRAWS = 4
RIDGE = 1e-3
# exp() of a logit above this overflows float32 sums; no calibrated cosine comes near it.
_MAX_LOGIT = 60.0


def normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / ||x||`` along ``axis`` (float32; a zero vector stays zero)."""
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, np.float32(1e-12))


@dataclass(frozen=True)
class Reference:
    """Reference embeddings of the trained classes (``reference_embeddings.npy``).

    Attributes:
        embeddings: ``N x D`` L2-normalised embeddings.
        labels: ``N`` trained-class indices.
    """

    embeddings: np.ndarray
    labels: np.ndarray

    @property
    def size(self) -> int:
        return int(self.embeddings.shape[1])

    def centre(self) -> np.ndarray:
        """``c``: the mean over classes of each class's mean embedding."""
        classes = np.unique(self.labels)
        return np.mean([self.embeddings[self.labels == k].mean(0) for k in classes], axis=0).astype(np.float32)


def centred(v: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``u = (v - c) / ||v - c||`` for one embedding or a stack of them."""
    return normalise(normalise(v) - centre)


def prototype(u: np.ndarray) -> np.ndarray:
    """The normalised mean of centred embeddings ``u`` (``n x D``)."""
    return normalise(np.asarray(u, np.float32).mean(0))


def _logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float = RIDGE) -> Tuple[float, float]:
    """Weighted logistic regression ``P(y=1|x) = sigmoid(a x + b)`` by Newton's method."""
    x, y, w = (np.asarray(v, np.float64) for v in (x, y, w))
    a, b = 1.0, 0.0
    for _ in range(100):
        z = np.clip(a * x + b, -_MAX_LOGIT, _MAX_LOGIT)
        p = 1.0 / (1.0 + np.exp(-z))
        r = w * (p - y)
        g = np.array([r @ x + ridge * a, r.sum()])
        h = w * p * (1.0 - p)
        hess = np.array([[h @ (x * x) + ridge, h @ x], [h @ x, h.sum() + 1e-12]])
        step = np.linalg.solve(hess, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-7:
            break
    return float(a), float(b)


def _simulated(reference: Reference, u_ref: np.ndarray, shots: int, rng: np.random.Generator):
    """Cosines of the trained classes' ``shots``-shot prototypes: ``(positives, negatives)``."""
    pos, neg = [], []
    for k in np.unique(reference.labels):
        idx = np.flatnonzero(reference.labels == k)
        if len(idx) <= shots:
            continue
        for _ in range(DRAWS):
            pick = rng.choice(idx, shots, replace=False)
            m = prototype(u_ref[pick])
            rest = np.setdiff1d(idx, pick)
            pos.append(u_ref[rest] @ m)
            neg.append(u_ref[reference.labels != k] @ m)
    if not pos:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(pos), np.concatenate(neg)


def calibrate(u_shots: np.ndarray, reference: Reference, centre: np.ndarray, seed: int = 0,
              prior: Optional[float] = None) -> Tuple[float, float]:
    """``(a, b)`` mapping the cosine to the new prototype onto a logit (see the module text).

    Args:
        u_shots: ``n x D`` centred embeddings of the new class's shots.
        reference: the trained classes' reference embeddings.
        centre: ``c`` of ``reference``.
        prior: the weight of the positives (the negatives weigh ``1 - prior``); default
            ``1 / (K + 1)`` for ``K`` trained classes: every class weighs the same.
    """
    prior = 1.0 / (len(np.unique(reference.labels)) + 1) if prior is None else prior
    u_ref = centred(reference.embeddings, centre)
    n = len(u_shots)
    simulated, _ = _simulated(reference, u_ref, n, np.random.default_rng(seed))
    groups = [simulated]
    if n >= 2:
        total = u_shots.sum(0)
        groups.append(np.array([normalise(total - u) @ u for u in u_shots], np.float32))
    groups = [g for g in groups if len(g)]
    neg = u_ref @ prototype(u_shots)
    x = np.concatenate(groups + [neg])
    y = np.concatenate([np.ones(sum(len(g) for g in groups)), np.zeros(len(neg))])
    # positives and negatives weigh half each; each source of positives weighs the same
    w = np.concatenate([np.full(len(g), prior / len(groups) / len(g)) for g in groups] + [np.full(len(neg), (1 - prior) / len(neg))])
    return _logistic(x, y, w)


@dataclass(frozen=True)
class EnrolledClass:
    """One enrolled class: its prototype ``m`` (centred space) and logit ``a * cos + b``."""

    name: str
    prototype: np.ndarray
    scale: float
    bias: float
    shots: int


def enrol(name: str, embeddings: np.ndarray, reference: Reference, centre: Optional[np.ndarray] = None,
          prior: Optional[float] = None) -> EnrolledClass:
    """Imprint and calibrate a class from the embeddings of its shots (``n x D``, any scale);
    ``prior`` as in :func:`calibrate`."""
    centre = reference.centre() if centre is None else centre
    u = centred(np.atleast_2d(embeddings), centre)
    a, b = calibrate(u, reference, centre, prior=prior)
    return EnrolledClass(name, prototype(u), a, b, len(u))


@dataclass(frozen=True)
class EnrolledSet:
    """The enrolled classes of a bundle, scored after the trained ones (immutable: enrolling
    makes a new set, which a running loop picks up whole)."""

    classes: Tuple[EnrolledClass, ...]
    centre: np.ndarray

    def __post_init__(self) -> None:
        if self.classes:
            object.__setattr__(self, "_m", np.stack([c.prototype for c in self.classes]).astype(np.float32))
            object.__setattr__(self, "_a", np.array([c.scale for c in self.classes], np.float32))
            object.__setattr__(self, "_b", np.array([c.bias for c in self.classes], np.float32))

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def get(self, name: str) -> Optional[EnrolledClass]:
        return next((c for c in self.classes if c.name == name), None)

    def with_class(self, cls: EnrolledClass) -> "EnrolledSet":
        """This set with ``cls`` added, or replacing the class of the same name in its place."""
        if self.get(cls.name) is not None:
            return replace(self, classes=tuple(cls if c.name == cls.name else c for c in self.classes))
        return replace(self, classes=self.classes + (cls,))

    def without(self, name: str) -> "EnrolledSet":
        return replace(self, classes=tuple(c for c in self.classes if c.name != name))

    def logits(self, embedding: np.ndarray) -> np.ndarray:
        """``z_e`` of every enrolled class for one embedding (dequantised, any scale)."""
        u = centred(embedding, self.centre)
        return np.clip(self._a * (self._m @ u) + self._b, -_MAX_LOGIT, _MAX_LOGIT)

    def combine(self, probs: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        """``softmax(log p, z)``: the trained probabilities followed by the enrolled ones."""
        if not self.classes:
            return probs
        ez = np.exp(self.logits(embedding)).astype(np.float32)
        p = np.asarray(probs, np.float32)
        return np.concatenate([p, ez]) / np.float32(p.sum() + ez.sum())


def check_name(name: str, trained: Sequence[str], where: str) -> str:
    """An enrolment name: one line, not empty, not ``unknown``, not a trained class.

    Raises:
        ValueError: the message says what is wrong and the fix.
    """
    text = str(name).strip()
    if not text or "\n" in text or "\r" in text or len(text) > 100:
        raise ValueError(f"class name {name!r} must be one line of 1 to 100 characters; give a short name")
    if text == "unknown":
        raise ValueError("'unknown' is what a result below --threshold is called; choose another class name")
    if text in trained:
        raise ValueError(f"'{text}' is already a trained class of {where}; choose another name "
                         "(a trained class cannot be replaced by enrolment)")
    return text
