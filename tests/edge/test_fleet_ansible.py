"""`edgesight fleet ansible`: the playbook it writes, run by `ansible-playbook` (PyPI ansible-core)
against two real sshd on 127.0.0.1, each "device" with its own port and prefix.

As in test_deploy.py there is no systemd: the role starts the background runtime with
`edgesight_runtime` pointing at this venv's edgesight, install.sh skips pip and apt, the service
user is `nobody`, and each device trusts the signing key in a file of the test's own
(EDGESIGHT_ALLOWED_SIGNERS). Release 2 takes its camera from the device's environment
(EDGESIGHT_SOURCE, set in the inventory): camA has one, camB has none, so there the new
release fails its health check and is rolled back to release 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml

from edgesight.edge.errors import DeployError
from edgesight.edge.fleet.deploy import read_release
from edgesight.edge.fleet.playbook import PlaybookConfig, write_playbook
from tests.conftest import run_cli

from .test_deploy import RUNTIME, SSHD, _free_port, _keygen, _unavailable, current, make_archive, runtime_pid, stop_runtime, write_profile

ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or shutil.which("ansible-playbook")
SECRET = "vaulted-token-9f3a"


def _needs_ansible() -> None:
    if ANSIBLE_PLAYBOOK is None:
        if os.environ.get("CI"):
            pytest.fail("ansible-playbook is missing; CI installs ansible-core with the dev extra")
        pytest.skip("ansible-core is not installed: pip install 'edgesight[fleet]'")


@contextmanager
def sshd(folder: Path, client_pub: str):
    """An sshd on a free 127.0.0.1 port accepting the client key; yields (port, host key line)."""
    folder.mkdir(parents=True)
    host_pub = _keygen(folder / "host_key")
    (folder / "authorized_keys").write_text(client_pub + "\n")
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
    ]) + "\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    with open(folder / "sshd.log", "wb") as log:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config), "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        import socket

        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (folder / "sshd.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"sshd does not listen on {port}"
                time.sleep(0.1)
        yield port, f"[127.0.0.1]:{port} {host_pub}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def fleet(tmp_path, color_bundle):
    """Two devices (camB listed first), their inventory, and two signed releases."""
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None:
        _unavailable("OpenSSH (sshd, ssh, ssh-keygen) is not installed: apt-get install openssh-server")
    if os.geteuid() != 0:
        _unavailable("the test sshd must run as root to accept logins")
    _needs_ansible()
    client = tmp_path / "client" / "id_ed25519"
    client.parent.mkdir()
    client_pub = _keygen(client)
    release_key = tmp_path / "release-key"
    _keygen(release_key)
    archives = {
        "r1": make_archive_signed(color_bundle, write_profile(tmp_path / "r1.yaml"), tmp_path / "r1.tar.gz", release_key),
        "r2": make_archive_signed(color_bundle, write_profile_without_source(tmp_path / "r2.yaml"), tmp_path / "r2.tar.gz", release_key),
    }
    with ExitStack() as stack:
        servers = {name: stack.enter_context(sshd(tmp_path / f"sshd-{name}", client_pub)) for name in ("camB", "camA")}
        known = tmp_path / "client" / "known_hosts"
        known.write_text("".join(line + "\n" for _, line in servers.values()))
        prefixes = {name: tmp_path / f"dev-{name}" for name in servers}
        common_env = {"EDGESIGHT_SKIP_PIP": "1", "EDGESIGHT_SKIP_APT": "1", "EDGESIGHT_PYTHON": sys.executable,
                      "EDGESIGHT_ALLOWED_SIGNERS": str(tmp_path / "device-etc" / "allowed_signers"), "EDGESIGHT_HTTP_TOKEN": SECRET}
        hosts = {}
        for name, (port, _) in servers.items():
            env = dict(common_env, **({"EDGESIGHT_SOURCE": "synthetic:64x48@10"} if name == "camA" else {}))
            hosts[name] = {"ansible_host": "127.0.0.1", "ansible_port": port, "edgesight_prefix": str(prefixes[name]), "edgesight_env": env}
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts, "vars": {
            "ansible_user": "root", "ansible_ssh_private_key_file": str(client), "ansible_python_interpreter": sys.executable,
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={known} -o IdentitiesOnly=yes",
            "edgesight_user": "nobody", "edgesight_runtime": RUNTIME, "edgesight_health_timeout": 30,
        }}}, sort_keys=False))
        yield {"inventory": inventory, "archives": archives, "prefixes": prefixes, "key": release_key, "tmp": tmp_path}
        for prefix in prefixes.values():
            stop_runtime(prefix)


def make_archive_signed(bundle: Path, profile: Path, out: Path, key: Path) -> Path:
    from edgesight.edge.fleet.archive import build_deploy_archive
    from edgesight.edge.fleet.profiles import load_profile, resolve

    build_deploy_archive(bundle, resolve(load_profile(profile)), out, sign=key)
    return out


def write_profile_without_source(path: Path) -> Path:
    """A release that runs the device's own camera (EDGESIGHT_SOURCE, else camera 0), giving up after 1 s."""
    write_profile(path)
    data = yaml.safe_load(path.read_text())
    del data["runtime"]["source"]
    data["runtime"]["open_timeout"] = 1
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _play(fleet, archive: str, out: str, *options: str, capsys) -> tuple:
    """Write the playbook with `edgesight fleet ansible`, run it; returns (rc, output, results)."""
    folder = fleet["tmp"] / out
    code, stdout, err = run_cli(["fleet", "ansible", fleet["archives"][archive], "--inventory", fleet["inventory"], "--out", folder,
                                 "--trust", f"{fleet['key']}.pub", *options], capsys)
    assert code == 0, err
    assert "signature checked: signed by" in stdout and "2 host(s)" in stdout
    env = {**os.environ, "ANSIBLE_HOME": str(fleet["tmp"] / "ansible-home"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "site.yml"], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    results = {p.stem: json.loads(p.read_text()) for p in (folder / "results").glob("*.json")}
    return proc.returncode, proc.stdout + proc.stderr, results


@pytest.mark.slow
def test_rollout_in_batches_rolls_back_the_failed_host_and_stops_at_the_failure_limit(fleet, capsys):
    r1, r2 = (read_release(fleet["archives"][k]).release_id for k in ("r1", "r2"))
    a, b = fleet["prefixes"]["camA"], fleet["prefixes"]["camB"]

    # Release 1 everywhere, both hosts in one batch.
    rc, out, results = _play(fleet, "r1", "play-r1", "--serial", "2", capsys=capsys)
    assert rc == 0, out
    assert {h: r["status"] for h, r in results.items()} == {"camA": "deployed", "camB": "deployed"}, out
    assert current(a) == current(b) == f"releases/{r1}"
    assert "frames processed" in results["camA"]["detail"]
    pids = {name: runtime_pid(p) for name, p in (("camA", a), ("camB", b))}
    assert all(pids.values())

    # Release 2, one host per batch, no failure allowed: camB (first) fails its health check and is
    # rolled back; the play stops there, camA is not touched.
    rc, out, results = _play(fleet, "r2", "play-r2-canary", "--serial", "1", "--max-fail-percentage", "0", capsys=capsys)
    assert rc != 0
    assert set(results) == {"camB"}, out
    assert results["camB"]["status"] == "rolled back" and results["camB"]["previous"] == r1
    reason = results["camB"]["reason"]
    assert reason.startswith("health check failed: the service stopped: error:") and reason.endswith(f"rolled back to release {r1}"), reason
    assert f"edgesight release {r2} rolled back: health check failed" in out
    assert current(b) == f"releases/{r1}" and (b / "releases" / r2).is_dir(), "the failed release stays for a post-mortem"
    assert runtime_pid(b) not in (None, pids["camB"]), "release 1 runs again, restarted"
    assert current(a) == f"releases/{r1}" and runtime_pid(a) == pids["camA"]

    # Both in one batch with up to half failing allowed: camA is updated, camB rolled back again.
    rc, out, results = _play(fleet, "r2", "play-r2", "--serial", "2", "--max-fail-percentage", "50", capsys=capsys)
    assert rc != 0
    assert {h: r["status"] for h, r in results.items()} == {"camA": "deployed", "camB": "rolled back"}, out
    assert current(a) == f"releases/{r2}" and current(b) == f"releases/{r1}"
    assert json.loads((a / "state" / "status.json").read_text())["frames"] > 0
    # The environment (a vaulted token among it) never reaches Ansible's output.
    assert SECRET not in out


def test_playbook_checks_before_writing_anything(tmp_path, color_bundle, capsys):
    unsigned = make_archive(color_bundle, write_profile(tmp_path / "p.yaml"), tmp_path / "u.tar.gz")
    inventory = tmp_path / "inv.ini"
    inventory.write_text("[cams]\ncam1 ansible_host=127.0.0.1\n")
    out = tmp_path / "play"
    with pytest.raises(DeployError, match="not signed; bundle it with --sign KEY"):
        write_playbook(unsigned, inventory, out)
    for config, fragment in [(PlaybookConfig(serial=("0",)), "--serial 0"), (PlaybookConfig(serial=("150%",)), "--serial 150%"),
                             (PlaybookConfig(prefix="relative"), "--prefix"), (PlaybookConfig(user="root"), "--user root"),
                             (PlaybookConfig(runtime="edgesight"), "--runtime 'edgesight'")]:
        with pytest.raises(DeployError, match=fragment):
            write_playbook(unsigned, inventory, out, config)
    with pytest.raises(DeployError, match="--inventory .*: no such file"):
        write_playbook(unsigned, tmp_path / "missing.ini", out, PlaybookConfig(allow_unsigned=True))
    assert not out.exists()

    report = write_playbook(unsigned, inventory, out, PlaybookConfig(allow_unsigned=True, serial=("1", "25%"), max_fail_percentage=10))
    site = yaml.safe_load((out / "site.yml").read_text())[0]
    assert (site["serial"], site["max_fail_percentage"], site["hosts"], site["roles"]) == ([1, "25%"], 10, "all", ["edgesight_release"])
    defaults = yaml.safe_load((out / "roles/edgesight_release/defaults/main.yml").read_text())
    rel = read_release(unsigned)
    assert defaults["edgesight_release"] == rel.release_id and defaults["edgesight_sha256"] == rel.sha256
    assert defaults["edgesight_env"] == {"EDGESIGHT_ALLOW_UNSIGNED": "1"} and defaults["edgesight_no_log"] is True
    assert (out / "roles/edgesight_release/files/u.tar.gz").read_bytes() == unsigned.read_bytes()
    assert f"inventory = {inventory.resolve()}" in (out / "ansible.cfg").read_text()
    assert report.command == f"cd {out} && ansible-playbook site.yml"
    # An existing folder is replaced only when asked.
    code, _, err = run_cli(["fleet", "ansible", unsigned, "--inventory", inventory, "--out", out, "--allow-unsigned"], capsys)
    assert code == 1 and err.count("\n") == 2 and "already exists; choose another --out or pass --overwrite" in err
