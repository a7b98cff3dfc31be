"""pointsman: an LLM router that picks, for every request, the deployment that should answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pointsman.router import Router


def __getattr__(name: str) -> Any:
    # `import pointsman` stays cheap; the router (its HTTP client, pydantic) loads on first use.
    if name == "Router":
        from pointsman.router import Router

        return Router
    raise AttributeError(name)


__all__ = ["Router", "__version__"]
