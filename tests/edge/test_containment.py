"""Crafted inputs stay contained: SD-card targets, profile and model.json paths, the service user,
edited archives and releases, unverified models, and the atomic swaps of a release.

Each test builds its crafted input here (an archive, a target root, a profile or a bundle); the
numbers in the comments are the cases of the deployment issue they cover.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgesight.edge.classifier import Classifier
from edgesight.edge.errors import BundleError, ProfileError
from edgesight.edge.fleet.archive import TOP, archive_bytes, build_deploy_archive, deploy_files, extract_archive, verify_archive
from edgesight.edge.fleet.profiles import load_preset, load_profile, resolve
from edgesight.edge.fleet.render import render_unit
from edgesight.edge.fleet.ssh import remote_script
from edgesight.edge.fsutil import replace_dir, write_bytes, write_json
from edgesight.edge.model.bundle import load_bundle
from edgesight.edge.model.spec import ModelInfo, PreprocessSpec, write_model_info
from tests.conftest import run_cli
from tests.edge.test_profiles import snapshot


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_bundle(folder: Path) -> Path:
    """A bundle as `edgesight convert` writes it; its .tflite bytes are opaque to these tests."""
    folder.mkdir(parents=True)
    data = b"TFL3" + bytes(range(256)) * 4
    (folder / "model.tflite").write_bytes(data)
    info = ModelInfo(labels=("ok", "defect"), preprocess=PreprocessSpec(height=96, width=96))
    write_model_info(folder, info.with_extra(model_file="model.tflite", sha256=sha(data)))
    return folder


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    path.write_text(json.dumps(data))


def write_profile(path: Path, **runtime) -> Path:
    data = {"name": "testbox", "description": "a crafted device",
            "runtime": {"source": "synthetic:64x48@10", "headless": True, "status_file": "status.json", **runtime},
            "os": {"requirements": []}, "service": {"groups": []}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_archive(tmp_path: Path, name: str = "a") -> Path:
    bundle = tmp_path / "bundle" if (tmp_path / "bundle").exists() else model_bundle(tmp_path / "bundle")
    out = tmp_path / f"{name}.tar.gz"
    build_deploy_archive(bundle, resolve(load_profile(write_profile(tmp_path / f"{name}.yaml"))), out)
    return out


def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    return root


def archive_files(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        return {m.name[len(TOP) + 1:]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def rehashed(archive: Path, out: Path, change) -> Path:
    """``archive`` with ``change(files)`` applied and MANIFEST.json re-hashed to match, as an
    attacker who can edit the archive would do."""
    files = archive_files(archive)
    change(files)
    manifest = json.loads(files["MANIFEST.json"])
    manifest["files"] = {n: sha(d) for n, d in sorted(files.items()) if n != "MANIFEST.json"}
    files["MANIFEST.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    out.write_bytes(archive_bytes(files))
    return out


def run_install(script: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """install.sh as an unprivileged user: a fake `id` reports uid 1000 (the tests may run as root)."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "id").write_text('#!/bin/sh\nif [ "$#" -eq 1 ] && [ "$1" = -u ]; then echo 1000; else exec /usr/bin/id "$@"; fi\n')
    (shim / "id").chmod(0o755)
    env = {"PATH": f"{shim}:/usr/bin:/bin", "HOME": str(tmp_path), "EDGESIGHT_SKIP_PIP": "1", "EDGESIGHT_PYTHON": sys.executable}
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


# --------------------------------------------------------------------------------------------
# 1. `deploy --target ROOT` writes only inside ROOT


@pytest.mark.parametrize("linked", ["opt", "opt/edgesight/releases", "etc/systemd", "etc/systemd/system/multi-user.target.wants"])
def test_target_refuses_a_link_that_leaves_the_root(tmp_path, capsys, linked):
    archive = make_archive(tmp_path)
    host = tmp_path / "host"  # the operator's own folders
    (host / linked).mkdir(parents=True)
    root = rootfs(tmp_path)
    link = root / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(host / linked)
    code, out, err = run_cli(["deploy", archive, "--target", root], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and f"error: {link} is a link to {host / linked}, which leaves {root}: refusing" in err
    assert [p for p in host.rglob("*") if not p.is_dir()] == [], "nothing may land on this machine's folders"
    assert not any(root.rglob("MANIFEST.json")), "everything is checked before the first write"


def test_target_follows_links_that_stay_inside(tmp_path, capsys):
    archive = make_archive(tmp_path)
    root = rootfs(tmp_path)
    (root / "data" / "opt").mkdir(parents=True)
    (root / "opt").symlink_to("data/opt")
    code, _, err = run_cli(["deploy", archive, "--target", root], capsys)
    assert code == 0, err
    assert (root / "data" / "opt" / "edgesight" / "current" / "run.args").is_file()
    # the boot partition too: its config.txt may not be a link out of it
    boot = tmp_path / "bootfs"
    boot.mkdir()
    outside = tmp_path / "host-config.txt"
    outside.write_text("secret=1\n")
    (boot / "config.txt").symlink_to(outside)
    code, _, err = run_cli(["deploy", archive, "--target", root, "--boot", boot], capsys)
    assert code == 1 and f"{boot / 'config.txt'} is a link to {outside}, which leaves {boot}" in err
    assert outside.read_text() == "secret=1\n"


# --------------------------------------------------------------------------------------------
# 2 and 6. Paths in profiles and model.json


@pytest.mark.parametrize("key,value", [
    ("status_file", "/etc/passwd"), ("status_file", "../../etc/passwd"), ("jsonl", "/etc/cron.d/x"),
    ("stats_json", "logs/../../x.json"), ("status_file", "/var/lib/edgesight/../../../etc/passwd"),
    ("status_file", "/var/lib/edgesightx/s.json"),
])
def test_profile_paths_stay_in_the_state_directory(tmp_path, key, value):
    path = write_profile(tmp_path / "p.yaml", **{key: value})
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert str(e.value).startswith(f"{path}: runtime.{key}: '{value}' is outside the service's state directory; "
                                   "give a relative path (it lands in /var/lib/edgesight)")
    preset = tmp_path / "inspect.yaml"
    preset.write_text(yaml.safe_dump({"description": "x", "review": {"dir": value, "labels": ["defect"]}}))
    with pytest.raises(ProfileError, match=f"{preset}: review.dir: '{value}' is outside"):
        load_preset(preset)


def test_profile_paths_inside_the_state_directory_are_kept(tmp_path):
    path = write_profile(tmp_path / "p.yaml", status_file="/var/lib/edgesight/status.json", jsonl="events/e.jsonl")
    rs = load_profile(path).runtime
    assert (rs.status_file, rs.jsonl) == ("/var/lib/edgesight/status.json", "events/e.jsonl")


def test_device_script_never_removes_a_status_file_outside_the_state_directory(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    prefix = tmp_path / "opt"
    release = prefix / "releases" / "0123456789abcdef"
    release.mkdir(parents=True)
    (prefix / "current").symlink_to("releases/0123456789abcdef")
    for crafted in (str(victim), "../../victim"):
        (release / "run.args").write_text(f"--source\nsynthetic\n--status-file\n{crafted}\n")
        r = subprocess.run(["sh", "-c", remote_script(), "edgesight-deploy", "start", str(prefix), "background", "/bin/true"],
                           capture_output=True, text=True, timeout=30, check=False)
        assert r.returncode == 1 and f"--status-file '{crafted}'" in r.stderr
        assert victim.read_text() == "keep"


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_model_file_must_lie_inside_the_bundle(tmp_path, where):
    secret = tmp_path / "outside.tflite"
    secret.write_bytes(b"host secret")
    bundle = model_bundle(tmp_path / "b")
    name = str(secret) if where == "absolute" else "../outside.tflite"
    edit_json(bundle / "model.json", model_file=name, sha256=sha(secret.read_bytes()))
    message = f"{bundle / 'model.json'}: model_file: '{name}' is not a file inside the bundle"
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
    with pytest.raises(BundleError, match=message):
        deploy_files(bundle, resolve(load_profile(write_profile(tmp_path / "p.yaml"))))


def test_bundle_never_packs_a_file_from_outside(tmp_path):
    secret = tmp_path / "hostname"
    secret.write_bytes(b"operator-laptop\n")
    bundle = model_bundle(tmp_path / "b")
    (bundle / "model.tflite").unlink()
    (bundle / "model.tflite").symlink_to(secret)
    edit_json(bundle / "model.json", sha256=sha(secret.read_bytes()))
    with pytest.raises(BundleError, match=f"{bundle / 'model.tflite'}: leads outside {bundle} "):
        deploy_files(bundle, resolve(load_profile(write_profile(tmp_path / "p.yaml"))))


# --------------------------------------------------------------------------------------------
# 3. An archive edited and re-hashed; the manifest lists every file


@pytest.mark.parametrize("extra,message", [
    (["--jsonl", "/etc/cron.d/x"], "run.args: --jsonl: '/etc/cron.d/x' is outside the service's state directory"),
    (["--config", "/tmp/x.yaml"], "run.args: '--config' is not an option a device profile sets"),
    (["--status-file=/etc/passwd"], "run.args: '--status-file=/etc/passwd' is not an option a device profile sets"),
])
def test_rehashed_run_args_are_still_checked(tmp_path, capsys, extra, message):
    good = make_archive(tmp_path)
    manifest = verify_archive(good)
    assert set(manifest["files"]) == set(archive_files(good)) - {"MANIFEST.json"}
    assert {"install.sh", "edgesight.service", "run.args", "model/model.tflite"} <= set(manifest["files"])
    line = "".join(f"{a}\n" for a in extra).encode()
    bad = rehashed(good, tmp_path / "bad.tar.gz", lambda f: f.update({"run.args": f["run.args"] + line}))
    with pytest.raises(BundleError, match=message):
        verify_archive(bad)
    root = rootfs(tmp_path)
    code, out, err = run_cli(["deploy", bad, "--target", root], capsys)
    assert code == 1 and message in err and os.listdir(root) == ["etc"]


def test_every_builtin_profile_writes_run_args_that_verify():
    from edgesight.edge.fleet.profiles import list_presets, list_profiles
    from edgesight.edge.fleet.runsettings import check_run_args, run_args

    for profile in list_profiles():
        for preset in [None] + list_presets():
            r = resolve(load_profile(profile), load_preset(preset) if preset else None)
            values = check_run_args(run_args(r), r.title)
            assert values.get("status_file") == r.runtime.status_file


# --------------------------------------------------------------------------------------------
# 4. root is never the service user


def test_root_is_never_the_service_user(tmp_path, capsys):
    archive = make_archive(tmp_path)
    root = rootfs(tmp_path)
    code, _, err = run_cli(["deploy", archive, "--target", root, "--user", "root"], capsys)
    assert code == 1 and err.startswith("error: --user root: the service never runs as root") and os.listdir(root) == ["etc"]
    # over SSH it is refused before connecting (nothing listens on port 1)
    code, out, err = run_cli(["deploy", archive, "--host", "pi@127.0.0.1", "--port", "1", "--user", "root"], capsys)
    assert code == 1 and out == "" and err.startswith("error: --user root: the service never runs as root")
    installer = extract_archive(archive, tmp_path / "unpacked") / "install.sh"
    r = run_install(installer, tmp_path, "--prefix", str(tmp_path / "opt"), "--user", "root")
    assert r.returncode == 1 and "the service never runs as root" in r.stderr and not (tmp_path / "opt").exists()
    with pytest.raises(ProfileError, match="service user 'root'"):
        render_unit(resolve(load_profile("rpi5")), "/opt/edgesight", "root")


# --------------------------------------------------------------------------------------------
# 5. Models are verified at run time, the Edge TPU model too


def test_a_model_without_a_recorded_sha256_runs_only_with_no_verify(color_bundle, tmp_path, capsys, caplog):
    bundle = tmp_path / "edited"
    shutil.copytree(color_bundle, bundle)
    edit_json(bundle / "model.json", sha256=None)
    data = bytearray((bundle / "model.tflite").read_bytes())
    data[-1] ^= 0xFF  # an edited model: nothing records what it should be
    (bundle / "model.tflite").write_bytes(bytes(data))
    message = f"{bundle / 'model.json'}: sha256: missing, so model.tflite cannot be verified"
    code, out, err = run_cli(["run", bundle, "--source", "synthetic:32x32@10", "--max-frames", "2", "--quiet"], capsys)
    assert code == 1 and err.startswith(f"error: {message}") and "--no-verify" in err and err.count("\n") == 1
    with pytest.raises(BundleError, match=message):
        Classifier(bundle)
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), np.full((24, 24, 3), (40, 40, 220), np.uint8))
    code, out, err = run_cli(["classify", bundle, image], capsys)
    assert code == 1 and message in err
    code, out, err = run_cli(["classify", bundle, image, "--no-verify"], capsys)
    assert code == 0, err
    assert "model.tflite is not verified (--no-verify)" in caplog.text
    assert not Classifier(bundle, verify=False).verified and Classifier(color_bundle).verified


def test_the_edge_tpu_model_is_verified_too(tmp_path):
    bundle = model_bundle(tmp_path / "b")
    compiled = bundle / "model_edgetpu.tflite"
    compiled.write_bytes(b"TFL3 compiled for the Edge TPU")
    missing = r"model.json: edgetpu_sha256: missing, so model_edgetpu.tflite cannot be verified; compile it with 'edgesight convert --edgetpu'"
    for path in (bundle, compiled):
        with pytest.raises(BundleError, match=missing):
            load_bundle(path, prefer_edgetpu=True)
    coral = resolve(load_profile(write_profile(tmp_path / "p.yaml", device="coral")))
    with pytest.raises(BundleError, match=missing):
        deploy_files(bundle, coral)
    edit_json(bundle / "model.json", edgetpu_sha256=sha(compiled.read_bytes()))
    b = load_bundle(bundle, prefer_edgetpu=True)
    assert b.model_path == compiled and b.edgetpu
    assert "model/model_edgetpu.tflite" in deploy_files(bundle, coral).files
    compiled.write_bytes(b"TFL3 compiled, then edited")
    for path in (bundle, compiled):
        with pytest.raises(BundleError, match="model_edgetpu.tflite: sha256 does not match"):
            load_bundle(path, prefer_edgetpu=True)
    with pytest.raises(BundleError, match="model_edgetpu.tflite: sha256 does not match"):
        deploy_files(bundle, coral)
    assert load_bundle(bundle, prefer_edgetpu=True, verify=False).model_path == compiled


# --------------------------------------------------------------------------------------------
# 7. install.sh by hand: unlisted files, links, an edited installed release


def test_install_sh_refuses_unlisted_files_and_links(tmp_path):
    unpacked = extract_archive(make_archive(tmp_path), tmp_path / "unpacked")
    shadow = tmp_path / "shadow"
    shadow.write_text("root:secret\n")
    crafted = {
        "model/x": (lambda p: p.symlink_to(shadow), "model/x is a link"),
        "model/extra.bin": (lambda p: p.write_bytes(b"\0"), "model/extra.bin: not listed in MANIFEST.json"),
        "unit.d": (lambda p: p.symlink_to("/etc"), "unit.d is a link"),
    }
    for name, (make, message) in crafted.items():
        make(unpacked / name)
        prefix = tmp_path / f"opt-{name.replace('/', '-')}"
        r = run_install(unpacked / "install.sh", tmp_path, "--prefix", str(prefix))
        assert r.returncode == 1 and message in r.stderr, r.stderr
        assert not prefix.exists()
        (unpacked / name).unlink()
    r = run_install(unpacked / "install.sh", tmp_path, "--prefix", str(tmp_path / "opt"))
    assert r.returncode == 0, r.stderr


def test_install_sh_repairs_an_edited_release(tmp_path):
    unpacked = extract_archive(make_archive(tmp_path), tmp_path / "unpacked")
    prefix = tmp_path / "opt"
    assert run_install(unpacked / "install.sh", tmp_path, "--prefix", str(prefix)).returncode == 0
    before = snapshot(prefix)
    release = prefix / os.readlink(prefix / "current")
    with open(release / "run.args", "a") as f:
        f.write("--jsonl\n/etc/cron.d/x\n")
    (release / "model" / "evil.tflite").write_bytes(b"TFL3")
    (release / "model" / "labels.txt").unlink()
    (release / "model" / "labels.txt").symlink_to(tmp_path / "elsewhere.txt")
    (release / "profile.yaml").unlink()
    (release / "edgesight.service").chmod(0o666)
    r = run_install(unpacked / "install.sh", tmp_path, "--prefix", str(prefix))
    assert r.returncode == 0, r.stderr
    assert "did not match MANIFEST.json: repaired" in r.stdout and "model/evil.tflite (removed)" in r.stdout
    assert snapshot(prefix) == before
    r = run_install(unpacked / "install.sh", tmp_path, "--prefix", str(prefix))
    assert "(verified against MANIFEST.json)" in r.stdout and snapshot(prefix) == before


# --------------------------------------------------------------------------------------------
# 8. Atomic, race-free swaps; one release per service start; readable files


def test_written_files_are_readable_unless_secret(tmp_path):
    assert write_json(tmp_path / "stats.json", {"frames": 1}).stat().st_mode & 0o777 == 0o644
    assert write_bytes(tmp_path / "key", b"secret", mode=0o600).stat().st_mode & 0o777 == 0o600
    archive = make_archive(tmp_path)
    assert archive.stat().st_mode & 0o777 == 0o644


def test_replace_dir_never_leaves_the_destination_missing(tmp_path, monkeypatch):
    final, staging = tmp_path / "bundle", tmp_path / "new"
    for folder, text in ((final, "old"), (staging, "new")):
        folder.mkdir()
        (folder / "model.json").write_text(text)
    missing = []
    for name in ("rename", "replace"):
        def spy(src, dst, *a, _real=getattr(os, name), **kw):
            _real(src, dst, *a, **kw)
            if not final.is_dir():
                missing.append((str(src), str(dst)))
        monkeypatch.setattr(os, name, spy)
    replace_dir(staging, final)
    assert missing == []
    assert (final / "model.json").read_text() == "new" and os.listdir(tmp_path) == ["bundle"]


def test_current_switch_uses_a_temporary_name_of_its_own(tmp_path, capsys):
    unpacked = extract_archive(make_archive(tmp_path), tmp_path / "unpacked")
    prefix = tmp_path / "opt"
    prefix.mkdir()
    # another installer's temporary link, about to be renamed into place
    os.symlink("releases/other", prefix / "current.new")
    r = run_install(unpacked / "install.sh", tmp_path, "--prefix", str(prefix))
    assert r.returncode == 0, r.stderr
    assert os.readlink(prefix / "current.new") == "releases/other"
    assert sorted(os.listdir(prefix)) == ["current", "current.new", "releases"]
    root = rootfs(tmp_path)
    base = root / "opt" / "edgesight"
    base.mkdir(parents=True)
    os.symlink("releases/other", base / ".current.new")
    code, _, err = run_cli(["deploy", tmp_path / "a.tar.gz", "--target", root], capsys)
    assert code == 0, err
    assert os.readlink(base / ".current.new") == "releases/other"


def test_the_unit_resolves_its_release_once(tmp_path, capsys):
    archive = make_archive(tmp_path)
    root = rootfs(tmp_path)
    code, out, err = run_cli(["deploy", archive, "--target", root], capsys)
    assert code == 0, err
    release = os.readlink(root / "opt" / "edgesight" / "current")
    unit = (root / "etc" / "systemd" / "system" / "edgesight.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    home = f"/opt/edgesight/{release}"
    assert exec_start.startswith(f"ExecStart={home}/venv/bin/edgesight run {home}/model ") and "current" not in exec_start
    unpacked = extract_archive(archive, tmp_path / "unpacked")
    prefix = tmp_path / "opt"
    assert run_install(unpacked / "install.sh", tmp_path, "--prefix", str(prefix)).returncode == 0
    installed = (prefix / "current" / "edgesight.service").read_text()
    assert f"{prefix}/{release}/venv/bin/edgesight run {prefix}/{release}/model " in installed
