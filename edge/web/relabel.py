"""A capture folder as the relabel page sees it: what is in it, and moving an image to another
class folder with a record in ``captures.jsonl`` (the layout is in :mod:`edgesight.edge.captures`).

Every path a request names is checked before it is touched: ``FOLDER/NAME`` with an image suffix,
no ``..``, nothing hidden, no link, resolving inside the capture folder; a label is one of the
model's (or the dataset's) classes, and its folder name comes from
:func:`~edgesight.edge.captures.folder_names`, never from the request.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ..captures import LOG_FILE, UNCERTAIN_DIR, folder_names, read_records
from ..errors import EdgesightError
from ..fsutil import PathLike, inside_root

logger = logging.getLogger("edgesight.web")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class RelabelError(EdgesightError):
    """A relabel request that is refused; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class CaptureFolder:
    """The images of a capture folder, and relabelling them.

    Args:
        root: the folder ``run --capture`` writes.
        labels: the classes an image may be given (the model's labels, in order). Empty: the
            class folders already in ``root`` and the labels its ``captures.jsonl`` names.
        must_exist: refuse a ``root`` that is not a folder (False: a run about to create it;
            until then it holds nothing).

    Raises:
        EdgesightError: ``root`` is not a folder, or no class is known.
    """

    def __init__(self, root: PathLike, labels: Sequence[str] = (), *, must_exist: bool = True) -> None:
        self.root = Path(os.path.abspath(os.fspath(root)))
        if must_exist and not self.root.is_dir():
            raise EdgesightError(f"{root}: not a folder; give the folder that run --capture wrote")
        self.labels = list(dict.fromkeys(labels)) or self._found_labels()
        if not self.labels:
            raise EdgesightError(f"{root}: no class folders or captures to learn the classes from; "
                                 "give --labels FILE (one class a line) or --bundle BUNDLE")
        self.folders = folder_names(self.labels)
        self._label_of = {folder: label for label, folder in self.folders.items()}
        self._lock = threading.Lock()

    def _found_labels(self) -> List[str]:
        found = {p.name for p in self._subfolders() if p.name != UNCERTAIN_DIR}
        for r in read_records(self.root):
            for key in ("label", "relabelled"):
                if isinstance(r.get(key), str):
                    found.add(r[key])
            for entry in r.get("top_k") or ():
                if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str):
                    found.add(entry[0])
        found.discard("unknown")
        return sorted(found)

    def _subfolders(self) -> Iterable[Path]:
        try:
            found = sorted(self.root.iterdir())
        except FileNotFoundError:
            return
        for p in found:
            if p.is_dir() and not p.is_symlink() and not p.name.startswith("."):
                yield p

    def resolve(self, file: Any) -> Path:
        """The image that ``file`` (``FOLDER/NAME``, relative to the folder) names.

        Raises:
            RelabelError: the name is not of that form, leaves the folder, is a link (400), or
                no such image exists (404).
        """
        if not isinstance(file, str) or not file or len(file) > 512 or "\\" in file or "\0" in file:
            raise RelabelError("file must be FOLDER/NAME.jpg relative to the capture folder")
        parts = file.split("/")
        if len(parts) != 2 or any(not p or p.startswith(".") for p in parts):
            raise RelabelError(f"{file!r}: expected FOLDER/NAME.jpg inside the capture folder (no '..', nothing hidden)")
        if not parts[1].lower().endswith(IMAGE_SUFFIXES):
            raise RelabelError(f"{file!r}: not an image name ({', '.join(IMAGE_SUFFIXES)})")
        path = self.root / parts[0] / parts[1]
        try:
            inside_root(self.root, path)
        except ValueError as e:
            raise RelabelError(f"{file!r}: refused, {e}") from None
        if os.path.islink(path) or os.path.islink(path.parent):
            raise RelabelError(f"{file!r}: a link; only images stored in the capture folder are served")
        if not path.is_file():
            raise RelabelError(f"{file!r}: no such capture (moved, or deleted for the size cap)", 404)
        return path

    def items(self) -> List[Dict[str, Any]]:
        """Every image in a folder of the capture folder, newest first: ``file``, ``folder``,
        ``label`` (the class of its folder; None for ``_uncertain`` and unknown folders),
        ``predicted``, ``score``, ``top_k``, ``time``, ``reason`` (from its record, when it has
        one) and ``reviewed`` (a person relabelled or confirmed it)."""
        known = self._known()
        out = []
        for folder in self._subfolders():
            for p in folder.iterdir():
                if p.name.startswith(".") or not p.name.lower().endswith(IMAGE_SUFFIXES) or p.is_symlink() or not p.is_file():
                    continue
                rel = f"{folder.name}/{p.name}"
                rec = known.get(rel, {})
                when = rec.get("time")
                if not isinstance(when, (int, float)):
                    when = p.stat().st_mtime
                out.append({"file": rel, "folder": folder.name, "label": self._label_of.get(folder.name),
                            "predicted": rec.get("label"), "score": rec.get("score"), "top_k": rec.get("top_k") or [],
                            "time": when, "reason": rec.get("reason"), "reviewed": bool(rec.get("reviewed"))})
        out.sort(key=lambda item: (item["time"], item["file"]), reverse=True)
        return out

    def _known(self, records: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
        """``file -> what the records say of it``, relabellings carrying the capture's record along."""
        known: Dict[str, Dict[str, Any]] = {}
        for r in read_records(self.root) if records is None else records:
            file = r.get("file")
            if not isinstance(file, str):
                continue
            if "relabelled" in r:
                old = r.get("old_file")
                base = known.pop(old, None) if isinstance(old, str) and old != file else known.get(file)
                known[file] = {**(base or {}), "file": file, "reviewed": True, "relabelled": r["relabelled"]}
            else:
                known[file] = r
        return known

    def recent(self, limit: int = 8) -> List[Dict[str, Any]]:
        """The newest ``limit`` captures still on disk (from the end of ``captures.jsonl``):
        ``file``, ``label``, ``score``, ``time``, ``uncertain``."""
        out: List[Dict[str, Any]] = []
        seen = set()
        for r in reversed(_tail_records(self.root / LOG_FILE)):
            file = r.get("file")
            if not isinstance(file, str) or file in seen:
                continue
            seen.add(file)
            if isinstance(r.get("old_file"), str):
                seen.add(r["old_file"])
            try:
                self.resolve(file)
            except RelabelError:
                continue
            out.append({"file": file, "label": r.get("relabelled", r.get("label")), "score": r.get("score"),
                        "time": r.get("time"), "uncertain": file.startswith(UNCERTAIN_DIR + "/")})
            if len(out) >= limit:
                break
        return out

    def relabel(self, file: Any, label: Any) -> Dict[str, Any]:
        """Move ``file`` into the folder of ``label`` (one rename, inside the capture folder; a
        file already in it stays, which confirms it) and append
        ``{"file", "relabelled", "from", "old_file", "time"}`` to ``captures.jsonl``.

        Returns:
            The record appended.

        Raises:
            RelabelError: ``label`` is not a class (400), ``file`` is refused (see
                :meth:`resolve`), or the move or the record cannot be written (500).
        """
        if not isinstance(label, str) or label not in self.folders:
            raise RelabelError(f"label {label!r} is not a class here; choose one of: {', '.join(self.labels)}")
        with self._lock:
            src = self.resolve(file)
            old_folder = src.parent.name
            new_folder = self.folders[label]
            try:
                dest_dir = inside_root(self.root, self.root / new_folder)
                dest_dir.mkdir(exist_ok=True)
                dest = dest_dir / src.name
                if old_folder != new_folder:
                    n = 2
                    while os.path.lexists(dest):
                        dest = dest_dir / f"{src.stem}-{n}{src.suffix}"
                        n += 1
                    os.rename(src, dest)  # same folder tree: one atomic rename
            except (OSError, ValueError) as e:
                raise RelabelError(f"cannot move {file} to {new_folder}/: {getattr(e, 'strerror', None) or e}", 500) from e
            record = {"file": f"{new_folder}/{dest.name}", "relabelled": label,
                      "from": self._label_of.get(old_folder) or self._predicted(file) or old_folder,
                      "old_file": file, "time": round(time.time(), 6)}
            try:
                self._append(record)
            except OSError as e:
                if dest != src:
                    os.rename(dest, src)  # the move is undone rather than left unrecorded
                raise RelabelError(f"cannot record the move in {self.root / LOG_FILE}: {e.strerror or e}", 500) from e
        logger.info("relabelled %s as %s (%s)", file, label, record["file"])
        return record

    def _predicted(self, file: str) -> Optional[str]:
        rec = self._known().get(file, {})
        value = rec.get("relabelled", rec.get("label"))
        return value if isinstance(value, str) else None

    def _append(self, record: Dict[str, Any]) -> None:
        # One write of one whole line in append mode, as the capture sink writes: a run that
        # captures into the same folder meanwhile never cuts into the line.
        fd = os.open(self.root / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def _tail_records(path: Path, size: int = 256 * 1024) -> List[Dict[str, Any]]:
    """The JSON objects in the last ``size`` bytes of a JSON-lines file (the first, possibly
    partial, line of that window left out)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(0, end - size))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if end > size:
        lines = lines[1:]
    out = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out
