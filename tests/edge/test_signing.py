"""Signed deploy archives with real OpenSSH keys: `bundle --sign`, the device's allowed_signers,
install.sh's check before it touches anything, and `deploy --target --trust`.

Keys are made here with `ssh-keygen -t ed25519 -N ''`. The "device" trust file lives in the test's
folder (EDGESIGHT_ALLOWED_SIGNERS), never in this machine's /etc.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from edgesight.edge.errors import BundleError, DeployError
from edgesight.edge.fleet.archive import TOP, archive_bytes, build_deploy_archive, extract_archive, verify_archive
from edgesight.edge.fleet.profiles import builtin_template, load_profile, resolve
from edgesight.edge.fleet.signing import NAMESPACE, SIGNATURE, fingerprint, key_blob, merge_signers, trusted_keys
from tests.conftest import run_cli
from tests.edge.test_containment import archive_files, model_bundle, rehashed, rootfs, write_profile
from tests.edge.test_profiles import snapshot as tree

if shutil.which("ssh-keygen") is None:
    pytest.skip("ssh-keygen is not installed: apt-get install openssh-client", allow_module_level=True)


def keygen(path: Path, comment: str = "release@ws", passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)], check=True)
    return path


def key_fingerprint(path: Path) -> str:
    keytype, b64 = Path(f"{path}.pub").read_text().split()[:2]
    return fingerprint(key_blob(keytype, b64))


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    return {"release": keygen(folder / "edgesight-release"), "other": keygen(folder / "other", "mallory@laptop")}


def bundle(tmp_path: Path, name: str, key=None) -> Path:
    """A signed (``key``) or unsigned archive of a crafted model bundle, as `edgesight bundle` writes it."""
    src = tmp_path / "bundle" if (tmp_path / "bundle").exists() else model_bundle(tmp_path / "bundle")
    out = tmp_path / f"{name}.tar.gz"
    build_deploy_archive(src, resolve(load_profile(write_profile(tmp_path / "p.yaml"))), out, sign=key)
    return out


def trust_file(tmp_path: Path, *keys: Path) -> Path:
    """The device's allowed_signers, as `deploy --trust` writes it."""
    path = tmp_path / "device-etc" / "allowed_signers"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in trusted_keys([f"{k}.pub" for k in keys])))
    return path


def install(archive: Path, tmp_path: Path, signers: Path, prefix: str = "opt", **env) -> subprocess.CompletedProcess:
    """Unpack ``archive`` and run its install.sh by hand (unprivileged, no pip) against ``signers``."""
    unpacked = extract_archive(archive, tmp_path / f"unpacked-{archive.stem}")
    return run_installer(unpacked / "install.sh", tmp_path, signers, prefix, **env)


def run_installer(script: Path, tmp_path: Path, signers: Path, prefix: str = "opt", **env) -> subprocess.CompletedProcess:
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    # A fake `id` reports uid 1000: install.sh stays under its prefix (the tests may run as root).
    (shim / "id").write_text('#!/bin/sh\nif [ "$#" -eq 1 ] && [ "$1" = -u ]; then echo 1000; else exec /usr/bin/id "$@"; fi\n')
    (shim / "id").chmod(0o755)
    env = {"PATH": f"{shim}:/usr/bin:/bin", "HOME": str(tmp_path), "EDGESIGHT_SKIP_PIP": "1",
           "EDGESIGHT_PYTHON": sys.executable, "EDGESIGHT_ALLOWED_SIGNERS": str(signers), **env}
    return subprocess.run(["sh", str(script), "--prefix", str(tmp_path / prefix)], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def signature_by(key: Path, manifest: bytes, tmp_path: Path, namespace: str = NAMESPACE) -> bytes:
    """``key``'s signature of ``manifest``, made with ssh-keygen directly."""
    folder = tmp_path / f"sign-{key.name}-{namespace}"
    folder.mkdir()
    (folder / "m").write_bytes(manifest)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace, str(folder / "m")], check=True, capture_output=True)
    return (folder / "m.sig").read_bytes()


def one_byte_changed(files: dict) -> None:
    files["run.args"] = files["run.args"].replace(b"synthetic:64x48@10", b"synthetic:64x48@11")


# --------------------------------------------------------------------------------------------
# bundle --sign


def test_bundle_sign_adds_a_reproducible_signature(tmp_path, keys, capsys, monkeypatch):
    src = model_bundle(tmp_path / "bundle")
    profile = write_profile(tmp_path / "p.yaml")
    monkeypatch.chdir(tmp_path)
    args = ["bundle", src, "--profile", profile, "--no-wheelhouse", "--sign", keys["release"]]
    code, out, err = run_cli(args + ["-o", "a.tar.gz"], capsys)
    assert code == 0, err
    assert f"signed by ED25519 {key_fingerprint(keys['release'])}" in out and f"--trust {keys['release']}.pub" in out
    code, _, err = run_cli(args + ["-o", "b.tar.gz"], capsys)
    assert code == 0, err
    signed = (tmp_path / "a.tar.gz").read_bytes()
    assert signed == (tmp_path / "b.tar.gz").read_bytes(), "Ed25519 signatures are deterministic: same inputs, same bytes"

    files = archive_files(tmp_path / "a.tar.gz")
    assert files[SIGNATURE].startswith(b"-----BEGIN SSH SIGNATURE-----\n")
    manifest = verify_archive(tmp_path / "a.tar.gz")
    assert SIGNATURE not in manifest["files"] and set(manifest["files"]) == set(files) - {"MANIFEST.json", SIGNATURE}
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert tar.getmember(f"{TOP}/{SIGNATURE}").mode == 0o644
    # The signature is the only difference from the unsigned archive.
    code, _, _ = run_cli(["bundle", src, "--profile", profile, "--no-wheelhouse", "-o", "u.tar.gz"], capsys)
    assert code == 0
    unsigned = archive_files(tmp_path / "u.tar.gz")
    assert {n: d for n, d in files.items() if n != SIGNATURE} == unsigned
    (tmp_path / "sig").write_bytes(files[SIGNATURE])
    r = subprocess.run(["ssh-keygen", "-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(tmp_path / "sig")],
                       input=files["MANIFEST.json"], capture_output=True, check=False)
    assert r.returncode == 0 and key_fingerprint(keys["release"]) in r.stdout.decode()


def test_sign_refuses_a_passphrase_without_a_terminal(tmp_path, capsys, monkeypatch):
    locked = keygen(tmp_path / "locked", passphrase="correct horse")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    src = model_bundle(tmp_path / "bundle")
    # Refused before anything is fetched or built: the error is the only output.
    code, out, err = run_cli(["bundle", src, "-p", write_profile(tmp_path / "p.yaml"), "--sign", locked,
                              "-o", tmp_path / "a.tar.gz"], capsys)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: --sign {locked}: the key has a passphrase and there is no terminal") and f"ssh-add {locked}" in err
    assert not (tmp_path / "a.tar.gz").exists()
    code, out, err = run_cli(["bundle", src, "-p", tmp_path / "p.yaml", "--sign", tmp_path / "nokey", "-o", tmp_path / "a.tar.gz"], capsys)
    assert code == 1 and out == "" and err.startswith(f"error: --sign {tmp_path / 'nokey'}: no such key file; create one with ssh-keygen")


def test_a_key_with_a_passphrase_signs_through_ssh_agent(tmp_path, keys, monkeypatch):
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent is not installed: apt-get install openssh-client")
    locked = keygen(tmp_path / "locked", passphrase="correct horse")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert agent.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho 'correct horse'\n")
        askpass.chmod(0o755)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
               "DISPLAY": ":0"}
        subprocess.run(["ssh-add", str(locked)], env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        # No terminal here: the agent signs, for the private key file and for its .pub alike.
        by_private = archive_files(bundle(tmp_path, "private", locked))[SIGNATURE]
        by_public = archive_files(bundle(tmp_path, "public", Path(f"{locked}.pub")))[SIGNATURE]
        assert by_private == by_public
        signers = trust_file(tmp_path, locked)
        assert install(tmp_path / "public.tar.gz", tmp_path, signers).returncode == 0
    finally:
        agent.terminate()
        agent.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# install.sh on a device that trusts a key


def test_a_device_that_trusts_the_key_installs_the_signed_archive(tmp_path, keys):
    signers = trust_file(tmp_path, keys["release"])
    assert signers.read_text().startswith(f'release@ws namespaces="{NAMESPACE}" ssh-ed25519 AAAA')
    r = install(bundle(tmp_path, "signed", keys["release"]), tmp_path, signers)
    assert r.returncode == 0, r.stderr
    assert f"MANIFEST.json signed by release@ws (ED25519 {key_fingerprint(keys['release'])})" in r.stdout
    assert "WARNING" not in r.stderr
    assert (tmp_path / "opt" / "current" / SIGNATURE).is_file(), "the release keeps its signature"


def test_an_archive_altered_and_rehashed_without_the_key_is_refused(tmp_path, keys, capsys):
    signers = trust_file(tmp_path, keys["release"])
    good = bundle(tmp_path, "signed", keys["release"])
    bad = rehashed(good, tmp_path / "rehashed.tar.gz", one_byte_changed)
    verify_archive(bad)  # consistent with its manifest: only the signature tells
    r = install(bad, tmp_path, signers)
    assert r.returncode == 1
    assert "install.sh: error: MANIFEST.json.sig does not match MANIFEST.json: the manifest was changed after it was signed" in r.stderr
    assert not (tmp_path / "opt").exists(), "refused before anything is written"

    # deploy refuses it on this machine: before connecting with --trust, before writing with --target.
    code, out, err = run_cli(["deploy", bad, "--host", "pi@127.0.0.1", "--port", "1", "--trust", f"{keys['release']}.pub"], capsys)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {bad}: MANIFEST.json.sig does not match MANIFEST.json: the manifest was changed after it was signed")
    root = rootfs(tmp_path)
    code, _, err = run_cli(["deploy", bad, "--target", root, "--trust", f"{keys['release']}.pub"], capsys)
    assert code == 1 and "MANIFEST.json.sig does not match MANIFEST.json" in err and os.listdir(root) == ["etc"]


def test_a_wrong_keys_signature_is_refused(tmp_path, keys, capsys):
    signers = trust_file(tmp_path, keys["release"])
    forged = bundle(tmp_path, "forged", keys["other"])
    r = install(forged, tmp_path, signers)
    assert r.returncode == 1 and not (tmp_path / "opt").exists()
    assert (f"install.sh: error: MANIFEST.json is signed by ED25519 {key_fingerprint(keys['other'])}, which {signers} "
            "does not list") in r.stderr
    code, _, err = run_cli(["deploy", forged, "--host", "pi@127.0.0.1", "--port", "1", "--trust", f"{keys['release']}.pub"], capsys)
    assert code == 1 and f"signed by ED25519 {key_fingerprint(keys['other'])}, which --trust does not trust" in err

    # A signature of the right key made for another purpose (here: git's namespace) is no deploy signature.
    files = archive_files(bundle(tmp_path, "signed", keys["release"]))
    files[SIGNATURE] = signature_by(keys["release"], files["MANIFEST.json"], tmp_path, namespace="git")
    (tmp_path / "git.tar.gz").write_bytes(archive_bytes(files))
    r = install(tmp_path / "git.tar.gz", tmp_path, signers)
    assert r.returncode == 1 and f"MANIFEST.json.sig is not an edgesight deploy signature (namespace is not {NAMESPACE})" in r.stderr


def test_unsigned_is_refused_once_a_key_is_trusted_unless_allowed_loudly(tmp_path, keys):
    unsigned = bundle(tmp_path, "unsigned")
    missing = tmp_path / "nowhere" / "allowed_signers"
    r = install(unsigned, tmp_path, missing, prefix="fresh")
    assert r.returncode == 0, r.stderr
    assert f"install.sh: WARNING: this device trusts no signer yet ({missing} does not exist)" in r.stderr
    assert "--trust" in r.stderr and r.stderr.count("WARNING") == 2, "said when checked and again at the end"

    signers = trust_file(tmp_path, keys["release"])
    r = install(unsigned, tmp_path, signers)
    assert r.returncode == 1 and not (tmp_path / "opt").exists()
    assert (f"install.sh: error: MANIFEST.json is not signed, and this device installs only archives signed by a key in {signers}: "
            "bundle it with 'edgesight bundle --sign KEY'") in r.stderr
    r = install(unsigned, tmp_path, signers, EDGESIGHT_ALLOW_UNSIGNED="1")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("install.sh: WARNING: EDGESIGHT_ALLOW_UNSIGNED=1: this install does NOT check the archive's signature") == 2


def test_the_trust_file_must_be_roots_alone(tmp_path, keys):
    signers = trust_file(tmp_path, keys["release"])
    signed = bundle(tmp_path, "signed", keys["release"])
    signers.chmod(0o664)
    r = install(signed, tmp_path, signers)
    assert r.returncode == 1 and f"{signers} is writable by group or others, so anyone could add a signer: chmod go-w" in r.stderr
    signers.chmod(0o644)
    linked = tmp_path / "linked_signers"
    linked.symlink_to(signers)
    r = install(signed, tmp_path, linked)
    assert r.returncode == 1 and f"{linked} is a link" in r.stderr and not (tmp_path / "opt").exists()


def test_rerunning_install_sh_checks_the_release_and_its_signature_again(tmp_path, keys):
    signers = trust_file(tmp_path, keys["release"])
    unpacked = extract_archive(bundle(tmp_path, "signed", keys["release"]), tmp_path / "unpacked")
    assert run_installer(unpacked / "install.sh", tmp_path, signers).returncode == 0
    prefix = tmp_path / "opt"
    before = tree(prefix)
    release = prefix / os.readlink(prefix / "current")
    (release / SIGNATURE).write_text("-----BEGIN SSH SIGNATURE-----\nforged\n-----END SSH SIGNATURE-----\n")
    with open(release / "run.args", "a") as f:
        f.write("--jsonl\nx.jsonl\n")
    r = run_installer(unpacked / "install.sh", tmp_path, signers)
    assert r.returncode == 0, r.stderr
    assert "MANIFEST.json signed by release@ws" in r.stdout and f"repaired {SIGNATURE}, run.args" in r.stdout
    assert tree(prefix) == before
    # The archive's own copy is checked on every run: a signature swapped for another key's is refused.
    (unpacked / SIGNATURE).write_bytes(signature_by(keys["other"], (unpacked / "MANIFEST.json").read_bytes(), tmp_path))
    r = run_installer(unpacked / "install.sh", tmp_path, signers)
    assert r.returncode == 1 and f"signed by ED25519 {key_fingerprint(keys['other'])}, which {signers} does not list" in r.stderr
    assert tree(prefix) == before


def test_install_sh_and_the_tools_share_the_namespace():
    assert f"\nNAMESPACE={NAMESPACE}\n" in builtin_template("install.sh.in")


# --------------------------------------------------------------------------------------------
# deploy --target --trust: the card's allowed_signers


def test_target_trust_installs_and_extends_allowed_signers(tmp_path, keys, capsys):
    signed = bundle(tmp_path, "signed", keys["release"])
    root = rootfs(tmp_path)
    code, out, err = run_cli(["deploy", signed, "--target", root, "--trust", f"{keys['release']}.pub"], capsys)
    assert code == 0, err
    signers = root / "etc" / "edgesight" / "allowed_signers"
    assert signers.read_text() == trusted_keys([f"{keys['release']}.pub"])[0] + "\n"
    assert signers.stat().st_mode & 0o777 == 0o644 and signers.parent.stat().st_mode & 0o777 == 0o755
    assert "the card trusts 1 new signing key(s)" in out and "signature checked: signed by release@ws" in out
    staged = root / "opt" / "edgesight" / "firstboot" / TOP
    assert (staged / SIGNATURE).is_file() and (root / "opt" / "edgesight" / "current" / SIGNATURE).is_file()

    # The first-boot installer checks the staged copy against the card's file.
    r = run_installer(staged / "install.sh", tmp_path, signers, prefix="booted")
    assert r.returncode == 0 and "MANIFEST.json signed by release@ws" in r.stdout, r.stderr

    # From then on the card refuses unsigned and foreign archives, before writing anything.
    before = tree(root)
    unsigned = bundle(tmp_path, "unsigned")
    code, _, err = run_cli(["deploy", unsigned, "--target", root], capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"error: {unsigned}: MANIFEST.json is not signed, and {signers} accepts only signed archives" in err
    forged = bundle(tmp_path, "forged", keys["other"])
    code, _, err = run_cli(["deploy", forged, "--target", root], capsys)
    assert code == 1 and f"which {signers} does not trust" in err
    assert tree(root) == before

    # --allow-unsigned stages it, says so, and tells the first boot.
    code, out, err = run_cli(["deploy", unsigned, "--target", root, "--allow-unsigned"], capsys)
    assert code == 0, err
    assert "WARNING: --allow-unsigned" in err and "WITHOUT checking the signature" in err
    firstboot = (root / "etc" / "systemd" / "system" / "edgesight-firstboot.service").read_text()
    assert 'Environment="EDGESIGHT_ALLOW_UNSIGNED=1"' in firstboot

    # A second key extends the file; a key given again is not repeated.
    code, out, err = run_cli(["deploy", forged, "--target", root, "--trust", f"{keys['other']}.pub",
                              "--trust", f"{keys['release']}.pub"], capsys)
    assert code == 0, err
    lines = signers.read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith(f'mallory@laptop namespaces="{NAMESPACE}" ssh-ed25519 ')


def test_target_without_trust_warns_that_the_device_trusts_no_signer(tmp_path, keys, capsys):
    root = rootfs(tmp_path)
    code, out, err = run_cli(["deploy", bundle(tmp_path, "unsigned"), "--target", root], capsys)
    assert code == 0, err
    assert "WARNING: the device trusts no signer yet" in err and "--trust ~/.ssh/edgesight-release.pub" in err
    assert not (root / "etc" / "edgesight").exists()


def test_trust_takes_public_keys_only(tmp_path, keys, capsys):
    with pytest.raises(DeployError, match=f"--trust {keys['release']}: this is a private key; give its public half"):
        trusted_keys([keys["release"]])
    junk = tmp_path / "junk.pub"
    junk.write_text("ssh-ed25519 not-base64!\n")
    with pytest.raises(DeployError, match=f"--trust {junk}: line 1 is not an OpenSSH public key"):
        trusted_keys([junk])
    code, _, err = run_cli(["deploy", bundle(tmp_path, "a"), "--target", rootfs(tmp_path), "--trust", tmp_path / "none.pub"], capsys)
    assert code == 1 and f"--trust {tmp_path / 'none.pub'}: cannot read it" in err
    line = trusted_keys([f"{keys['release']}.pub"])[0]
    text, added = merge_signers("# pinned by hand\n" + line, [line, trusted_keys([f"{keys['other']}.pub"])[0]])
    assert added == 1 and text.splitlines()[:2] == ["# pinned by hand", line]


def test_signing_errors_name_the_key(tmp_path):
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello\n")
    with pytest.raises(BundleError, match=f"--sign {not_a_key}: not an OpenSSH key"):
        bundle(tmp_path, "x", not_a_key)
    open_key = keygen(tmp_path / "readable")
    open_key.chmod(0o644)
    with pytest.raises(BundleError, match=f"--sign {open_key}: ssh-keygen cannot load the key .*bad permissions.*; chmod 600 {open_key}"):
        bundle(tmp_path, "y", open_key)
    ecdsa = tmp_path / "ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(ecdsa)], check=True)
    package = build_deploy_archive(tmp_path / "bundle", resolve(load_profile(tmp_path / "p.yaml")), tmp_path / "e.tar.gz", sign=ecdsa)
    assert package.signer.startswith("ECDSA SHA256:")
    assert any("ECDSA key: its signatures differ each time, so the archive's bytes do too" in w for w in package.warnings)
