"""Keras model to TFLite / LiteRT conversion (int8, float16, dynamic), verification and metadata.

``edgesight.convert`` is both this package and the API function: ``edgesight.convert(run,
out=...)`` calls :func:`edgesight.convert.api.convert`. The package module is made callable
because importing any ``edgesight.convert.*`` module binds the name ``convert`` on ``edgesight``
to this package, which would otherwise hide a plain function of the same name.
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .api import convert

        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
