"""Walking a dataset folder: which files belong to it, and which class names it can have.

Symbolic links are followed only when they lead to a place inside the dataset that has not
been scanned yet: a link out of the dataset would train on files nobody reviewed, and a link
back up the tree (``stop/loop -> ..``) would make a class swallow every other class's images,
again and again. Each link not followed is listed with the reason, like an unreadable image.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any, List, Optional, Set, Tuple

from edgesight.edge.errors import DatasetError


def check_class_name(name: str, where: object) -> None:
    """Refuse a class name that would not come back unchanged from ``labels.txt`` (one name
    per line, stripped) and the UTF-8 TFLite metadata.

    Raises:
        DatasetError: the name has control characters, surrounding spaces or bytes that are not
            UTF-8; the message names ``where`` (the folder or CSV row) and the fix.
    """
    problem = None
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        problem = "contains a newline, tab or other control character"
    elif name != name.strip():
        problem = "starts or ends with a space"
    else:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            problem = "is not valid UTF-8"
    if problem:
        shown = "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch
                        for ch in str(where))
        raise DatasetError(
            f"{shown}: class name {name!r} {problem}, which labels.txt and the model metadata cannot keep; "
            "rename the class to printable characters (letters, digits, '_', '-', spaces inside)"
        )


class DatasetWalk:
    """Lists the files under folders of one dataset, each real path at most once.

    Call :meth:`add` for every folder (a class folder, in order), then :meth:`files` for what
    was found. Folders and files reached without a link are taken first, so a link never
    claims a file for another class than the folder it really lies in.

    Attributes:
        skipped: ``(path, reason)`` of every link not followed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.skipped: List[Tuple[str, str]] = []
        self._seen: Set[Path] = {self.root}
        self._found: List[Tuple[Path, Any]] = []
        self._links: List[Tuple[Path, Any]] = []

    def add(self, folder: Path, owner: Any = None) -> None:
        """Scan ``folder`` (hidden entries skipped); ``owner`` is returned with each of its files."""
        folder = Path(folder)
        for parent in folder.resolve().parents:
            if parent == self.root or self.root not in parent.parents:
                break
            self._seen.add(parent)
        if folder.is_symlink():
            self._links.append((folder, owner))
        else:
            self._walk(folder, owner)

    def files(self) -> List[Tuple[Path, Any]]:
        """``(path, owner)`` of every file found, following the links that stay inside the dataset."""
        while self._links:
            links, self._links = sorted(self._links, key=lambda x: str(x[0])), []
            for link, owner in links:
                self._follow(link, owner)
        return list(self._found)

    def _walk(self, folder: Path, owner: Any) -> None:
        real = folder.resolve()
        if real in self._seen and real != self.root:
            return
        self._seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            self.skipped.append((str(folder), f"cannot list the folder ({e.strerror})"))
            return
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                self._links.append((path, owner))
            elif entry.is_dir(follow_symlinks=False):
                subdirs.append(path)
            elif entry.is_file(follow_symlinks=False):
                self._seen.add(path.resolve())
                self._found.append((path, owner))
        for sub in subdirs:
            self._walk(sub, owner)

    def _follow(self, link: Path, owner: Any) -> None:
        target = self._target(link)
        if target is None:
            return
        if target.is_dir():
            self._walk(link, owner)
        else:
            self._seen.add(target)
            self._found.append((link, owner))

    def _target(self, link: Path) -> Optional[Path]:
        try:
            target = link.resolve(strict=True)
        except (OSError, RuntimeError):
            self.skipped.append((str(link), f"symbolic link to {os.readlink(link)}, which does not exist or loops: not followed"))
            return None
        if target != self.root and self.root not in target.parents:
            self.skipped.append((str(link), f"symbolic link to {target}, outside the dataset ({self.root}): not followed"))
            return None
        if target in self._seen:
            self.skipped.append((str(link), f"symbolic link to {target}, which is already scanned (a link loop or a duplicate): not followed"))
            return None
        return target


def walk_files(folder: Path, skipped: Optional[List[Tuple[str, str]]] = None) -> List[Path]:
    """Files under ``folder`` (recursively, hidden ones skipped), each real file once; links that
    leave ``folder`` or lead back into scanned places are not followed and are added to ``skipped``."""
    walk = DatasetWalk(folder)
    walk.add(folder)
    found = [p for p, _ in walk.files()]
    if skipped is not None:
        skipped.extend(walk.skipped)
    return found
