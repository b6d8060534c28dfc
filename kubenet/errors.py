"""One exception family, so the CLI can turn any failure into one kubectl-style line."""

from __future__ import annotations

__all__ = [
    "KubenetError",
    "InvalidManifest",
    "NotFound",
    "AlreadyExists",
    "BadRequest",
    "Unavailable",
    "ToolMissing",
]


class KubenetError(Exception):
    """Base class: ``str(err)`` is the whole message the user sees."""

    kind = "error"

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the same one line as the CLI."""
        return [str(self)]


class InvalidManifest(KubenetError):
    """A manifest that Kubernetes itself would reject."""


class NotFound(KubenetError):
    """An unknown lab, pod, node or object."""


class AlreadyExists(KubenetError):
    """An object or lab name that is taken."""


class BadRequest(KubenetError):
    """A request that cannot be honoured in the lab's current state."""


class Unavailable(KubenetError):
    """This host cannot run a lab (no privileges, no user namespaces)."""


class ToolMissing(KubenetError):
    """A system tool the lab needs is not installed."""


_BY_NAME = {cls.__name__: cls for cls in (KubenetError, InvalidManifest, NotFound, AlreadyExists,
                                          BadRequest, Unavailable, ToolMissing)}


def from_wire(name: str, message: str) -> KubenetError:
    """Rebuild an error the lab's agent reported over its socket."""
    return _BY_NAME.get(name, KubenetError)(message)
