"""Edge TPU readiness of a .tflite model, and the call to Coral's ``edgetpu_compiler``.

``edgetpu_report`` predicts, from the flatbuffer alone, which operators the Edge TPU compiler will
map to the Edge TPU; it needs only ``ai-edge-litert`` (for the schema), never TensorFlow, so it
runs anywhere the base install does. ``run_edgetpu_compiler`` runs the compiler itself, which
exists only for x86-64 Debian/Ubuntu.

Modules: ``flatbuffer`` (the graph, read), ``checks`` (one check per documented limitation),
``ops_table`` (Coral's supported-operations table), ``report`` (the op-by-op prediction),
``format`` (the terminal table), ``compiler`` (the compiler call and its log).
"""

from .compiler import (
    COMPILER_RUNTIME_VERSIONS,
    INSTALL_COMMANDS,
    MAPPED_STATUS,
    NOT_FOUND_REASON,
    parse_compiler_log,
    run_edgetpu_compiler,
)
from .flatbuffer import OpView, TensorInfo
from .format import format_edgetpu_report
from .ops_table import EDGETPU_OPS, LATEST_RUNTIME, UNCHECKABLE_NOTES, OpRow
from .report import EDGETPU_CUSTOM_OP, FOLLOWS_UNMAPPED, edgetpu_report

__all__ = [
    "COMPILER_RUNTIME_VERSIONS",
    "EDGETPU_CUSTOM_OP",
    "EDGETPU_OPS",
    "FOLLOWS_UNMAPPED",
    "INSTALL_COMMANDS",
    "LATEST_RUNTIME",
    "MAPPED_STATUS",
    "NOT_FOUND_REASON",
    "OpRow",
    "OpView",
    "TensorInfo",
    "UNCHECKABLE_NOTES",
    "edgetpu_report",
    "format_edgetpu_report",
    "parse_compiler_log",
    "run_edgetpu_compiler",
]
