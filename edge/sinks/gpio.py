"""A pulse on a GPIO pin for chosen labels (gpiozero)."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Iterable, Optional, Union

import numpy as np

from ..errors import ConfigError, EdgesightError, MissingDependencyError
from ..frames import Frame, Result
from .base import Sink


DeviceFactory = Callable[[Union[int, str], bool], Any]

log = logging.getLogger("edgesight.sinks")


def gpiozero_output(pin: Union[int, str], active_high: bool) -> Any:
    """The default GPIO device factory: a gpiozero ``DigitalOutputDevice``, initially off.

    Raises:
        MissingDependencyError: gpiozero is not installed.
        EdgesightError: the pin cannot be used (wrong number, busy, not a Raspberry Pi).
    """
    try:
        from gpiozero import DigitalOutputDevice
        from gpiozero.exc import GPIOZeroError
    except ImportError as e:
        raise MissingDependencyError(
            "the GPIO sink needs the Python package 'gpiozero', which is not installed: "
            "pip install 'edgesight[gpio]' (or pip install gpiozero; on Raspberry Pi OS: "
            "sudo apt install python3-gpiozero, with a venv created with --system-site-packages)"
        ) from e
    # gpiozero warns once per pin library it tries and cannot load (PinFactoryFallback): on
    # anything but a Pi that is several lines before the one error below. They go to the debug
    # log (shown with -v).
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return DigitalOutputDevice(pin, active_high=active_high, initial_value=False)
            finally:
                for w in caught:
                    log.debug("gpiozero: %s", w.message)
    except GPIOZeroError as e:
        raise EdgesightError(
            f"cannot use GPIO pin {pin}: {str(e).rstrip('.!')}. Check the pin (BCM numbering, e.g. 17 or 'GPIO17'), that no "
            "other program holds it, and that this is a Raspberry Pi (GPIOZERO_PIN_FACTORY=mock simulates one)"
        ) from e


class GpioSink(Sink):
    """Pulses a GPIO pin when the label is one of ``on_labels`` (e.g. a reject gate).

    The pulse runs on gpiozero's background blink thread, so ``write`` returns at once. A
    matching result that arrives during a pulse restarts it, so the output stays on while a
    run of matching frames lasts and goes off ``pulse_ms`` after the last one.

    Attributes:
        pulses: pulses started so far.
    """

    def __init__(
        self,
        pin: Union[int, str],
        on_labels: Iterable[str],
        pulse_ms: float = 100,
        active_high: bool = True,
        *,
        device_factory: Optional[DeviceFactory] = None,
    ) -> None:
        """Claim the pin.

        Args:
            pin: the GPIO pin, BCM numbering (``17``, ``"GPIO17"``, ``"BOARD11"``).
            on_labels: labels that trigger a pulse (a single string counts as one label).
            pulse_ms: pulse length in milliseconds.
            active_high: False when the load is switched on by a low level.
            device_factory: ``factory(pin, active_high)`` returning an object with gpiozero's
                ``blink(on_time, off_time, n, background)``, ``off()`` and ``close()``;
                default :func:`gpiozero_output`.

        Raises:
            ConfigError: no labels or a non-positive pulse.
            MissingDependencyError: gpiozero is not installed (default factory).
            EdgesightError: the pin cannot be used (default factory).
        """
        labels = frozenset([on_labels] if isinstance(on_labels, str) else on_labels)
        if not labels:
            raise ConfigError("GpioSink needs at least one label to pulse on")
        if not pulse_ms > 0:
            raise ConfigError(f"pulse_ms must be positive, got {pulse_ms}")
        self.pin = pin
        self.on_labels = labels
        self.pulse_ms = float(pulse_ms)
        self.pulses = 0
        self._device = (device_factory or gpiozero_output)(pin, active_high)

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Start a pulse if the label is one of ``on_labels``; returns immediately."""
        if result.label in self.on_labels:
            self._device.blink(on_time=self.pulse_ms / 1000.0, off_time=0, n=1, background=True)
            self.pulses += 1

    def close(self) -> None:
        """Switch the output off and release the pin."""
        self._device.off()
        self._device.close()
