"""Deploy archives: a model bundle plus everything a device needs to run it as a service.

``edgesight bundle`` writes one reproducible ``.tar.gz`` with a single top folder::

    edgesight-deploy/
      MANIFEST.json            format, versions, profile, use case, sha256 of every other file
      install.sh               idempotent POSIX sh installer (venv, user, udev rules, systemd unit)
      edgesight.service        systemd unit with @PREFIX@ and @USER@ for install.sh to fill in
      profile.yaml             the resolved profile + use case
      run.args                 the ``edgesight run`` arguments, one per line
      requirements.txt         pinned Python requirements of the device
      wheelhouse/              edgesight's wheel and, unless --no-wheelhouse, every dependency wheel
                               for the device's platform and Python (see ``wheelhouse``)
      config.txt.fragment      camera settings for the boot config (Raspberry Pi profiles)
      NN-name.rules            udev rules (Coral profiles)
      model/                   model.tflite, model.json, labels.txt (model_edgetpu.tflite)

The same inputs give the same bytes (sorted entries, fixed times, owners and modes, a gzip header
without name or time), so an archive can be checked by its hash. The manifest lists every file
but itself and its signature (``MANIFEST.json.sig``, with ``--sign``: see ``signing``),
``install.sh`` and the unit included. ``verify_archive`` and ``extract_archive``
refuse links, absolute or ``..`` paths, files missing from or not matching the manifest, and a
``run.args`` that no profile could have written (an output outside the service's state directory).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shlex
import shutil
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .. import __version__
from ..model.bundle import expected_sha, load_bundle, model_file_name
from ..model.enroll_files import enrolled_names, read_enrolment_files
from ..errors import BundleError, ProfileError
from ..fsutil import replace_dir, write_bytes
from .profiles import builtin_template, preset_file
from .render import render_unit
from .runsettings import check_run_args, run_args
from .settings import ResolvedProfile, dump_yaml
from .signing import SIGNATURE, SigningKey, sign_manifest
from .wheelhouse import Wheelhouse, edgesight_only, os_checks

FORMAT = "edgesight.deploy/1"
TOP = "edgesight-deploy"
MANIFEST = "MANIFEST.json"
# The bundle files the runtime reads, besides model.json's model_file.
MODEL_FILES = ("model.json", "labels.txt", "model_edgetpu.tflite")
EXECUTABLES = frozenset({"install.sh"})
# Fixed archive metadata: equal inputs give equal bytes whatever the clock, user or umask.
MTIME = 0
GZIP_LEVEL = 9
# Reading an archive holds its files in memory: these bound what a damaged or hostile archive
# (a gzip bomb) can make it unpack. A model plus a full wheelhouse is a few hundred MiB.
MAX_ARCHIVE_BYTES = 1 << 30
MAX_MEMBER_BYTES = 512 << 20
MAX_MEMBERS = 10_000

PathLike = Union[str, Path]


@dataclass(frozen=True)
class DeployPackage:
    """The contents of a deploy archive.

    Attributes:
        files: path under ``edgesight-deploy/`` -> bytes, ``MANIFEST.json`` included.
        manifest: the parsed ``MANIFEST.json``.
        warnings: what the device will not do as the profile says, one sentence each.
        signer: the key that signed ``MANIFEST.json`` (``ED25519 SHA256:...``); '' when unsigned.
    """

    files: Dict[str, bytes]
    manifest: Dict[str, Any]
    warnings: Tuple[str, ...]
    signer: str = ""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model_files(model_bundle: Path, resolved: ResolvedProfile) -> Tuple[Dict[str, bytes], str, List[str]]:
    """Read and check the model bundle: its files, the model's sha256 and warnings."""
    if not model_bundle.is_dir():
        raise BundleError(f"{model_bundle}: give the bundle folder written by 'edgesight convert', not a single file")
    # The bytes that go into the archive are checked below, each read once.
    bundle = load_bundle(model_bundle, verify=False)
    json_path = model_bundle / "model.json"
    root = model_bundle.resolve()
    files = {}
    for name in (model_file_name(bundle.info, json_path),) + MODEL_FILES:
        path = model_bundle / name
        if not path.is_file():
            continue
        # Only the bundle's own files travel: a link to /etc/hostname is not one.
        if root not in path.resolve().parents:
            raise BundleError(f"{path}: leads outside {model_bundle} (to {path.resolve()}); copy the file into the bundle")
        data = path.read_bytes()
        if name.endswith(".tflite") and _sha256(data) != expected_sha(path, bundle.info, json_path, hint=""):
            raise BundleError(f"{path}: sha256 does not match {json_path} (the file was modified or damaged); "
                              "convert the model again with 'edgesight convert'")
        files[f"model/{name}"] = data
    expected = expected_sha(bundle.model_path, bundle.info, json_path, hint="")
    # Reference embeddings and enrolled classes travel with their model, each checked against
    # the sha256 model.json records for it.
    enrolled = read_enrolment_files(model_bundle, bundle.info)
    for name, data in enrolled.items():
        path = model_bundle / name
        if root not in path.resolve().parents:
            raise BundleError(f"{path}: leads outside {model_bundle} (to {path.resolve()}); copy the file into the bundle")
        files[f"model/{name}"] = data

    labels = set(bundle.info.labels) | set(enrolled_names(bundle.info)) | {"unknown"}
    wanted = {"runtime.gpio_on": resolved.runtime.gpio_on or (), "runtime.capture_label": resolved.runtime.capture_label or ()}
    if resolved.review is not None:
        wanted["review.labels"] = resolved.review.labels
    for key, names in wanted.items():
        strangers = [n for n in names if n not in labels]
        if strangers:
            preset = preset_file(resolved.use_case or "")
            raise BundleError(
                f"{resolved.title}: {key}: {', '.join(strangers)} not among the labels of {model_bundle} "
                f"({', '.join(bundle.info.labels)}); copy {preset or 'the use-case preset'}, "
                f"change {key} and pass the copy's path to --use-case"
            )
    warnings: List[str] = []
    device = resolved.runtime.device or "cpu"
    if device.startswith("coral") and "model/model_edgetpu.tflite" not in files:
        warnings.append(
            f"{model_bundle} has no model_edgetpu.tflite: on the Edge TPU an uncompiled model runs on the CPU; "
            "convert it with the Edge TPU compiler first"
        )
    return files, expected, warnings


def _install_script(resolved: ResolvedProfile, wheelhouse: Wheelhouse) -> bytes:
    settings = {
        "PROFILE": resolved.profile,
        "USE_CASE": resolved.use_case or "",
        "APT_PACKAGES": " ".join(resolved.os.apt),
        "SERVICE_GROUPS": " ".join(resolved.service.groups),
        "SYSTEM_SITE_PACKAGES": "1" if resolved.os.system_site_packages else "0",
        "UDEV_RULES": " ".join(sorted(resolved.os.udev_rules)),
        "BOOT_CONFIG_PATH": resolved.os.boot_config_path,
        **wheelhouse.install_settings(),
        **os_checks(resolved),
    }
    block = "# Written by edgesight bundle from the profile.\n" + "".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items())
    template = builtin_template("install.sh.in")
    if template.count("@SETTINGS@") != 1:
        raise RuntimeError("install.sh.in must contain the @SETTINGS@ marker exactly once")
    return template.replace("@SETTINGS@\n", block).encode("utf-8")


def _text(lines: List[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def deploy_files(model_bundle: PathLike, resolved: ResolvedProfile, wheelhouse: Optional[Wheelhouse] = None) -> DeployPackage:
    """Everything that goes into a deploy archive, in memory.

    Args:
        model_bundle: a model bundle folder (``edgesight convert`` output); the sha256 of its model
            is checked against ``model.json`` first.
        resolved: the device profile with its use case.
        wheelhouse: the wheels the device installs (``wheelhouse.build_wheelhouse`` for every
            dependency, offline); None: edgesight's wheel alone, the rest from the device's index.

    Returns:
        The files (paths under ``edgesight-deploy/``), the manifest and any warnings.

    Raises:
        BundleError: a missing or modified model, or labels in the profile the model lacks.
    """
    model_bundle = Path(model_bundle)
    files, model_sha, warnings = _model_files(model_bundle, resolved)
    title = f"{resolved.title}, edgesight {__version__}"
    files["profile.yaml"] = (
        f"# The resolved device profile ({title}). For reference: run.args and\n"
        "# edgesight.service carry the settings to the runtime.\n" + dump_yaml(resolved.to_dict())
    ).encode("utf-8")
    files["run.args"] = _text(run_args(resolved))
    files["edgesight.service"] = render_unit(resolved, "@PREFIX@", "@USER@").encode("utf-8")
    wheelhouse = wheelhouse or edgesight_only()
    files["install.sh"] = _install_script(resolved, wheelhouse)
    source = "wheelhouse/, with no package index" if wheelhouse.complete else "the package index (edgesight from wheelhouse/)"
    files["requirements.txt"] = _text([f"# Python packages for edgesight on {title}; install.sh installs them from {source}.",
                                       *resolved.os.requirements])
    files.update(wheelhouse.files())
    if resolved.os.boot_config:
        files["config.txt.fragment"] = resolved.os.boot_config.encode("utf-8")
    for name, rules in resolved.os.udev_rules.items():
        files[name] = rules.encode("utf-8")
    manifest = {
        "format": FORMAT,
        "toolkit_version": __version__,
        "profile": resolved.profile,
        "use_case": resolved.use_case,
        "model_sha256": model_sha,
        "files": {name: _sha256(data) for name, data in sorted(files.items())},
        "wheelhouse": wheelhouse.record(),
    }
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    return DeployPackage(files=dict(sorted(files.items())), manifest=manifest, warnings=tuple(warnings))


def archive_bytes(files: Mapping[str, bytes]) -> bytes:
    """A reproducible ``.tar.gz`` of ``files`` under ``edgesight-deploy/``.

    Entries are sorted, folders precede their contents, every entry has mtime 0, uid/gid 0, empty
    owner names and mode 0644 (0755 for ``install.sh`` and folders); the gzip header has no file
    name and mtime 0.
    """
    folders = {TOP}
    for name in files:
        parent = PurePosixPath(TOP, name).parent
        while str(parent) != ".":
            folders.add(str(parent))
            parent = parent.parent
    entries = sorted([(f, None) for f in folders] + [(f"{TOP}/{name}", data) for name, data in files.items()], key=lambda e: e[0])
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o755 if name[len(TOP) + 1:] in EXECUTABLES else 0o644
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def build_deploy_archive(model_bundle: PathLike, resolved: ResolvedProfile, out: PathLike,
                         sign: Union[PathLike, SigningKey, None] = None, wheelhouse: Optional[Wheelhouse] = None) -> DeployPackage:
    """Write the deploy archive of ``model_bundle`` for ``resolved`` to ``out`` (atomically).

    Args:
        model_bundle: a model bundle folder.
        resolved: the device profile with its use case.
        out: the ``.tar.gz`` to write.
        sign: an OpenSSH key that signs ``MANIFEST.json`` (``MANIFEST.json.sig`` joins the archive).
        wheelhouse: as for ``deploy_files``.

    Returns:
        What was written (files, manifest, warnings, signer).

    Raises:
        BundleError: as for ``deploy_files``; the key cannot sign (see ``signing.sign_manifest``).
    """
    package = deploy_files(model_bundle, resolved, wheelhouse)
    if sign is not None:
        signature = sign_manifest(package.files[MANIFEST], sign)
        files = dict(sorted({**package.files, SIGNATURE: signature.data}.items()))
        package = replace(package, files=files, warnings=package.warnings + signature.warnings, signer=signature.key)
    write_bytes(out, archive_bytes(package.files))
    return package


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _check_size(path: Path, m: tarfile.TarInfo, count: int, total: int) -> None:
    """Refuse an entry before reading it when the archive would unpack past a limit."""
    if count > MAX_MEMBERS:
        raise BundleError(f"{path}: more than {MAX_MEMBERS} entries, the limit of a deploy archive; "
                          "refusing it (rebuild it with 'edgesight bundle')")
    if m.size > MAX_MEMBER_BYTES:
        raise BundleError(f"{path}: entry '{m.name}' unpacks to {_mib(m.size)}, over the {_mib(MAX_MEMBER_BYTES)} limit "
                          "of one deploy archive file; refusing it (rebuild it with 'edgesight bundle')")
    if total > MAX_ARCHIVE_BYTES:
        raise BundleError(f"{path}: unpacks to more than {_mib(MAX_ARCHIVE_BYTES)}, the limit of a deploy archive; "
                          "refusing it (rebuild it with 'edgesight bundle')")


def _read_members(path: Path) -> Dict[str, bytes]:
    """Every file of the archive (path under ``edgesight-deploy/`` -> bytes), after safety checks."""
    files: Dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            total = 0
            for count, m in enumerate(tar, 1):
                total += m.size
                _check_size(path, m, count, total)
                parts = PurePosixPath(m.name).parts
                if m.name.startswith("/") or ".." in parts or not parts or parts[0] != TOP:
                    raise BundleError(f"{path}: entry '{m.name}' is outside {TOP}/; refusing an archive that could write elsewhere")
                if not (m.isfile() or m.isdir()):
                    raise BundleError(f"{path}: entry '{m.name}' is a link or device; a deploy archive holds only files and folders")
                if m.isfile():
                    rel = "/".join(parts[1:])
                    if rel in files:
                        raise BundleError(f"{path}: entry '{m.name}' appears twice")
                    files[rel] = tar.extractfile(m).read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise BundleError(f"{path}: not a readable .tar.gz ({e}); copy the archive again") from e
    return files


def _check_manifest(path: Path, files: Mapping[str, bytes]) -> Dict[str, Any]:
    if MANIFEST not in files:
        raise BundleError(f"{path}: no {TOP}/{MANIFEST}; not an archive written by 'edgesight bundle'")
    try:
        manifest = json.loads(files[MANIFEST].decode("utf-8"))
        listed = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{path}: {MANIFEST} is not valid ({e}); copy the archive again") from e
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: {MANIFEST} format {manifest.get('format')!r} is not {FORMAT}; use a matching edgesight version")
    # The signature cannot list itself in what it signs; whether it verifies is the device's
    # allowed_signers' question (install.sh), or --trust's (deploy).
    for rel in sorted(set(files) - {MANIFEST, SIGNATURE}):
        if rel not in listed:
            raise BundleError(f"{path}: {TOP}/{rel} is not listed in {MANIFEST}; the archive was modified")
    for rel, want in sorted(listed.items()):
        if rel not in files:
            raise BundleError(f"{path}: {TOP}/{rel} is missing; the archive is incomplete")
        if _sha256(files[rel]) != want:
            raise BundleError(f"{path}: {TOP}/{rel}: sha256 does not match {MANIFEST} (the file was modified or damaged)")
    models = [rel for rel, sha in listed.items() if rel.startswith("model/") and sha == manifest.get("model_sha256")]
    if not models:
        raise BundleError(f"{path}: no model file has the model_sha256 of {MANIFEST}; the archive was modified")
    if "run.args" in files:
        # What a profile could not say (an output outside the state directory, --config...) is
        # refused here too: the device-side scripts write and remove these paths as root.
        try:
            check_run_args(files["run.args"].decode("utf-8").splitlines(), f"{path}: {TOP}/run.args")
        except (UnicodeDecodeError, ProfileError) as e:
            raise BundleError(str(e) if isinstance(e, ProfileError) else f"{path}: {TOP}/run.args is not text") from e
    return manifest


def verify_archive(path: PathLike) -> Dict[str, Any]:
    """Check a deploy archive: safe entries only, and every file matching ``MANIFEST.json``.

    Args:
        path: the ``.tar.gz``.

    Returns:
        The manifest.

    Raises:
        BundleError: an unreadable archive, a link, an absolute or ``..`` path, a file missing,
            unlisted or modified; the message names the file.
    """
    path = Path(path)
    return _check_manifest(path, _read_members(path))


def extract_archive(path: PathLike, dest: PathLike) -> Path:
    """Verify a deploy archive and extract it to ``dest/edgesight-deploy``.

    Nothing is written unless the whole archive verifies. The folder is written beside its final
    place and renamed, replacing an earlier extraction.

    Args:
        path: the ``.tar.gz``.
        dest: the folder to extract into.

    Returns:
        The extracted ``edgesight-deploy`` folder.

    Raises:
        BundleError: as for ``verify_archive``.
    """
    path, dest = Path(path), Path(dest)
    files = _read_members(path)
    _check_manifest(path, files)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".{TOP}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    for rel, data in files.items():
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o755 if rel in EXECUTABLES else 0o644)
    return replace_dir(staging, dest / TOP)
