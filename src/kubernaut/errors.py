"""The one error hierarchy of the project; the entry points turn it into messages and exit codes."""


class KubernautError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(KubernautError):
    """A configuration value is missing or invalid; the message names the key."""


class InvalidTargetError(KubernautError):
    """A target string does not have the form namespace/kind/name or kind/name."""


class ControlPlaneError(KubernautError):
    """The local control plane could not be built, started or reached."""
