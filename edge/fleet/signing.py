"""Signed deploy archives: an OpenSSH signature over MANIFEST.json, and the signers a device trusts.

``edgesight bundle --sign KEY`` signs ``MANIFEST.json`` with ``ssh-keygen -Y sign`` in a namespace
of our own (``edgesight-deploy@v1``) and adds the signature to the archive as
``MANIFEST.json.sig``. The manifest holds the sha256 of every other file, so the one signature
covers the whole archive, ``install.sh`` and the unit included. Keys and signatures stay with
OpenSSH: no crypto dependency, and keys the operator already knows how to keep.

A device trusts the keys listed in an ``allowed_signers`` file (ssh-keygen's format, each key
limited to our namespace, so a key trusted here verifies nothing else) at
``/etc/edgesight/allowed_signers``; ``EDGESIGHT_ALLOWED_SIGNERS`` names another path.
``edgesight deploy --trust KEY.pub`` writes or extends it. From then on ``install.sh`` refuses an
archive that no listed key signed, unless ``EDGESIGHT_ALLOW_UNSIGNED=1`` (``--allow-unsigned``).

An Ed25519 (or RSA) signature depends only on the key and the manifest, so a signed archive is as
reproducible as an unsigned one; ECDSA and security-key signatures differ each time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple, Type, Union

from ..errors import BundleError, DeployError, EdgesightError

NAMESPACE = "edgesight-deploy@v1"
SIGNATURE = "MANIFEST.json.sig"
DEFAULT_SIGNERS = "/etc/edgesight/allowed_signers"
SIGNERS_ENV = "EDGESIGHT_ALLOWED_SIGNERS"
ALLOW_UNSIGNED_ENV = "EDGESIGHT_ALLOW_UNSIGNED"
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
# Key kinds (as ssh-keygen names them) whose signatures depend on the key and the data alone.
DETERMINISTIC = ("ED25519", "RSA")
# A principal is a pattern list in allowed_signers: no wildcards, commas, quotes or blanks.
PRINCIPAL_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")
SIGN_TIMEOUT_S = 300.0

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Signature:
    """A signature made by ``sign_manifest``.

    Attributes:
        data: the ``MANIFEST.json.sig`` bytes (an armored SSH signature).
        key: the signing key, as ``ED25519 SHA256:...``.
        warnings: what the signature does not give, one sentence each (reproducible bytes).
    """

    data: bytes
    key: str
    warnings: Tuple[str, ...]


def _ssh_keygen(args: Sequence[str], what: str, error: Type[EdgesightError] = BundleError, cwd: Optional[str] = None,
                stdin=subprocess.DEVNULL, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``ssh-keygen ARGS``; stdout and stderr are captured as text."""
    if shutil.which("ssh-keygen") is None:
        raise error(f"{what}: ssh-keygen is not installed here; apt-get install openssh-client (OpenSSH 8.2 or newer)")
    try:
        return subprocess.run(["ssh-keygen", *args], cwd=cwd, stdin=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise error(f"{what}: ssh-keygen did not finish within {timeout:g} s") from e


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _key_of(output: str) -> str:
    """``ED25519 SHA256:...`` from ssh-keygen's ``Good "..." signature ... with ED25519 key SHA256:...``."""
    m = re.search(r"with (\S+) key (\S+)", output)
    return f"{m.group(1)} {m.group(2)}" if m else "an unnamed key"


@dataclass(frozen=True)
class SigningKey:
    """A key ``--sign`` names, checked before any work: its path and how ssh-keygen will use it."""

    path: Path
    where: str
    private: bool
    locked: bool
    interactive: bool


def signing_key(key: PathLike) -> SigningKey:
    """Check a ``--sign`` key before the archive is built.

    Raises:
        BundleError: no such file, not an OpenSSH key, or a key with a passphrase where there is
            neither a terminal to ask for it nor an ssh-agent that may hold it.
    """
    where = f"--sign {key}"
    # ssh-keygen runs in a folder of its own: the key by its absolute path.
    path = Path(key).expanduser().absolute()
    if not path.is_file():
        raise BundleError(f"{where}: no such key file; create one with ssh-keygen -t ed25519 -f ~/.ssh/edgesight-release")
    try:
        head = path.read_bytes()[:100]
    except OSError as e:
        raise BundleError(f"{where}: cannot read it ({e.strerror}); check the path and its permissions") from e
    private = b"PRIVATE KEY-----" in head
    if not private and not head.lstrip().startswith(tuple(t.encode() for t in KEY_TYPES)):
        raise BundleError(f"{where}: not an OpenSSH key; give the private key made by ssh-keygen -t ed25519")
    locked = False
    if private:
        r = _ssh_keygen(["-y", "-P", "", "-f", str(path)], where)
        locked = r.returncode != 0 and "passphrase" in r.stderr
        if r.returncode != 0 and not locked:
            fix = f"chmod 600 {path}" if "bad permissions" in r.stderr else "check it with ssh-keygen -l -f KEY"
            raise BundleError(f"{where}: ssh-keygen cannot load the key ({_last_line(r.stderr)}); {fix}")
    elif not os.environ.get("SSH_AUTH_SOCK"):
        raise BundleError(f"{where}: a public key signs only through ssh-agent, and none runs here; give the private key file")
    try:
        tty = sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # a closed stdin
        tty = False
    # ssh-keygen asks for a passphrase on the terminal; without one it would read stdin instead.
    if locked and not tty and not os.environ.get("SSH_AUTH_SOCK"):
        raise BundleError(_no_passphrase(where, path))
    return SigningKey(path=path, where=where, private=private, locked=locked, interactive=locked and tty)


def _no_passphrase(where: str, path: Path) -> str:
    return (f"{where}: the key has a passphrase and there is no terminal to ask for it, nor an ssh-agent holding it; "
            f"load it first (ssh-add {path}) or run bundle in a terminal")


def sign_manifest(manifest: bytes, key: Union[PathLike, SigningKey]) -> Signature:
    """Sign ``MANIFEST.json``'s bytes with an OpenSSH key (``ssh-keygen -Y sign``).

    A key with a passphrase is signed through ssh-agent when the agent holds it, otherwise
    ssh-keygen asks for the passphrase on the terminal. A public key (``KEY.pub``) signs through
    ssh-agent only.

    Args:
        manifest: the ``MANIFEST.json`` bytes.
        key: the private key file (``~/.ssh/edgesight-release``) or a public key held by ssh-agent
            (or a key already checked by ``signing_key``).

    Returns:
        The signature, the key that made it and any warnings.

    Raises:
        BundleError: no such key file, not a key, a passphrase with no terminal and no agent, or
            ssh-keygen failing; the message names the key and the fix.
    """
    checked = key if isinstance(key, SigningKey) else signing_key(key)
    where, key = checked.where, checked.path
    with tempfile.TemporaryDirectory(prefix="edgesight-sign-") as tmp:
        path = os.path.join(tmp, "MANIFEST.json")
        with open(path, "wb") as f:
            f.write(manifest)
        r = _ssh_keygen(["-Y", "sign", "-f", str(key), "-n", NAMESPACE, path], where, cwd=tmp,
                        stdin=None if checked.interactive else subprocess.DEVNULL, timeout=SIGN_TIMEOUT_S)
        if r.returncode != 0 or not os.path.isfile(path + ".sig"):
            if checked.locked and not checked.interactive:
                raise BundleError(_no_passphrase(where, key))
            if not checked.private:
                raise BundleError(f"{where}: a public key signs only through ssh-agent, which does not hold it; "
                                  f"give the private key file, or load it (ssh-add) first")
            raise BundleError(f"{where}: ssh-keygen could not sign ({_last_line(r.stderr) or f'exit status {r.returncode}'})")
        with open(path + ".sig", "rb") as f:
            data = f.read()
        with open(path, "rb") as f:
            check = _ssh_keygen(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", path + ".sig"], where, stdin=f)
    if check.returncode != 0:
        raise BundleError(f"{where}: ssh-keygen made a signature that does not verify ({_last_line(check.stderr)}); "
                          "check the key with ssh-keygen -l -f KEY")
    signer = _key_of(check.stdout)
    warnings = []
    if signer.split()[0] not in DETERMINISTIC:
        warnings.append(f"{key} is a {signer.split()[0]} key: its signatures differ each time, so the archive's bytes "
                        "do too; an Ed25519 key (ssh-keygen -t ed25519) keeps archives reproducible")
    return Signature(data=data, key=signer, warnings=tuple(warnings))


# --------------------------------------------------------------------------------------------
# Trusted signers


def key_blob(keytype: str, b64: str) -> Optional[bytes]:
    """The decoded public key of ``KEYTYPE BASE64``, or None when it is not one of that type."""
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    n = int.from_bytes(blob[:4], "big")
    return blob if len(blob) > 4 + n and blob[4:4 + n] == keytype.encode() else None


def fingerprint(blob: bytes) -> str:
    """The ``SHA256:...`` fingerprint ssh-keygen prints for a public key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def trusted_keys(paths: Iterable[PathLike]) -> Tuple[str, ...]:
    """``allowed_signers`` lines for the public keys in ``paths`` (``KEY.pub`` files), in order.

    Each line names the key's comment as principal and limits the key to edgesight's namespace:
    ``release@ws namespaces="edgesight-deploy@v1" ssh-ed25519 AAAA...``.

    Args:
        paths: the ``--trust`` values; a file may hold several keys, one a line.

    Returns:
        One line per key, duplicates left out.

    Raises:
        DeployError: no such file, a private key, or a line that is not an OpenSSH public key.
    """
    lines: List[str] = []
    for path in map(lambda p: Path(p).expanduser(), paths):
        where = f"--trust {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DeployError(f"{where}: cannot read it ({e.strerror if isinstance(e, OSError) else 'not text'}); "
                              "give the public key of the signing key, e.g. ~/.ssh/edgesight-release.pub") from e
        if "PRIVATE KEY-----" in text:
            raise DeployError(f"{where}: this is a private key; give its public half ({path}.pub): "
                              "a private key never goes to a device")
        found = 0
        for n, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) < 2 or words[0] not in KEY_TYPES or key_blob(words[0], words[1]) is None:
                raise DeployError(f"{where}: line {n} is not an OpenSSH public key (ssh-ed25519 AAAA...); "
                                  "give the .pub file of the signing key")
            principal = PRINCIPAL_UNSAFE.sub("", " ".join(words[2:]).replace(" ", "_")) or "edgesight-signer"
            entry = f'{principal} namespaces="{NAMESPACE}" {words[0]} {words[1]}'
            found += 1
            if all(_key_word(known) != words[1] for known in lines):
                lines.append(entry)
        if not found:
            raise DeployError(f"{where}: no public key in it; give the .pub file of the signing key")
    return tuple(lines)


def _key_word(line: str) -> Optional[str]:
    """The base64 key of an allowed_signers line (the word after its key type), or None."""
    words = line.split()
    return next((words[i + 1] for i, w in enumerate(words[:-1]) if w in KEY_TYPES), None)


def merge_signers(existing: str, lines: Sequence[str]) -> Tuple[str, int]:
    """``existing`` allowed_signers text with the ``lines`` whose key it does not list yet added.

    Returns:
        (the new text, how many lines were added).
    """
    known = {_key_word(line) for line in existing.splitlines() if not line.lstrip().startswith("#")}
    added = [line for line in lines if _key_word(line) not in known]
    if not added:
        return existing, 0
    text = existing if not existing or existing.endswith("\n") else existing + "\n"
    return text + "".join(f"{line}\n" for line in added), len(added)


def has_signers(text: str) -> bool:
    """Whether an allowed_signers text lists any key."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def verify_manifest(manifest: bytes, signature: Optional[bytes], signers: str, where: str, source: str) -> str:
    """Check that a key of ``signers`` signed ``manifest`` for edgesight.

    Args:
        manifest: the ``MANIFEST.json`` bytes.
        signature: the ``MANIFEST.json.sig`` bytes, or None for an unsigned archive.
        signers: allowed_signers text.
        where: the archive, for messages.
        source: where ``signers`` comes from (``--trust``, a card's allowed_signers), for messages.

    Returns:
        Who signed: ``principal (ED25519 SHA256:...)``.

    Raises:
        BundleError: unsigned, altered after signing, signed for another purpose or by a key
            ``source`` does not list.
    """
    if signature is None:
        raise BundleError(f"{where}: MANIFEST.json is not signed, and {source} accepts only signed archives; bundle it "
                          "with 'edgesight bundle --sign KEY', or pass --allow-unsigned (development only)")
    with tempfile.TemporaryDirectory(prefix="edgesight-verify-") as tmp:
        paths = {name: os.path.join(tmp, name) for name in ("MANIFEST.json", SIGNATURE, "allowed_signers")}
        for name, data in (("MANIFEST.json", manifest), (SIGNATURE, signature), ("allowed_signers", signers.encode())):
            with open(paths[name], "wb") as f:
                f.write(data)

        def keygen(*args: str, data: bool = False) -> subprocess.CompletedProcess:
            with open(paths["MANIFEST.json"] if data else os.devnull, "rb") as stdin:
                return _ssh_keygen(list(args), where, stdin=stdin)

        sig = paths[SIGNATURE]
        r = keygen("-Y", "check-novalidate", "-n", NAMESPACE, "-s", sig, data=True)
        if r.returncode != 0:
            if "namespace" in r.stderr:
                raise BundleError(f"{where}: {SIGNATURE} is not an edgesight deploy signature (namespace is not {NAMESPACE}); "
                                  "sign the archive with 'edgesight bundle --sign KEY'")
            raise BundleError(f"{where}: {SIGNATURE} does not match MANIFEST.json: the manifest was changed after it was "
                              "signed (or the signature is damaged); use the archive as bundled, or bundle and sign it again")
        key = _key_of(r.stdout)
        r = keygen("-Y", "find-principals", "-s", sig, "-f", paths["allowed_signers"])
        principals = r.stdout.split()
        if r.returncode != 0 or not principals:
            raise BundleError(f"{where}: signed by {key}, which {source} does not trust; sign with a trusted key, "
                              "or trust this one with --trust KEY.pub")
        r = keygen("-Y", "verify", "-f", paths["allowed_signers"], "-I", principals[0], "-n", NAMESPACE, "-s", sig, data=True)
        if r.returncode != 0:
            raise BundleError(f"{where}: the signature by {key} ({principals[0]}) is not valid under {source}: "
                              f"{_last_line(r.stderr) or 'ssh-keygen -Y verify failed'}")
    return f"{principals[0]} ({key})"


def check_signature(where: str, files: Mapping[str, bytes], signers: str, source: str, allow_unsigned: bool) -> str:
    """Check an archive's signature against ``signers`` as ``install.sh`` will on the device.

    Args:
        where: the archive, for messages.
        files: the archive's files (``MANIFEST.json`` and, when signed, ``MANIFEST.json.sig``).
        signers: allowed_signers text; without a key in it, nothing is checked.
        source: where ``signers`` comes from, for messages.
        allow_unsigned: skip the check (development).

    Returns:
        Who signed, or '' when nothing was checked.

    Raises:
        BundleError: as for ``verify_manifest``.
    """
    if allow_unsigned or not has_signers(signers):
        return ""
    return verify_manifest(files["MANIFEST.json"], files.get(SIGNATURE), signers, where, source)
