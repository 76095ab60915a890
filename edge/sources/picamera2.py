"""The Raspberry Pi camera through picamera2 (libcamera): the one module that imports picamera2.

The camera runs two streams from the same exposure: ``main`` at display size and ``lores`` at
the small size the classifier needs, so the ISP does the downscaling instead of the CPU.
``Frame.image`` is the lores frame; with ``capture_main=True`` the main frame of the same request
is kept in ``last_main`` for display. picamera2's format names are in libcamera/DRM order, so
``RGB888`` arrays are BGR in memory, what OpenCV expects.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional, Tuple

import cv2
import numpy as np

from ..errors import ConfigError, MissingDependencyError, SourceError
from .base import Grab, LatestFrameReader

log = logging.getLogger("edgesight.source")

DEFAULT_MAIN_SIZE = (1280, 720)
# Same 16:9 field of view as the main stream, so lores frames are not stretched.
DEFAULT_LORES_SIZE = (640, 360)
# YUV420 works on every Pi (Pi 4 and older only give lores in YUV420); the RGB ones need a Pi 5.
LORES_FORMATS = ("YUV420", "YVU420", "RGB888", "BGR888")

PICAMERA2_INSTALL_HINT = (
    "on Raspberry Pi OS run `sudo apt install -y python3-picamera2` and create the venv with "
    "`python3 -m venv --system-site-packages .venv` (pip cannot install libcamera)"
)


def _make_camera(camera_num: int):
    """Create the ``picamera2.Picamera2`` object: the single place picamera2 is imported.

    Tests replace this function with one returning a fake camera.

    Args:
        camera_num: which camera, for boards with two.

    Returns:
        The camera object (not yet configured).

    Raises:
        MissingDependencyError: picamera2 is not installed.
    """
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        raise MissingDependencyError(
            f"the picamera2 source needs the Python package 'picamera2', which is not installed: "
            f"{PICAMERA2_INSTALL_HINT}"
        ) from exc
    return Picamera2(camera_num)


def lores_to_bgr(array: np.ndarray, fmt: str, size: Tuple[int, int]) -> np.ndarray:
    """Convert a lores-stream array from ``capture_array`` to a BGR image.

    Args:
        array: as picamera2 returns it. YUV420/YVU420 arrive as ``(H*3/2, stride)``: H rows of Y,
            then the U and V planes (half width, so two of their rows per array row); the stride
            may be wider than the image and is cropped after conversion.
        fmt: the stream's format, one of ``LORES_FORMATS``.
        size: ``(width, height)`` of the stream.

    Returns:
        ``height x width x 3`` BGR uint8.

    Raises:
        SourceError: the array does not match the configured format and size.
    """
    width, height = size
    if fmt in ("YUV420", "YVU420"):
        if array.ndim != 2 or array.shape[0] != height * 3 // 2 or array.shape[1] < width:
            raise SourceError(
                f"picamera2 lores {fmt} frame has shape {array.shape}, expected ({height * 3 // 2}, >={width})"
            )
        # picamera2's YUV420 is I420 (U plane before V); OpenCV's COLOR_YUV420p2BGR means YV12.
        code = cv2.COLOR_YUV2BGR_I420 if fmt == "YUV420" else cv2.COLOR_YUV2BGR_YV12
        return np.ascontiguousarray(cv2.cvtColor(array, code)[:, :width])
    if array.ndim != 3 or array.shape[:2] != (height, width) or array.shape[2] != 3:
        raise SourceError(f"picamera2 lores {fmt} frame has shape {array.shape}, expected ({height}, {width}, 3)")
    if fmt == "BGR888":
        return cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return array


class _Picamera2Device:
    """One configured picamera2 camera, opened and reopened by :class:`LatestFrameReader`."""

    def __init__(
        self,
        camera_num: int,
        size: Tuple[int, int],
        main_size: Tuple[int, int],
        fps: float,
        lores_format: str,
        capture_main: bool,
    ) -> None:
        self.camera_num = camera_num
        self.size = size
        self.main_size = main_size
        self.fps = fps
        self.lores_format = lores_format
        self.capture_main = capture_main
        self.name = f"picamera2 camera {camera_num}"
        self._camera = None
        self._lores_format = lores_format
        self._lores_size = size

    def open(self) -> None:
        try:
            camera = _make_camera(self.camera_num)
        except MissingDependencyError:
            raise
        except Exception as exc:  # picamera2 raises assorted types when no camera answers
            raise SourceError(
                f"cannot open {self.name}: {exc}; check the ribbon cable and `rpicam-hello --list-cameras`, "
                "and that no other program is using the camera"
            ) from exc
        frame_us = int(round(1_000_000 / self.fps))
        try:
            config = camera.create_video_configuration(
                main={"size": self.main_size, "format": "RGB888"},
                lores={"size": self.size, "format": self.lores_format},
                controls={"FrameDurationLimits": (frame_us, frame_us)},
            )
            camera.configure(config)
            # libcamera may adjust what was asked for; convert by what was actually configured.
            lores = camera.camera_configuration()["lores"]
            self._lores_format = lores["format"]
            self._lores_size = tuple(lores["size"])
            camera.start()
        except Exception as exc:  # configuration errors come from libcamera as various types
            self._release(camera)
            hint = "; on Pi 4 and older the lores stream must be YUV420" if self.lores_format != "YUV420" else ""
            raise SourceError(
                f"cannot configure {self.name} (main {self.main_size[0]}x{self.main_size[1]} RGB888, "
                f"lores {self.size[0]}x{self.size[1]} {self.lores_format}): {exc}{hint}"
            ) from exc
        log.info(
            "opened %s: lores %dx%d %s, main %dx%d, %.1f FPS",
            self.name,
            *self._lores_size,
            self._lores_format,
            *self.main_size,
            self.fps,
        )
        self._camera = camera

    def grab(self, stop: threading.Event) -> Optional[Grab]:
        if self._camera is None:
            return None
        if self.capture_main:
            # Both arrays from one request, so the display frame shows what was classified.
            (lores, main), _metadata = self._camera.capture_arrays(["lores", "main"])
        else:
            lores, main = self._camera.capture_array("lores"), None
        return Grab(lores_to_bgr(lores, self._lores_format, self._lores_size), main)

    def close(self) -> None:
        if self._camera is not None:
            camera, self._camera = self._camera, None
            self._release(camera)

    def _release(self, camera) -> None:
        for release in (camera.stop, camera.close):
            try:
                release()
            except Exception as exc:  # a camera that vanished can fail to stop; still try to close it
                log.warning("%s: %s() failed: %s: %s", self.name, release.__name__, type(exc).__name__, exc)


def _check_size(name: str, size: Tuple[int, int]) -> Tuple[int, int]:
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ConfigError(f"{name} must be two positive even numbers (width, height), got {tuple(size)}")
    return width, height


class Picamera2Source(LatestFrameReader):
    """The Raspberry Pi camera (CSI ribbon) through picamera2, with latest-frame semantics.

    Args:
        size: ``(width, height)`` of the lores stream, the frames classified.
        display_size: ``(width, height)`` of the main stream (RGB888, i.e. BGR in memory).
        fps: frame rate, fixed through the ``FrameDurationLimits`` control.
        lores_format: ``YUV420`` (default; the only lores format on Pi 4 and older) or, on a Pi 5,
            ``RGB888`` to skip the colour conversion; ``YVU420`` and ``BGR888`` are also accepted.
        capture_main: also fetch the main stream with each frame, into ``last_main``.
        camera_num: which camera, on boards with two.
        **reader: :class:`~edgesight.edge.sources.LatestFrameReader` options (reconnect, read_timeout, ...).

    Raises:
        MissingDependencyError: picamera2 is not installed (the message says how on Raspberry Pi OS).
        SourceError: no camera, or the configuration was refused.
        ConfigError: sizes not positive and even, lores larger than main, bad fps or format.
    """

    def __init__(
        self,
        size: Tuple[int, int] = DEFAULT_LORES_SIZE,
        *,
        display_size: Tuple[int, int] = DEFAULT_MAIN_SIZE,
        fps: float = 30.0,
        lores_format: str = "YUV420",
        capture_main: bool = False,
        camera_num: int = 0,
        **reader,
    ) -> None:
        lores_size = _check_size("size", size)
        main_size = _check_size("display_size", display_size)
        if lores_size[0] > main_size[0] or lores_size[1] > main_size[1]:
            raise ConfigError(
                f"the lores size {lores_size[0]}x{lores_size[1]} must not exceed the display size "
                f"{main_size[0]}x{main_size[1]}: lower size or raise display_size"
            )
        if not fps > 0:
            raise ConfigError(f"fps must be a positive number, got {fps!r}")
        if lores_format not in LORES_FORMATS:
            raise ConfigError(f"unknown lores_format {lores_format!r}: use one of {', '.join(LORES_FORMATS)}")
        device = _Picamera2Device(camera_num, lores_size, main_size, float(fps), lores_format, capture_main)
        super().__init__(device, **reader)
