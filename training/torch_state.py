"""Read a PyTorch tensor state dict from a legacy (non-zip) ``torch.save`` file, without torch.

Pretrained backbones are often published only as ``.pth`` files. Installing PyTorch just to read
them would add a very large dependency, and ``pickle.load`` (which ``torch.load`` used to default
to) runs whatever code the file names. This module parses the file with a restricted unpickler
that can rebuild tensors and nothing else, and returns NumPy arrays.

The legacy format is a sequence of pickles followed by raw data::

    pickle(MAGIC_NUMBER) pickle(PROTOCOL_VERSION) pickle(sys_info) pickle(obj) pickle(storage_keys)
    then, for each key in storage_keys: int64 element count (little-endian) + the raw elements

Tensors inside ``obj`` refer to storages by key through pickle's persistent ids; the storage bytes
only come after ``obj``, so tensors are first recorded as references and filled in at the end.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, Optional, Tuple, Union

import numpy as np

from edgesight.edge.errors import BundleError

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001
_ZIP_SIGNATURE = b"PK\x03\x04"
_RESAVE_HINT = (
    "re-save the state dict with torch.save(state_dict, path, _use_new_zipfile_serialization=False)"
)


@dataclass(frozen=True)
class _StorageType:
    """Stands in for a ``torch.*Storage`` class named in the pickle."""

    name: str
    file_dtype: np.dtype  # how the elements are laid out in the file (always little-endian)


@dataclass
class _Storage:
    """A storage announced by a persistent id; ``data`` is filled once the raw bytes are read."""

    storage_type: _StorageType
    numel: int
    data: Optional[np.ndarray] = None


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as ``_rebuild_tensor_v2`` describes it, before its storage's bytes are read."""

    storage: Any
    offset: Any
    shape: Any
    stride: Any


def _le(code: str) -> np.dtype:
    return np.dtype(code).newbyteorder("<")


# torch writes storage elements little-endian whatever the host, so the dtypes are fixed.
# bfloat16 has no NumPy dtype: it is read as raw 16-bit words and widened to float32 exactly.
_STORAGE_TYPES = {
    name: _StorageType(name, _le(code))
    for name, code in {
        "DoubleStorage": "f8",
        "FloatStorage": "f4",
        "HalfStorage": "f2",
        "BFloat16Storage": "u2",
        "LongStorage": "i8",
        "IntStorage": "i4",
        "ShortStorage": "i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    metadata: Any = None,
) -> _TensorRef:
    # requires_grad, hooks and metadata only matter to autograd, not to the values.
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> Any:
    return data


# The only globals a tensor state dict needs. Everything else is refused before it can run.
_ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only tensor-rebuilding globals and records storage references."""

    def __init__(self, file: BinaryIO, path: Path, storages: Dict[str, _Storage]) -> None:
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise BundleError(
                f"{self._path}: refusing to load global {module}.{name}; "
                "only PyTorch tensor state dicts are accepted"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise BundleError(
                f"{self._path}: unexpected persistent id {pid!r:.80}; "
                "only PyTorch tensor state dicts are accepted"
            )
        _, storage_type, key, _location, numel, view_metadata = pid
        if not (
            isinstance(storage_type, _StorageType)
            and isinstance(key, str)
            and type(numel) is int
            and numel >= 0
        ):
            raise BundleError(f"{self._path}: malformed storage reference {pid!r:.80}; {_RESAVE_HINT}")
        if view_metadata is not None:
            # Storage views were last written by PyTorch 0.3; a current torch.save never makes them.
            raise BundleError(f"{self._path}: uses PyTorch 0.3 storage views; {_RESAVE_HINT}")
        storage = self._storages.setdefault(key, _Storage(storage_type, numel))
        if storage.storage_type != storage_type or storage.numel != numel:
            raise BundleError(f"{self._path}: storage {key} is declared twice, differently; {_RESAVE_HINT}")
        return storage


def _read_storage_data(f: BinaryIO, path: Path, key: str, storage: _Storage, end: int) -> None:
    """Read one storage's element count and raw elements from the current position of ``f``."""
    header = f.read(8)
    if len(header) != 8:
        raise BundleError(f"{path}: truncated before the data of storage {key}; download it again")
    (numel,) = struct.unpack("<q", header)
    if numel != storage.numel:
        raise BundleError(
            f"{path}: storage {key} holds {numel} elements but its tensors expect "
            f"{storage.numel}; the file is corrupt, download it again"
        )
    file_dtype = storage.storage_type.file_dtype
    nbytes = numel * file_dtype.itemsize
    # Checked before reading so that a corrupt count cannot make us allocate gigabytes.
    if nbytes > end - f.tell():
        raise BundleError(f"{path}: truncated inside the data of storage {key}; download it again")
    data = np.frombuffer(f.read(nbytes), dtype=file_dtype)
    if storage.storage_type.name == "BFloat16Storage":
        # bfloat16 is the upper half of a float32, so the widening is exact.
        data = (data.astype("<u4") << 16).view("<f4")
    storage.data = data


def _materialize(ref: _TensorRef, path: Path, name: str) -> np.ndarray:
    """Turn a tensor reference into a C-contiguous array, checking it stays inside its storage."""
    storage, offset, shape, stride = ref.storage, ref.offset, ref.shape, ref.stride
    well_formed = (
        isinstance(storage, _Storage)
        and storage.data is not None
        and type(offset) is int
        and offset >= 0
        and isinstance(shape, tuple)
        and isinstance(stride, tuple)
        and len(shape) == len(stride)
        and all(type(n) is int and n >= 0 for n in shape)
        and all(type(s) is int and s >= 0 for s in stride)
    )
    if not well_formed:
        raise BundleError(f"{path}: tensor {name!r} is malformed; {_RESAVE_HINT}")
    data = storage.data
    if 0 in shape:
        return np.zeros(shape, dtype=data.dtype)
    # as_strided does no bounds checking: a hostile shape/stride must not read outside the buffer.
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
    if last >= data.size:
        raise BundleError(
            f"{path}: tensor {name!r} reaches element {last} of a storage of {data.size}; "
            "the file is corrupt, download it again"
        )
    view = np.lib.stride_tricks.as_strided(
        data[offset:],
        shape=shape,
        strides=tuple(s * data.itemsize for s in stride),
        writeable=False,
    )
    return view.copy(order="C")


def load_torch_state_dict(path: Union[str, "os.PathLike[str]"]) -> Dict[str, np.ndarray]:
    """Load a tensor state dict saved by ``torch.save`` in the legacy (non-zip) format.

    No code from the file is executed: the unpickler accepts only the globals needed to rebuild
    tensors (``torch._utils._rebuild_tensor_v2``, ``collections.OrderedDict``, ``torch.*Storage``).

    Args:
        path: The ``.pth`` file.

    Returns:
        Parameter name to C-contiguous array, in file order. Storage dtypes map to the NumPy
        dtype of the same width (float32, float16, int64, ...); bfloat16 is widened to float32.
        ``num_batches_tracked`` entries are returned like any other tensor.

    Raises:
        BundleError: If the file cannot be read, is empty, is a zip-format torch file or not a
            torch file at all, is truncated or corrupt, names a global other than the tensor
            rebuilders above, or holds something other than a flat dict of tensors.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise BundleError(f"{path}: cannot open ({exc.strerror}); check the path") from None
    with f:
        end = os.fstat(f.fileno()).st_size
        head = f.read(len(_ZIP_SIGNATURE))
        f.seek(0)
        if not head:
            raise BundleError(f"{path}: the file is empty; download it again")
        if head == _ZIP_SIGNATURE:
            raise BundleError(
                f"{path}: is a zip-format PyTorch checkpoint, and only the legacy format is "
                f"supported; {_RESAVE_HINT}"
            )
        storages: Dict[str, _Storage] = {}
        try:
            magic = _RestrictedUnpickler(f, path, storages).load()
            if magic != _MAGIC_NUMBER:
                raise pickle.UnpicklingError("wrong magic number")
            protocol = _RestrictedUnpickler(f, path, storages).load()
            if protocol != _PROTOCOL_VERSION:
                raise BundleError(
                    f"{path}: legacy torch protocol {protocol!r} is not supported "
                    f"(expected {_PROTOCOL_VERSION}); {_RESAVE_HINT}"
                )
            _RestrictedUnpickler(f, path, storages).load()  # sys_info: data is little-endian anyway
            obj = _RestrictedUnpickler(f, path, storages).load()
            keys = _RestrictedUnpickler(f, path, storages).load()
        except BundleError:
            raise
        except Exception as exc:
            raise BundleError(
                f"{path}: not a PyTorch checkpoint in the legacy torch.save format "
                f"({type(exc).__name__}: {exc}); pass the .pth of a tensor state dict"
            ) from None

        if not (isinstance(keys, list) and sorted(keys) == sorted(storages)):
            raise BundleError(f"{path}: storage list does not match the tensors; download it again")
        for key in keys:
            _read_storage_data(f, path, key, storages[key], end)

    if not isinstance(obj, dict):
        raise BundleError(
            f"{path}: holds a {type(obj).__name__}, not a tensor state dict; "
            "save model.state_dict() instead"
        )
    state: Dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not (isinstance(name, str) and isinstance(value, _TensorRef)):
            raise BundleError(
                f"{path}: entry {name!r:.60} is not a named tensor; only flat tensor state dicts "
                "are accepted, save model.state_dict() instead"
            )
        state[name] = _materialize(value, path, name)
    return state
