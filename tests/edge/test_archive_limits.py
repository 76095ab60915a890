"""Reading a deploy archive refuses one that would unpack past its size limits (a gzip bomb)."""

import gzip
import io
import tarfile

import pytest

from tests.conftest import run_cli

from edgesight.edge.errors import BundleError
from edgesight.edge.fleet import archive as A


def _header_only(name: str, size: int) -> bytes:
    """A .tar.gz whose one entry claims ``size`` bytes: what a bomb's header says, without the bomb."""
    info = tarfile.TarInfo(f"{A.TOP}/{name}")
    info.size = size
    return gzip.compress(info.tobuf(format=tarfile.USTAR_FORMAT))


def test_the_limits_fit_a_model_and_a_wheelhouse():
    assert A.MAX_MEMBER_BYTES == 512 << 20 and A.MAX_ARCHIVE_BYTES == 1 << 30


def test_a_member_over_the_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(_header_only("model/model.tflite", A.MAX_MEMBER_BYTES + 1))
    with pytest.raises(BundleError) as e:
        A.verify_archive(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "512 MiB limit" in msg and "model/model.tflite" in msg


def test_real_members_over_the_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(A, "MAX_MEMBER_BYTES", 3000)
    monkeypatch.setattr(A, "MAX_ARCHIVE_BYTES", 5000)
    path = tmp_path / "a.tar.gz"
    path.write_bytes(A.archive_bytes({"MANIFEST.json": b"{}", "big.bin": bytes(4000)}))
    with pytest.raises(BundleError, match="over the 0 MiB limit of one deploy archive file"):
        A.extract_archive(path, tmp_path / "out")
    path.write_bytes(A.archive_bytes({"MANIFEST.json": b"{}", "a.bin": bytes(2900), "b.bin": bytes(2900)}))
    with pytest.raises(BundleError, match="unpacks to more than 0 MiB, the limit of a deploy archive"):
        A.extract_archive(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(A, "MAX_MEMBERS", 2)
    path.write_bytes(A.archive_bytes({"MANIFEST.json": b"{}", "a": b"", "b": b""}))
    with pytest.raises(BundleError, match="more than 2 entries"):
        A.verify_archive(path)


def test_deploy_names_the_archive_and_the_limit_and_stages_nothing(tmp_path, capsys):
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(_header_only("wheels/huge.whl", 600 << 20))
    target = tmp_path / "card"
    (target / "etc").mkdir(parents=True)
    code, out, err = run_cli(["deploy", path, "--target", target, "--allow-unsigned"], capsys)
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("WARNING")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in lines[0] and "600 MiB" in lines[0] and "512 MiB limit" in lines[0]
    assert [p.name for p in target.rglob("*")] == ["etc"]
