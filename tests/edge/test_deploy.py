"""`edgesight deploy` against a real OpenSSH server on 127.0.0.1, and `--target` SD-card staging.

The "device" is this machine: sshd runs as root on a free port with its own host key, accepts one
client key, and the client checks the host key against a known_hosts file written here. There is
no systemd, so deploy uses its background fallback, with `--runtime` pointing at this venv's
edgesight (install.sh skips pip and apt). Installs use `--user nobody`, an account that exists
(the service never runs as root), and profiles without groups or udev rules, so install.sh creates
no account and writes nothing outside the test prefixes.
"""

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import pytest
import yaml
from packaging.utils import canonicalize_name

from edgesight.edge.fleet.deploy import read_release
from edgesight.edge.fleet.archive import TOP, archive_bytes, build_deploy_archive, extract_archive
from edgesight.edge.errors import DeployError
from edgesight.edge.fleet.profiles import load_profile, resolve
from edgesight.edge.fleet.ssh import ssh_option_args
from edgesight.edge.fleet.stage import merge_boot_config
from edgesight.edge.fleet.targets import parse_host
from tests.conftest import run_cli

SSHD = Path("/usr/sbin/sshd")
RUNTIME = str(Path(sys.executable).parent / "edgesight")
HEALTH_TIMEOUT = "30"


def _unavailable(why: str) -> None:
    # CI installs openssh-server (.ci/run): there a missing server is a failure, not a skip.
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must provide it (.ci/run installs openssh-server)")
    pytest.skip(why)


@dataclass
class SshServer:
    port: int
    key: Path
    known_hosts: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgesight-test", "-f", str(path)], check=True)
    return path.with_name(path.name + ".pub").read_text().strip()


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory):
    """sshd on 127.0.0.1 (root login with the test key only), stopped at the end of the session."""
    if not os.access(SSHD, os.X_OK) or subprocess.run(["sh", "-c", "command -v ssh && command -v ssh-keygen"],
                                                      capture_output=True).returncode != 0:
        _unavailable("OpenSSH (sshd, ssh, ssh-keygen) is not installed: apt-get install openssh-server")
    if os.geteuid() != 0:
        _unavailable("the test sshd must run as root to accept logins")
    base = tmp_path_factory.mktemp("ssh")
    server = base / "server"
    # A blank in the client's paths: deploy must quote them for ssh's own option parser.
    client = base / "client keys"
    server.mkdir()
    client.mkdir()
    host_pub = _keygen(server / "host_key")
    (server / "authorized_keys").write_text(_keygen(client / "id_ed25519") + "\n")
    port = _free_port()
    config = server / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1",
        f"HostKey {server / 'host_key'}",
        f"PidFile {server / 'sshd.pid'}",
        f"AuthorizedKeysFile {server / 'authorized_keys'}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
    ]) + "\n")
    known_hosts = client / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    # sshd refuses to start without its privilege-separation folder.
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    log_path = server / "sshd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config), "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"sshd does not listen on {port}: {log_path.read_text()}")
                time.sleep(0.1)
        yield SshServer(port=port, key=client / "id_ed25519", known_hosts=known_hosts)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_profile(path: Path, source: str = "synthetic:64x48@10", threads: int = 1, **os_settings) -> Path:
    data = {
        "name": "testbox",
        "description": "the deploy tests' device",
        "runtime": {"source": source, "threads": threads, "headless": True, "quiet": True,
                    "stats_interval": 0.5, "status_file": "status.json"},
        "os": {"requirements": [], **os_settings},
        "service": {"groups": []},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_archive(model_bundle: Path, profile: Path, out: Path) -> Path:
    build_deploy_archive(model_bundle, resolve(load_profile(profile)), out)
    return out


@pytest.fixture(scope="module")
def archives(color_bundle, tmp_path_factory) -> Dict[str, Path]:
    """Deploy archives of the colour model: two good releases and one whose service cannot start."""
    out = tmp_path_factory.mktemp("archives")
    profiles = {
        "a": write_profile(out / "a.yaml"),
        "b": write_profile(out / "b.yaml", threads=2),
        "broken": write_profile(out / "broken.yaml", source="/nonexistent.mp4"),
    }
    return {name: make_archive(color_bundle, p, out / f"{name}.tar.gz") for name, p in profiles.items()}


def deploy_args(server: SshServer, archive: Path, prefix: Optional[Path] = None, *extra, hosts=("root@127.0.0.1",)) -> list:
    args = ["deploy", archive, "--port", server.port, "--identity", server.key,
            "--ssh-option", f"UserKnownHostsFile={server.known_hosts}", "--user", "nobody",
            "--env", "EDGESIGHT_SKIP_PIP=1", "--env", "EDGESIGHT_SKIP_APT=1", "--env", f"EDGESIGHT_PYTHON={sys.executable}",
            "--runtime", RUNTIME, "--health-timeout", HEALTH_TIMEOUT]
    for host in hosts:
        args += ["--host", host]
    if prefix is not None:
        args += ["--prefix", prefix]
    return args + list(extra)


def _pid_state(pid: int) -> Optional[str]:
    """The process state letter (R, S, Z...), or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def runtime_pid(prefix: Path) -> Optional[int]:
    """The pid of the background runtime deploy started under ``prefix``, if it runs."""
    pidfile = prefix / "state" / "edgesight.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None
    # The pid file's process, not another that reused the number; a zombie has no command line.
    # It runs the model of the release 'current' pointed at when it started, by that release's path.
    releases = str(prefix / "releases").encode() + b"/"
    return pid if any(a.startswith(releases) and a.endswith(b"/model") for a in cmdline) else None


def stop_runtime(prefix: Path) -> None:
    pid = runtime_pid(prefix)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _pid_state(pid) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_state(pid) not in (None, "Z"):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def devices(tmp_path):
    """Install prefixes on the "device"; the runtimes deploy starts in them are stopped afterwards."""
    made = []

    def make(name: str) -> Path:
        made.append(tmp_path / name)
        return made[-1]

    yield make
    for prefix in made:
        stop_runtime(prefix)


def current(prefix: Path) -> str:
    return os.readlink(prefix / "current")


def status(prefix: Path) -> dict:
    return json.loads((prefix / "state" / "status.json").read_text())


def tampered(archive: Path, out: Path) -> Path:
    """A copy of ``archive`` with run.args changed but MANIFEST.json as it was."""
    files = {}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if m.isfile():
                files[m.name[len(TOP) + 1:]] = tar.extractfile(m).read()
    files["run.args"] = files["run.args"].replace(b"synthetic:64x48@10", b"synthetic:640x480@30")
    out.write_bytes(archive_bytes(files))
    return out


# --------------------------------------------------------------------------------------------
# Over SSH


def test_deploy_switch_rollback_prune_and_refusals(ssh_server, archives, color_bundle, devices, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="edgesight.deploy")
    prefix = devices("opt")
    rel = {name: read_release(path).release_id for name, path in archives.items()}
    uploads = tmp_path / "device tmp"
    uploads.mkdir()

    # First deploy: installed, switched, and the health check saw frames.
    code, out, err = run_cli(deploy_args(ssh_server, archives["a"], prefix, "--env", f"TMPDIR={uploads}"), capsys)
    assert code == 0, err
    assert current(prefix) == f"releases/{rel['a']}"
    assert "[root@127.0.0.1] uploading a.tar.gz" in err and "frames processed" in err
    row = out.splitlines()[1].split()
    assert row[:3] == ["root@127.0.0.1", rel["a"], "deployed"] and out.startswith("host")
    assert status(prefix)["frames"] > 0
    first_pid = runtime_pid(prefix)
    assert first_pid is not None
    assert f"uploaded to {uploads}/edgesight-deploy." in caplog.text
    assert not os.listdir(uploads), "the upload folder must be removed"

    # A second release replaces the running one and keeps the first for a rollback.
    code, out, err = run_cli(deploy_args(ssh_server, archives["b"], prefix), capsys)
    assert code == 0, err
    assert current(prefix) == f"releases/{rel['b']}"
    assert (prefix / "releases" / rel["a"] / "MANIFEST.json").is_file()
    assert _pid_state(first_pid) in (None, "Z"), "the previous runtime must be stopped"
    second_pid = runtime_pid(prefix)
    assert second_pid not in (None, first_pid)

    # A release whose service cannot run fails its health check and is rolled back.
    rolled_at = time.time()
    code, out, err = run_cli(deploy_args(ssh_server, archives["broken"], prefix), capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: root@127.0.0.1: health check failed: the service stopped: error: source '/nonexistent.mp4'")
    assert errors[0].endswith(f"rolled back to release {rel['b']}")
    assert f"{rel['broken']}  rolled back" in out
    assert current(prefix) == f"releases/{rel['b']}"
    assert (prefix / "releases" / rel["broken"]).is_dir(), "the failed release stays for a post-mortem"
    pid = runtime_pid(prefix)
    assert pid is not None and b"--threads\x002" in Path(f"/proc/{pid}/cmdline").read_bytes()
    st = status(prefix)
    assert st["frames"] > 0 and st["updated"] > rolled_at and not st.get("finished")

    # --keep 1 removes every release but the new current one.
    code, out, err = run_cli(deploy_args(ssh_server, archives["a"], prefix, "--keep", "1"), capsys)
    assert code == 0, err
    assert current(prefix) == f"releases/{rel['a']}"
    assert sorted(os.listdir(prefix / "releases")) == [rel["a"]]
    assert "removed 2 old release(s)" in out

    # install.sh failing before the switch (no venv module on the device) changes nothing either.
    before = (current(prefix), sorted(os.listdir(prefix / "releases")), runtime_pid(prefix))
    python = tmp_path / "python-without-venv"
    python.write_text(f'#!/bin/sh\ncase " $* " in *" venv "*) echo "No module named venv" >&2; exit 1 ;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    # A fresh release: install.sh reuses the venv of one already on the device.
    fresh = make_archive(color_bundle, write_profile(tmp_path / "c.yaml", threads=3), tmp_path / "c.tar.gz")
    code, out, err = run_cli(deploy_args(ssh_server, fresh, prefix, "--env", f"EDGESIGHT_PYTHON={python}"), capsys)
    assert code == 1
    assert f"error: root@127.0.0.1: install.sh failed: {python} could not create a venv" in err
    assert err.rstrip().endswith("the device is unchanged") and " failed " in out
    assert (current(prefix), sorted(os.listdir(prefix / "releases")), runtime_pid(prefix)) == before

    # A tampered archive is refused before any connection: the device stays as it is.
    code, out, err = run_cli(deploy_args(ssh_server, tampered(archives["b"], tmp_path / "b-tampered.tar.gz"), prefix), capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "run.args: sha256 does not match MANIFEST.json" in err
    assert "[root@127.0.0.1]" not in err
    assert (current(prefix), sorted(os.listdir(prefix / "releases")), runtime_pid(prefix)) == before


def test_trust_pins_the_signing_key_over_ssh(ssh_server, archives, color_bundle, devices, tmp_path, capsys):
    from edgesight.edge.fleet.signing import SIGNATURE, trusted_keys

    prefix = devices("signed")
    release_key, other_key = tmp_path / "edgesight-release", tmp_path / "other"
    for key in (release_key, other_key):
        _keygen(key)
    profile = write_profile(tmp_path / "signed.yaml")
    signed = tmp_path / "signed.tar.gz"
    build_deploy_archive(color_bundle, resolve(load_profile(profile)), signed, sign=release_key)
    # The device's trust file, in the test's folder rather than this machine's /etc.
    signers = tmp_path / "device-etc" / "allowed_signers"
    on_device = ("--env", f"EDGESIGHT_ALLOWED_SIGNERS={signers}")

    # The first deploy with --trust pins the key, then installs the archive it signed.
    code, out, err = run_cli(deploy_args(ssh_server, signed, prefix, *on_device, "--trust", f"{release_key}.pub"), capsys)
    assert code == 0, err
    assert signers.read_text() == trusted_keys([f"{release_key}.pub"])[0] + "\n"
    assert signers.stat().st_mode & 0o777 == 0o644
    assert f"[root@127.0.0.1] trusts 1 new signer(s) in {signers}" in err and "WARNING" not in err
    release = read_release(signed).release_id
    assert current(prefix) == f"releases/{release}" and (prefix / "current" / SIGNATURE).is_file()
    before = (current(prefix), sorted(os.listdir(prefix / "releases")), runtime_pid(prefix))

    # From then on install.sh on the device refuses an unsigned archive: nothing changes.
    code, out, err = run_cli(deploy_args(ssh_server, archives["b"], prefix, *on_device), capsys)
    assert code == 1
    assert (f"error: root@127.0.0.1: install.sh failed: MANIFEST.json is not signed, and this device installs only archives "
            f"signed by a key in {signers}") in err
    assert err.rstrip().endswith("the device is unchanged")
    assert (current(prefix), sorted(os.listdir(prefix / "releases")), runtime_pid(prefix)) == before

    # An archive signed by another key is refused on this machine, before any upload.
    forged = tmp_path / "forged.tar.gz"
    build_deploy_archive(color_bundle, resolve(load_profile(profile)), forged, sign=other_key)
    code, out, err = run_cli(deploy_args(ssh_server, forged, prefix, *on_device, "--trust", f"{release_key}.pub"), capsys)
    assert code == 1 and out == "" and "which --trust does not trust" in err and "[root@127.0.0.1]" not in err

    # --allow-unsigned installs it anyway, and every host says so; a key trusted again is not repeated.
    code, out, err = run_cli(deploy_args(ssh_server, archives["b"], prefix, *on_device, "--allow-unsigned",
                                         "--trust", f"{release_key}.pub"), capsys)
    assert code == 0, err
    assert err.startswith("WARNING: --allow-unsigned: the archive's signature is NOT checked on the devices")
    assert f"{signers} already lists the --trust key(s)" in err and len(signers.read_text().splitlines()) == 1
    assert "[root@127.0.0.1] WARNING: EDGESIGHT_ALLOW_UNSIGNED=1: this install does NOT check the archive's signature" in err
    assert current(prefix) == f"releases/{read_release(archives['b']).release_id}"


def test_user_strings_never_reach_the_remote_shell_unquoted(ssh_server, archives, devices, tmp_path, capsys):
    pwned = tmp_path / "pwned"
    # Every shell construct at once; the slashes of the absolute path make it several folders.
    weird = tmp_path / f"x y;$(touch {pwned}) `touch {pwned}` 'q' \"z\" & | $HOME"
    weird.mkdir(parents=True)
    runtime = weird / "edgesight"
    runtime.symlink_to(RUNTIME)
    archive = weird / "my archive $(touch x).tar.gz"
    archive.write_bytes(archives["a"].read_bytes())
    # '+' passes install.sh's check; the other strings go through the remote shell as given.
    prefix = devices("pre+fix-1")
    args = deploy_args(ssh_server, archive, prefix, "--env", f"EDGESIGHT_NOTE={weird}", "--runtime", str(runtime))
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert not pwned.exists()
    assert current(prefix) == f"releases/{read_release(archive).release_id}"
    pid = runtime_pid(prefix)
    assert pid is not None
    # Both arrived intact: the runtime (the later --runtime wins) and the environment it inherited.
    assert str(runtime).encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert f"EDGESIGHT_NOTE={weird}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert status(prefix)["frames"] > 0


def test_host_key_checking_stays_on(ssh_server, archives, devices, tmp_path, capsys):
    prefix = devices("unknown-key")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = ["deploy", archives["a"], "--host", "root@127.0.0.1", "--port", ssh_server.port, "--identity", ssh_server.key,
            "--ssh-option", f"UserKnownHostsFile={empty}", "--prefix", prefix]
    code, out, err = run_cli(args, capsys)
    assert code == 1
    assert "failed" in out and not prefix.exists()
    assert "error: root@127.0.0.1: ssh: Host key verification failed; check the device's host key fingerprint" in err
    assert f"ssh-keyscan -p {ssh_server.port} 127.0.0.1" in err and err.rstrip().endswith("the device is unchanged")
    assert empty.read_text() == "", "deploy must not accept a host key by itself"


def test_prefix_refused_before_connecting(archives, tmp_path, capsys):
    pwned = tmp_path / "pwned"
    bad = f"{tmp_path}/x y/$(touch {pwned});'q'"
    # install.sh itself refuses such a prefix, without running any of it.
    installer = extract_archive(archives["a"], tmp_path / "extracted") / "install.sh"
    r = subprocess.run(["sh", str(installer), "--prefix", bad], capture_output=True, text=True)
    assert r.returncode == 1 and "may contain only letters, digits" in r.stderr

    # deploy says so in one line before connecting (nothing listens on the port).
    code, out, err = run_cli(["deploy", archives["a"], "--host", "root@127.0.0.1", "--port", _free_port(), "--prefix", bad], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: --prefix '{bad}': install.sh accepts only") and "/opt/edgesight" in err
    assert not pwned.exists()


def test_parallel_hosts_and_result_table(ssh_server, archives, devices, capsys):
    first, second = devices("fleet-a"), devices("fleet-b")
    # The same server twice, each "host" with its own prefix.
    hosts = [f"ssh://root@127.0.0.1:{ssh_server.port}{p}" for p in (first, second)]
    code, out, err = run_cli(deploy_args(ssh_server, archives["b"], None, "--parallel", "2", hosts=hosts), capsys)
    assert code == 0, err
    release = read_release(archives["b"]).release_id
    lines = out.splitlines()
    assert lines[0].split() == ["host", "release", "status", "seconds", "reason"]
    assert [line.split()[:3] for line in lines[1:]] == [[h, release, "deployed"] for h in hosts]
    for host, prefix in zip(hosts, (first, second)):
        assert f"[{host}] deployed release {release}" in err
        assert current(prefix) == f"releases/{release}"
        assert runtime_pid(prefix) is not None and status(prefix)["frames"] > 0


def test_deploy_installs_from_the_wheelhouse_with_no_index(ssh_server, color_bundle, device_wheels, devices, tmp_path, capsys):
    """No --runtime and no EDGESIGHT_SKIP_PIP: install.sh builds the release's venv from the archive's
    wheelhouse while every package index is unreachable, and the service runs from that venv."""
    prefix = devices("offline")
    archive = tmp_path / "offline.tar.gz"
    build_deploy_archive(color_bundle, device_wheels.resolved, archive, wheelhouse=device_wheels.wheelhouse)
    closed = _free_port()  # nothing listens there
    # No pip configuration on the "device" either: its find-links or extra indexes cannot help.
    offline = ["--env", f"PIP_INDEX_URL=http://127.0.0.1:{closed}/simple", "--env", "PIP_CONFIG_FILE=/dev/null",
               "--env", "PIP_RETRIES=0", "--env", "PIP_DEFAULT_TIMEOUT=5"]
    args = ["deploy", archive, "--host", "root@127.0.0.1", "--port", ssh_server.port, "--identity", ssh_server.key,
            "--ssh-option", f"UserKnownHostsFile={ssh_server.known_hosts}", "--user", "nobody", "--prefix", prefix,
            "--env", "EDGESIGHT_SKIP_APT=1", "--env", f"EDGESIGHT_PYTHON={sys.executable}", *offline, "--health-timeout", "90"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    release = read_release(archive).release_id
    assert current(prefix) == f"releases/{release}" and "frames processed" in err
    venv = prefix / "releases" / release / "venv"
    pid = runtime_pid(prefix)
    assert pid is not None
    assert any(a.startswith(str(venv).encode()) for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    assert status(prefix)["frames"] > 0
    # The venv holds exactly the archive's wheels: the pinned versions and edgesight's own wheel.
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull}).stdout
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed)}
    for wheel in device_wheels.wheelhouse.wheels:
        name, version = wheel.split("-")[:2]
        assert installed[canonicalize_name(name)] == version


def test_host_and_option_checks(capsys):
    code, out, _ = run_cli(["deploy", "--help"], capsys)
    assert code == 0 and "--health-timeout" in out and "--target" in out
    t = parse_host("ssh://pi@cam1.local:2222/srv/edgesight", 22, "/opt/edgesight")
    assert (t.destination, t.port, t.prefix) == ("pi@cam1.local", 2222, "/srv/edgesight")
    t = parse_host("pi@cam2", 2200, "/opt/edgesight/")
    assert (t.destination, t.port, t.prefix) == ("pi@cam2", 2200, "/opt/edgesight")
    for bad in ("-oProxyCommand=x", "pi@cam1:/opt/x", "pi@cam 1", "ssh://pi@cam1/x y", "ssh://pi@cam1:99999"):
        with pytest.raises(DeployError):
            parse_host(bad)
    assert ssh_option_args(["UserKnownHostsFile=/a b/k\"h"]) == ["-o", 'UserKnownHostsFile="/a b/k\\"h"']
    for bad in ("StrictHostKeyChecking=no", "BatchMode=no", "NoValue"):
        with pytest.raises(DeployError) as e:
            ssh_option_args([bad])
        assert "\n" not in str(e.value)


def test_deploy_refuses_duplicate_hosts_and_missing_ssh_inputs(archives, tmp_path, capsys):
    code, _, err = run_cli(["deploy", archives["a"], "--host", "pi@cam1", "--host", "ssh://pi@cam1:22/opt/edgesight"], capsys)
    assert code == 1 and "installs into the same place as 'pi@cam1'" in err
    code, _, err = run_cli(["deploy", archives["a"], "--host", "pi@cam1", "--identity", tmp_path / "nokey"], capsys)
    assert code == 1 and "no such key file" in err
    code, _, err = run_cli(["deploy", archives["a"]], capsys)
    assert code == 1 and "no --host given" in err


# --------------------------------------------------------------------------------------------
# Onto a mounted SD card


FRAGMENT = "# camera\ncamera_auto_detect=1\ndtoverlay=imx708\n#dtoverlay=imx219\n"
RULES = 'SUBSYSTEM=="usb", ATTRS{idVendor}=="1a6e", GROUP="plugdev"\n'


def test_target_staging(color_bundle, tmp_path, capsys):
    profile = write_profile(tmp_path / "pi.yaml", boot_config=FRAGMENT, udev_rules={"99-edgesight-test.rules": RULES})
    archive = make_archive(color_bundle, profile, tmp_path / "pi.tar.gz")
    release = read_release(archive).release_id
    root, boot = tmp_path / "rootfs", tmp_path / "bootfs"
    (root / "etc").mkdir(parents=True)
    boot.mkdir()
    config_txt = boot / "config.txt"
    config_txt.write_text("dtparam=audio=on\ncamera_auto_detect=1\n[cm4]\notg_mode=1\n")

    # A tampered archive writes nothing.
    code, _, err = run_cli(["deploy", tampered(archive, tmp_path / "bad.tar.gz"), "--target", root, "--boot", boot], capsys)
    assert code == 1 and "sha256 does not match" in err
    assert os.listdir(root) == ["etc"] and not os.listdir(root / "etc")

    code, out, err = run_cli(["deploy", archive, "--target", root, "--boot", boot, "--env", "PIP_INDEX_URL=http://pi.lan/simple?x=%20"], capsys)
    assert code == 0, err
    assert f"staged release {release}" in out and "added dtoverlay=imx708" in out
    base = root / "opt" / "edgesight"
    rel_dir = base / "releases" / release
    assert sorted(p.name for p in rel_dir.iterdir()) == ["MANIFEST.json", "edgesight.service", "model", "profile.yaml",
                                                          "requirements.txt", "run.args"]
    assert (rel_dir / "model" / "model.tflite").is_file() and not (rel_dir / "venv").exists()
    assert os.readlink(base / "current") == f"releases/{release}"
    assert (base / "current" / "run.args").is_file()

    systemd = root / "etc" / "systemd" / "system"
    unit = (systemd / "edgesight.service").read_text()
    assert unit == (rel_dir / "edgesight.service").read_text()
    assert "@PREFIX@" not in unit and "User=edgesight" in unit
    home = f"/opt/edgesight/releases/{release}"
    assert f"ExecStart={home}/venv/bin/edgesight run {home}/model --source synthetic:64x48@10" in unit
    wants = systemd / "multi-user.target.wants"
    assert os.readlink(wants / "edgesight.service") == "/etc/systemd/system/edgesight.service"
    assert os.readlink(wants / "edgesight-firstboot.service") == "/etc/systemd/system/edgesight-firstboot.service"
    firstboot = (systemd / "edgesight-firstboot.service").read_text()
    installer = "/opt/edgesight/firstboot/edgesight-deploy/install.sh"
    assert f"ExecStart=/bin/sh {installer} --prefix /opt/edgesight --user edgesight" in firstboot
    assert "Before=edgesight.service" in firstboot and "After=network-online.target" in firstboot
    assert "ExecStartPost=/bin/systemctl disable edgesight-firstboot.service" in firstboot
    assert 'Environment="PIP_INDEX_URL=http://pi.lan/simple?x=%%20"' in firstboot
    rules = root / "etc" / "udev" / "rules.d" / "99-edgesight-test.rules"
    assert rules.read_text() == RULES
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in (rules, systemd / "edgesight.service", systemd / "edgesight-firstboot.service"))

    # The first-boot installer's copy is the archive as shipped: install.sh verifies it on the device.
    staged = base / "firstboot" / TOP
    manifest = json.loads((staged / "MANIFEST.json").read_text())
    assert all(hashlib.sha256((staged / rel).read_bytes()).hexdigest() == sha for rel, sha in manifest["files"].items())

    text = config_txt.read_text()
    assert text.startswith("dtparam=audio=on\ncamera_auto_detect=1\n[cm4]\notg_mode=1\n")
    block = text.split("# >>> edgesight", 1)[1].splitlines()[1:]
    assert block == ["[all]", "dtoverlay=imx708", "# <<< edgesight <<<"]

    # Again: config.txt unchanged, everything else the same.
    code, out, err = run_cli(["deploy", archive, "--target", root, "--boot", boot], capsys)
    assert code == 0, err
    assert config_txt.read_text() == text and "already has the camera settings" in out
    assert os.readlink(base / "current") == f"releases/{release}"


def test_target_checks(archives, tmp_path, capsys):
    code, _, err = run_cli(["deploy", archives["a"], "--target", tmp_path], capsys)
    assert code == 1 and "no etc/ folder" in err
    (tmp_path / "etc").mkdir()
    code, _, err = run_cli(["deploy", archives["a"], "--target", tmp_path, "--boot", tmp_path], capsys)
    assert code == 1 and "no config.txt" in err
    code, _, err = run_cli(["deploy", archives["a"], "--target", tmp_path, "--host", "pi@cam1"], capsys)
    assert code == 1 and "not both" in err


def test_merge_boot_config_is_idempotent():
    text, added = merge_boot_config("a=1\n", "# c\na=1\nb=2\n", "rpi5")
    assert added == ["b=2"] and text.startswith("a=1\n\n# >>> edgesight (rpi5)")
    assert merge_boot_config(text, "# c\na=1\nb=2\n", "rpi5") == (text, ["b=2"])
    assert merge_boot_config("a=1\nb=2\n", "a=1\nb=2\n", "rpi5") == ("a=1\nb=2\n", [])
    # The settings were added by hand since: the block goes.
    assert merge_boot_config(text.replace("a=1\n", "a=1\nb=2\n", 1), "b=2\n", "rpi5") == ("a=1\nb=2\n", [])
