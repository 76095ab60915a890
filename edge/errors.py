"""Error hierarchy. Every user-facing error is one line that names the file and the fix."""


class EdgesightError(Exception):
    """Base class for errors caused by user input or the environment, not by a bug.

    The CLI prints the message on one line and exits non-zero without a traceback.
    """


class DatasetError(EdgesightError):
    """A dataset folder or manifest cannot be used as given."""


class ConfigError(EdgesightError):
    """A configuration file or option is invalid."""


class ProfileError(ConfigError):
    """A device profile or use-case preset (``firmware_configs/``) is unknown or invalid."""


class BundleError(EdgesightError):
    """A model file, run folder or model bundle is missing, corrupt or inconsistent."""


class SourceError(EdgesightError):
    """A frame source (camera, stream, video file, image folder) cannot be opened or read."""


class DeployError(EdgesightError):
    """A deployment cannot be done as asked: a host, prefix, SSH option or target folder."""


class MissingDependencyError(EdgesightError):
    """An optional dependency is not installed; the message names the extra to add."""


def missing_extra(module: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the error raised when an optional dependency is absent."""
    return MissingDependencyError(
        f"{purpose} needs the Python package '{module}', which is not installed: "
        f"pip install 'edgesight[{extra}]'"
    )
