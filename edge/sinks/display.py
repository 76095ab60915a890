"""A desktop window showing the annotated frames (needs a GUI build of OpenCV)."""

from __future__ import annotations

import os
import re
import sys
from typing import Optional

import cv2
import numpy as np

from ..errors import EdgesightError
from ..frames import Frame, Result
from ._common import annotated_or_draw
from .base import Sink


HEADLESS_HELP = (
    "the window needs an OpenCV build with GUI support, but the installed OpenCV is headless "
    "(cv2.imshow: the function is not implemented). Install a GUI build: "
    "pip uninstall -y opencv-python-headless && pip install opencv-python "
    "(on Raspberry Pi OS: sudo apt install python3-opencv, and use a venv created with "
    "--system-site-packages), or watch the stream in a browser instead with --http 127.0.0.1:8080, "
    "which works everywhere."
)

_QUIT_KEYS = (ord("q"), ord("Q"), 27)


def opencv_gui() -> Optional[str]:
    """The GUI backend named in OpenCV's build information ("NONE" when headless), if listed
    (OpenCV 5 pads the line: ``GUI:                           NONE``)."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return match.group(1) if match else None


class DisplaySink(Sink):
    """Shows the annotated frames in a desktop window (``cv2.imshow``).

    Pressing ``q`` or ``Esc`` in the window sets :attr:`quit_requested`, which the loop reads.
    Keep this sink on the loop's thread (do not wrap it in :class:`AsyncSink`): GUI toolkits
    expect their windows to be driven from one thread.

    Attributes:
        quit_requested: True once the user pressed ``q`` or ``Esc``.
    """

    needs_annotated = True

    def __init__(self, window_name: str = "edgesight") -> None:
        """Open the window, checking first that this OpenCV and session can show one.

        Args:
            window_name: the window title.

        Raises:
            EdgesightError: OpenCV is a headless build (the message says how to install a GUI
                build, or to use ``--http``), or there is no desktop session to show a window on.
        """
        self.window_name = window_name
        self.quit_requested = False
        if opencv_gui() == "NONE":
            raise EdgesightError(HEADLESS_HELP)
        # Without a display, GUI backends abort the whole process instead of raising, so the
        # probe below must not run; QT_QPA_PLATFORM may name a display-less Qt backend.
        if (
            sys.platform.startswith("linux")
            and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY")
            and not os.environ.get("QT_QPA_PLATFORM")
        ):
            raise EdgesightError(
                "the window needs a desktop session, but neither DISPLAY nor WAYLAND_DISPLAY is set "
                "(over SSH, for example). Run it from the device's desktop, or export DISPLAY=:0 if a "
                "desktop is running there, or watch the stream in a browser instead with "
                "--http 127.0.0.1:8080, which works everywhere."
            )
        try:
            cv2.imshow(window_name, np.zeros((1, 1, 3), np.uint8))
            cv2.waitKey(1)
        except cv2.error as e:
            if "not implemented" in str(e).lower():
                raise EdgesightError(HEADLESS_HELP) from e
            raise EdgesightError(
                f"OpenCV cannot open a window: {str(e).strip()}. Watch the stream in a browser instead "
                "with --http 127.0.0.1:8080, which works everywhere."
            ) from e

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Show the frame and poll the keyboard once (``waitKey(1)``)."""
        cv2.imshow(self.window_name, annotated_or_draw(frame, result, annotated))
        key = cv2.waitKey(1)
        if key != -1 and (key & 0xFF) in _QUIT_KEYS:
            self.quit_requested = True

    def close(self) -> None:
        """Close the window."""
        cv2.destroyWindow(self.window_name)
        # The toolkit only processes the close request while it pumps events.
        cv2.waitKey(1)
