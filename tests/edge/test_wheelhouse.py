"""Deploy archives that install offline: the device's wheels, edgesight's own wheel, install.sh's checks.

Nothing here reaches a package index: the complete wheelhouse comes from the wheel cache
(``device_wheels`` in conftest.py), and ``PIP_NO_INDEX`` is set for the whole suite.
"""

import base64
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from packaging.utils import parse_wheel_filename

from edgesight.edge import __version__
from edgesight.edge.errors import DeployError, ProfileError
from edgesight.edge.fleet.archive import TOP, archive_bytes, build_deploy_archive, deploy_files, extract_archive, verify_archive
from edgesight.edge.fleet.profiles import load_preset, load_profile, resolve
from edgesight.edge.fleet.wheelbuild import installed_package_files, installed_wheel, wheel_bytes, wheel_name
from edgesight.edge.fleet.wheelhouse import Wheelhouse, build_wheelhouse
from edgesight.edge.fleet.wheels import Target, Wheel, device_requirements, glibc_needed, read_wheel, select, target_of
from tests.conftest import run_cli
from tests.edge.conftest import wheel_profile
from tests.edge.test_profiles import write_model_bundle

PINS = [
    'ai-edge-litert==2.3.0; platform_machine == "aarch64"',
    'tflite-runtime==2.14.0; platform_machine == "armv7l"',
    'numpy==1.26.4; python_version < "3.12"',
    "opencv-python-headless==4.10.0.84",
]
# edgesight's own kinds of Requires-Dist lines: plain, by machine, by extra, by Python.
OWN = [
    "numpy>=1.23",
    'ai-edge-litert>=1.2; platform_machine == "x86_64" or platform_machine == "aarch64"',
    'tensorflow-cpu==2.21.*; platform_machine == "x86_64" and extra == "train"',
    'gpiozero>=2.0; extra == "gpio"',
    'backports.strenum; python_version < "3.11"',
]


def profile_file(path: Path, arch: str, requirements=PINS, **os_settings) -> Path:
    data = {"name": path.stem, "description": "a test device", "arch": arch,
            "runtime": {"source": "synthetic:640x480@10", "status_file": "status.json"},
            "os": {"requirements": list(requirements), **os_settings}, "service": {"groups": []}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def members(path: Path):
    with tarfile.open(path, mode="r:gz") as tar:
        return {m.name[len(TOP) + 1:]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def install(script: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """install.sh as an unprivileged user (a fake `id` says uid 1000), trusting no signer."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "id").write_text('#!/bin/sh\nif [ "$#" -eq 1 ] && [ "$1" = -u ]; then echo 1000; else exec /usr/bin/id "$@"; fi\n')
    (shim / "id").chmod(0o755)
    env = {"PATH": f"{shim}:/usr/bin:/bin", "HOME": str(tmp_path), "EDGESIGHT_PYTHON": sys.executable,
           "EDGESIGHT_ALLOWED_SIGNERS": str(tmp_path / "no-signers"), **env}
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env=env, timeout=120, check=False)


# --------------------------------------------------------------------------------------------
# The device's platform and its markers


def test_markers_are_evaluated_for_the_device_not_this_machine(tmp_path):
    pi = resolve(load_profile(profile_file(tmp_path / "pi.yaml", "aarch64", python="3.11", glibc="2.36")))
    pc = resolve(load_profile(profile_file(tmp_path / "pc.yaml", "x86_64", python="3.12", glibc="2.39")))
    old = resolve(load_profile(profile_file(tmp_path / "old.yaml", "arm64", python="3.10.12")), load_preset("qc-line"))
    t_pi, t_pc, t_old = target_of(pi), target_of(pc), target_of(old)
    assert (t_pi.machine, t_pi.python_version, t_pi.tag) == ("aarch64", "3.11", "cp311-manylinux_2_36_aarch64")
    assert t_pi.environment()["platform_machine"] == "aarch64" and t_pi.environment()["python_full_version"] == "3.11.0"
    assert (t_old.machine, t_old.glibc, t_old.environment()["python_full_version"]) == ("aarch64", "2.17", "3.10.12")
    # On this x86-64 workstation pip would drop the aarch64 pin and keep the x86-64 one; the device decides.
    assert device_requirements(pi, t_pi, OWN) == [
        "numpy>=1.23", "ai-edge-litert>=1.2", "ai-edge-litert==2.3.0", "numpy==1.26.4", "opencv-python-headless==4.10.0.84"]
    assert device_requirements(pc, t_pc, OWN) == ["numpy>=1.23", "ai-edge-litert>=1.2", "opencv-python-headless==4.10.0.84"]
    # A use case's extra (qc-line: gpio) brings edgesight's dependencies for it; Python 3.10 needs the backport.
    assert device_requirements(old, t_old, OWN) == [
        "numpy>=1.23", "ai-edge-litert>=1.2", "gpiozero>=2.0", "backports.strenum", "ai-edge-litert==2.3.0", "numpy==1.26.4",
        "opencv-python-headless==4.10.0.84"]


def test_platform_tags_follow_the_device_glibc():
    arm = Target("aarch64", "3.11", "2.28").platforms()
    assert arm[:2] == ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64"] and arm[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert "manylinux_2_29_aarch64" not in arm and not any("x86_64" in t for t in arm)
    x86 = Target("x86_64", "3.11", "2.36").platforms()
    assert x86[0] == "manylinux_2_36_x86_64" and {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(x86)


def test_profiles_say_what_the_device_is(tmp_path):
    assert target_of(resolve(load_profile("rpi5"))) == Target("aarch64", "3.11", "2.36")
    assert target_of(resolve(load_profile("coral-devboard"))) == Target("aarch64", "3.11", "2.28")
    host = target_of(resolve(load_profile("generic-linux")))
    assert host.python_version == "%d.%d" % sys.version_info[:2]
    with pytest.raises(ProfileError) as e:
        target_of(resolve(load_profile(profile_file(tmp_path / "nopy.yaml", "aarch64"))))
    assert str(e.value).startswith("profile nopy: os.python is needed to fetch wheels for aarch64: add python: \"3.11\"")
    assert "--no-wheelhouse" in str(e.value)
    with pytest.raises(ProfileError, match=r"arch 'armv7l' has no manylinux wheels.*--no-wheelhouse"):
        target_of(resolve(load_profile(profile_file(tmp_path / "v7.yaml", "armv7l", python="3.11"))))
    with pytest.raises(ProfileError, match=r"os.python: 'three' is not a version; write it quoted, like \"3.11\""):
        load_profile(profile_file(tmp_path / "bad.yaml", "aarch64", python="three"))
    with pytest.raises(ProfileError, match=r"os.python: expected text, got the number 3.11"):
        load_profile(profile_file(tmp_path / "float.yaml", "aarch64", python=3.11))


def fake_wheel(folder: Path, name: str, version: str, requires=()) -> Wheel:
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    path = folder / wheel_name(name, version)
    path.write_bytes(wheel_bytes(name, version, {f"{name}/__init__.py": b""}, {"METADATA": meta.encode()}))
    return read_wheel(path)


def test_chosen_wheels_are_checked_with_the_device_markers(tmp_path):
    a = fake_wheel(tmp_path, "a", "1.0", ['b>=1; platform_machine == "aarch64"', 'c; platform_machine == "x86_64"',
                                          'd[fast]; python_version < "3.12"'])
    d = fake_wheel(tmp_path, "d", "2.0", ['e; extra == "fast"', 'f; extra == "slow"'])
    wheels = [a, fake_wheel(tmp_path, "b", "1.5"), fake_wheel(tmp_path, "c", "1.0"), d, fake_wheel(tmp_path, "e", "1.0"),
              fake_wheel(tmp_path, "f", "1.0")]
    chosen, gaps = select(wheels, ["a"], Target("aarch64", "3.11", "2.36"))
    assert [w.name for w in chosen] == ["a", "b", "d", "e"] and gaps == []
    chosen, gaps = select(wheels, ["a"], Target("x86_64", "3.12", "2.36"))
    assert [w.name for w in chosen] == ["a", "c"] and gaps == []
    # What pip, judging markers on this machine, did not fetch: named, to be fetched.
    (tmp_path / "old").mkdir()
    chosen, gaps = select([a, fake_wheel(tmp_path / "old", "b", "0.5"), d], ["a"], Target("aarch64", "3.11", "2.36"))
    assert gaps == ["b>=1", "e"]


def test_glibc_needed_is_the_newest_any_wheel_needs():
    names = ["numpy-1.26.4-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
             "ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64.whl", "click-8.1.0-py3-none-any.whl"]
    wheels = [Wheel(Path(n), "x", "1", frozenset(parse_wheel_filename(n)[3]), ()) for n in names]
    assert glibc_needed(wheels) == "2.27" and glibc_needed(wheels[2:]) is None


# --------------------------------------------------------------------------------------------
# edgesight's own wheel


def test_edgesight_wheel_is_reproducible_and_holds_the_installed_package():
    name, data = installed_wheel()
    assert name == f"edgesight-{__version__}-py3-none-any.whl" and installed_wheel() == (name, data)
    zf = zipfile.ZipFile(io.BytesIO(data))
    infos = zf.infolist()
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and i.external_attr >> 16 == 0o100644 for i in infos)
    names = [i.filename for i in infos]
    dist_info = f"edgesight-{__version__}.dist-info/"
    package = [n for n in names if not n.startswith(dist_info)]
    assert package == sorted(package) and names[-1] == dist_info + "RECORD" and names[len(package):] == sorted(names[len(package):-1]) + names[-1:]
    assert not any(n.endswith(".pyc") or "__pycache__" in n for n in names)
    for wanted in ("edgesight/__init__.py", "edgesight/edge/fleet/wheelbuild.py", "edgesight/firmware_configs/install.sh.in",
                   "edgesight/firmware_configs/presets/drone.yaml", "edgesight/firmware_configs/rpi5.yaml"):
        assert wanted in package
    assert {n: zf.read(n) for n in package} == installed_package_files()
    assert "edgesight = edgesight.cli:main" in zf.read(dist_info + "entry_points.txt").decode()
    assert "Name: edgesight" in zf.read(dist_info + "METADATA").decode() and dist_info + "licenses/LICENSE" in names
    assert "Root-Is-Purelib: true" in zf.read(dist_info + "WHEEL").decode()
    for line in zf.read(dist_info + "RECORD").decode().splitlines()[:-1]:
        path, digest, size = line.rsplit(",", 2)
        raw = zf.read(path)
        assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode() and int(size) == len(raw)
    # The order files are given in does not matter.
    files = {"pkg/b.py": b"b", "pkg/a.py": b"a"}
    meta = {"METADATA": b"Metadata-Version: 2.1\nName: pkg\nVersion: 1\n", "entry_points.txt": b""}
    assert wheel_bytes("pkg", "1", files, meta) == wheel_bytes("pkg", "1", dict(reversed(files.items())), dict(reversed(meta.items())))


def test_edgesight_installed_from_its_wheel_rebuilds_the_same_wheel(tmp_path):
    name, data = installed_wheel()
    (tmp_path / name).write_bytes(data)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check",
                    "--target", str(target), str(tmp_path / name)], check=True, capture_output=True)
    # That installation first on the path: its RECORD lists the package files, not an editable finder.
    code = ("import sys, edgesight; from edgesight.edge.fleet.wheelbuild import installed_wheel; "
            "assert edgesight.__file__.startswith(sys.argv[1]), edgesight.__file__; sys.stdout.buffer.write(installed_wheel()[1])")
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(target)}, check=False)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == data


# --------------------------------------------------------------------------------------------
# Archives with a wheelhouse


def test_bundle_with_wheelhouse_gives_the_same_bytes_for_the_same_inputs(device_wheels, tmp_path, capsys, monkeypatch):
    bundle = write_model_bundle(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["bundle", bundle, "-p", device_wheels.profile, "--wheelhouse", "--offline", "-o", "a.tar.gz"], capsys)
    assert code == 0, err
    steps = err.splitlines()
    target = device_wheels.wheelhouse.target
    assert steps[0].startswith(f"profile wheelbox: ") and steps[0].endswith(f"requirements for {target.describe()}")
    assert steps[-1].startswith(f"wheelhouse/: {len(device_wheels.wheelhouse.wheels)} wheels, ")
    # The CLI's archive is the one the session's wheelhouse gives: the same wheels chosen, and edgesight's
    # own wheel rebuilt to the same bytes (rebuilt now: the installed files are the checkout's own).
    name, data = installed_wheel()
    wheelhouse = replace(device_wheels.wheelhouse, wheels={**device_wheels.wheelhouse.wheels, name: data})
    same = archive_bytes(deploy_files(bundle, device_wheels.resolved, wheelhouse).files)
    assert (tmp_path / "a.tar.gz").read_bytes() == same
    files = members(tmp_path / "a.tar.gz")
    wheels = sorted(n[len("wheelhouse/"):] for n in files if n.startswith("wheelhouse/"))
    assert wheels == sorted(device_wheels.wheelhouse.wheels) and installed_wheel()[0] in wheels
    assert any(w.startswith("ai_edge_litert-2.3.0-") for w in wheels) and any(w.startswith("opencv_python_headless-4.10.0.84-") for w in wheels)
    manifest = verify_archive(tmp_path / "a.tar.gz")
    assert manifest["wheelhouse"] == {"complete": True, "edgesight": installed_wheel()[0], "python": target.python_version,
                                      "machine": target.machine, "glibc": device_wheels.wheelhouse.glibc, "platform": target.tag}
    script = files["install.sh"].decode()
    assert "\nWHEELHOUSE=complete\n" in script and f"\nWHEEL_MACHINE={target.machine}\n" in script
    assert files["requirements.txt"].decode().splitlines()[:2] == [
        f"# Python packages for edgesight on wheelbox, edgesight {__version__}; install.sh installs them from wheelhouse/, "
        "with no package index.", f"edgesight=={__version__}"]


def test_wheels_fetch_fills_and_checks_the_cache(device_wheels, capsys):
    code, out, err = run_cli(["wheels", "fetch", device_wheels.profile, "--offline"], capsys)
    assert code == 0, err
    target = device_wheels.wheelhouse.target
    assert out.startswith(f"wheelbox: {len(device_wheels.wheelhouse.wheels) - 1} wheels, ") and out.rstrip().endswith(f"for {target.describe()}")
    code, out, err = run_cli(["wheels", "fetch", "nosuchprofile"], capsys)
    assert code == 1 and err.startswith("error: unknown device profile 'nosuchprofile'")


def test_slim_archive_carries_edgesight_wheel_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["bundle", write_model_bundle(tmp_path / "m"), "-p", "rpi5", "--no-wheelhouse", "-o", "s.tar.gz"], capsys)
    assert code == 0, err
    name, data = installed_wheel()
    files = members(tmp_path / "s.tar.gz")
    assert [n for n in files if n.startswith("wheelhouse/")] == [f"wheelhouse/{name}"] and files[f"wheelhouse/{name}"] == data
    assert verify_archive(tmp_path / "s.tar.gz")["wheelhouse"] == {"complete": False, "edgesight": name}
    assert "\nWHEELHOUSE=edgesight\n" in files["install.sh"].decode()
    assert "the package index (edgesight from wheelhouse/)" in files["requirements.txt"].decode().splitlines()[0]
    assert f"{name} only" in err and "the device installs the dependencies from its package index" in err


def test_a_wheel_missing_from_the_cache_is_one_clear_line(device_wheels, tmp_path, capsys, monkeypatch):
    bundle = write_model_bundle(tmp_path / "m")
    # Offline, with an empty cache.
    monkeypatch.setenv("EDGESIGHT_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run_cli(["bundle", bundle, "-p", device_wheels.profile, "--offline", "--wheelhouse", "-o", tmp_path / "x.tar.gz"], capsys)
    assert code == 1 and not (tmp_path / "x.tar.gz").exists()
    line = err.splitlines()[-1]
    assert err.count("error:") == 1 and line.startswith("error: profile wheelbox: no wheel of ")
    assert f"for {device_wheels.wheelhouse.target.describe()} in the wheel cache {tmp_path / 'cache' / 'wheels'}" in line
    assert "(offline); run 'edgesight wheels fetch' for this profile" in line and line.endswith("or bundle with --no-wheelhouse to install from the index on the device")
    # With the filled cache, a pinned version nobody has; and the same when pip may ask an index (none is reachable here).
    monkeypatch.delenv("EDGESIGHT_CACHE_DIR")
    pinned = profile_file(tmp_path / "pinned.yaml", "any", requirements=[*device_wheels.resolved.os.requirements[1:], "six==0.0.1"])
    for offline in (True, False):
        with pytest.raises(DeployError) as e:
            build_wheelhouse(resolve(load_profile(pinned)), offline=offline)
        assert str(e.value).startswith(f"profile pinned: no wheel of six==0.0.1 for {device_wheels.wheelhouse.target.describe()} ")
        assert ("(offline)" in str(e.value)) is offline and "\n" not in str(e.value)
    assert "on the package index (or it could not be reached); pin a version with wheels for this platform" in str(e.value)
    # A pin that contradicts edgesight's own requirements.
    clash = profile_file(tmp_path / "clash.yaml", "any", requirements=["click==0.0.1"])
    with pytest.raises(DeployError, match=r"^profile clash: pip cannot install click==0.0.1 and click>=8.1 together for .*: "
                                          r"their versions conflict; change the pin in the profile's os.requirements"):
        build_wheelhouse(resolve(load_profile(clash)), offline=True)


# --------------------------------------------------------------------------------------------
# install.sh


def test_install_sh_refuses_a_wheelhouse_for_another_device(tmp_path):
    name, data = installed_wheel()
    other = Wheelhouse(wheels={name: data}, edgesight=name, target=Target("aarch64", "3.10", "2.36"), glibc="9.99")
    archive = tmp_path / "other.tar.gz"
    build_deploy_archive(write_model_bundle(tmp_path / "m"), resolve(load_profile(wheel_profile(tmp_path / "p.yaml"))), archive, wheelhouse=other)
    here = extract_archive(archive, tmp_path / "x")
    r = install(here / "install.sh", tmp_path, "--prefix", str(tmp_path / "opt"))
    assert r.returncode == 1 and not (tmp_path / "opt").exists()
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("install.sh: error: the archive's wheelhouse does not fit this device: ")
    have = "%d.%d" % sys.version_info[:2]
    assert f"{sys.executable} is Python {have}, the wheels are for Python 3.10 (set EDGESIGHT_PYTHON to a Python 3.10" in line
    assert f"this device is {os.uname().machine}, the wheels are for aarch64" in line
    assert "the wheels need glibc 9.99 or newer" in line and line.endswith("or bundle with --no-wheelhouse to install from the package index")


def test_install_sh_names_the_apt_command_for_what_the_os_provides(tmp_path):
    bundle = write_model_bundle(tmp_path / "m")
    outputs = {}
    for name in ("rpi5", "coral-usb"):
        archive = tmp_path / f"{name}.tar.gz"
        build_deploy_archive(bundle, resolve(load_profile(name)), archive)
        here = extract_archive(archive, tmp_path / name)
        r = install(here / "install.sh", tmp_path, "--prefix", str(tmp_path / f"opt-{name}"), EDGESIGHT_SKIP_PIP="1",
                    EDGESIGHT_SKIP_APT="1")
        assert r.returncode == 0, r.stderr
        outputs[name] = r.stdout
    apt = next(line for line in outputs["rpi5"].splitlines() if "apt packages (EDGESIGHT_SKIP_APT=1): " in line)
    assert "sudo apt-get install -y --no-install-recommends " in apt and " python3-picamera2" in apt
    assert "picamera2 does not import in the venv: sudo apt-get install -y python3-picamera2" in outputs["rpi5"]
    assert "libedgetpu.so.1 is not installed: sudo apt-get install -y libedgetpu1-std (from Coral's apt repository" in outputs["coral-usb"]
    assert "libedgetpu" not in outputs["rpi5"] and "picamera2" not in outputs["coral-usb"]
