"""Image folders, glob patterns and single images, read in sorted order (a finite source)."""

from __future__ import annotations

import glob
import logging
import os
import time
from typing import List, Optional, Tuple

from ..errors import SourceError
from ..frames import Frame
from ..model.preprocess import ImageReadError, ImageTooLargeError, read_frame
from .base import _SourceBase

log = logging.getLogger("edgesight.source")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def list_images(location: str) -> List[str]:
    """The image files of a folder, glob pattern or single image, sorted by path.

    Args:
        location: a folder (listed recursively), a glob pattern (``**`` recurses) or
            one image file. Extensions are matched in any case: jpg, jpeg, png, bmp, webp, tif, tiff.

    Returns:
        Sorted paths.

    Raises:
        SourceError: nothing there, or no images in it.
    """
    kinds = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    if os.path.isdir(location):
        # Recursively, like `edgesight classify`: a dataset of class folders plays as one
        # sequence; hidden files and folders are left out.
        candidates = [os.path.join(d, n) for d, dirs, files in os.walk(location)
                      for n in files if not n.startswith(".")
                      if not any(part.startswith(".") for part in os.path.relpath(d, location).split(os.sep) if part != ".")]
        where = f"folder {location}"
    elif os.path.isfile(location):
        candidates = [location]
        where = f"file {location}"
    elif any(c in location for c in "*?["):
        candidates = glob.glob(location, recursive=True)
        where = f"glob pattern {location}"
        if not candidates:
            raise SourceError(f"glob pattern {location} matches no files: check the pattern (quote it in the shell)")
    else:
        raise SourceError(f"image folder {location} not found: check the path")
    images = sorted(
        p for p in candidates if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(p)
    )
    if not images:
        raise SourceError(f"no images in {where}: expected files ending in {kinds}")
    return images


class ImageFolderSource(_SourceBase):
    """Images of a folder, a glob pattern or one file, in sorted order (a finite source).

    Images that cannot be decoded, and PNG or JPEG files above ``max_pixels``, are skipped with
    a warning and counted in ``skipped``; their position still advances ``Frame.index``, so gaps
    show where they were. ``Frame.path`` names the file each frame came from.

    Args:
        location: folder, glob pattern or image file (see :func:`list_images`).
        loop: start again after the last image instead of ending.
        target: ``(height, width)`` the frames are classified at: a PNG or JPEG much larger is
            decoded reduced by 2, 4 or 8 (at least twice ``target`` is kept). None: full size.
        max_pixels: skip a PNG or JPEG whose header declares more pixels than this.

    Raises:
        SourceError: no images found.
    """

    live = False

    def __init__(self, location: str, *, loop: bool = False, target: Optional[Tuple[int, int]] = None,
                 max_pixels: Optional[int] = None) -> None:
        self.location = location
        self.paths = list_images(location)
        self.loop = loop
        self.target = target
        self.max_pixels = max_pixels
        self.captured = 0
        self.dropped = 0
        self.reconnects = 0
        self.skipped = 0
        self._position = 0
        self._unreadable: set = set()
        self._closed = False

    def read(self) -> Optional[Frame]:
        """Return the next readable image, or None after the last one (with ``loop``: only when
        none is readable).

        Returns:
            The frame, with ``path`` set.
        """
        n = len(self.paths)
        while not self._closed and len(self._unreadable) < n:
            if self._position >= n and not self.loop:
                return None
            index = self._position
            path = self.paths[index % n]
            self._position += 1
            if path in self._unreadable:
                continue  # already warned about and counted on an earlier pass
            try:
                image = read_frame(path, target=self.target, max_pixels=self.max_pixels)
            except ImageReadError as e:
                self.skipped += 1
                self._unreadable.add(path)
                if isinstance(e, ImageTooLargeError):
                    log.warning("skipping %s", e)  # the message names the file, its size and the limit
                else:
                    log.warning("skipping %s: not a readable image (corrupt or unsupported)", path)
                continue
            self.captured += 1
            return Frame(image=image, index=index, timestamp=time.monotonic(), wall_time=time.time(), path=path)
        if len(self._unreadable) >= n and not self._closed:
            log.warning("no readable image in %s; the source has ended", self.location)
            self._closed = True
        return None

    def close(self) -> None:
        """End the source; later reads return None."""
        self._closed = True
