"""A line on the terminal whenever the reported label changes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..frames import Frame, Result
from .base import Sink


class ConsoleSink(Sink):
    """Prints a line whenever the reported label changes (the live view of a headless run).

    Lines look like ``frame 42 img_0042.jpg: cat 0.93 (12.5 ms)``; the file name appears for
    image-folder sources.
    """

    def __init__(self, echo: Callable[[str], None] = print) -> None:
        """Set where the lines go.

        Args:
            echo: called with each line (the CLI passes ``click.echo``).
        """
        self.echo = echo

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Print the result if its label differs from the previous frame's."""
        if result.changed:
            where = f" {Path(result.path).name}" if result.path else ""
            self.echo(f"frame {result.frame_index}{where}: {result.label} {result.score:.2f} ({result.latency_ms:.1f} ms)")
