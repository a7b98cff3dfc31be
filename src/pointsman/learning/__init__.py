"""Learned routing: encoders, quality predictors, calibration, semantic routes, and the
offline training and evaluation of routers on recorded outcomes.

Nothing here is imported by `import pointsman`; numpy and the encoders load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pointsman.learning.artifact import Choice, RouterArtifact
    from pointsman.learning.calibration import Target
    from pointsman.learning.semantic import Route, SemanticRouter

__all__ = ["Choice", "Route", "RouterArtifact", "SemanticRouter", "Target", "load_router"]

_LAZY = {
    "Choice": "pointsman.learning.artifact",
    "RouterArtifact": "pointsman.learning.artifact",
    "Target": "pointsman.learning.calibration",
    "Route": "pointsman.learning.semantic",
    "SemanticRouter": "pointsman.learning.semantic",
}


def load_router(path: str = "default") -> RouterArtifact:
    """A trained router: a shipped one by name (``default``, ``llmrouter-9``) or a folder."""
    from pointsman.learning.artifact import RouterArtifact

    return RouterArtifact.load(path)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pointsman.learning' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
