"""Result sinks: where the camera loop sends each classification.

Every sink is a :class:`Sink` (``write``, ``close`` and the abilities it declares):

- :class:`ConsoleSink` — a line on the terminal whenever the label changes.
- :class:`JsonlSink` — one JSON event per line, flushed per line.
- :class:`VideoSink` — the annotated frames as an .mp4 or .avi file.
- :class:`DisplaySink` — a desktop window (needs a GUI build of OpenCV).
- :class:`HttpSink` — a status page, ``/status`` JSON and an MJPEG stream for any browser.
- :class:`MqttSink` — events to an MQTT broker (paho-mqtt).
- :class:`GpioSink` — a pulse on a GPIO pin for chosen labels (gpiozero).
- :class:`CaptureSink` — sampled frames saved as a class-folder dataset (``DIR/<label>/``,
  ``DIR/_uncertain/``, ``captures.jsonl``) under a size cap, for review and retraining.
- :class:`AsyncSink` — runs another sink on its own thread so a slow one never stalls inference.

A sink never takes the loop down for a problem of its own at run time (a full disk, a lost broker,
a crashed worker): it logs one clear message and carries on or disables itself. Problems the
user must fix before running (a headless OpenCV, an unwritable path, a bad URL) raise
:class:`~edgesight.edge.errors.EdgesightError` from the constructor.
"""

from .base import Sink
from .capture import CaptureSink
from .console import ConsoleSink
from .display import DisplaySink
from .gpio import GpioSink, gpiozero_output
from .http import HttpSink
from .jsonl import JsonlSink
from .mqtt import MqttSink, MqttTarget, parse_mqtt_url
from .queue import AsyncSink
from .video import VideoSink

__all__ = [
    "Sink",
    "AsyncSink",
    "CaptureSink",
    "ConsoleSink",
    "DisplaySink",
    "GpioSink",
    "HttpSink",
    "JsonlSink",
    "MqttSink",
    "VideoSink",
    "MqttTarget",
    "parse_mqtt_url",
    "gpiozero_output",
]
