"""The one cost model of learned routing: expected dollars per call, per model.

A model's expected cost of one call is, in order of preference:

1. list prices ($ per million input and output tokens) times the prompt's tokens and the model's
   expected output length;
2. per-token prices estimated from training rows that recorded each call's dollar cost (and
   token counts): non-negative least squares of cost on (prompt tokens, output tokens);
3. a flat dollar cost per call, the mean recorded cost, when rows recorded costs but no tokens.

A model with none of these has no known cost. It is never silently free: `missing_costs` names
it, and training, calibration, start-up and evaluation log a warning (logger
``pointsman.learning``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("pointsman.learning")

# Output tokens assumed per call when nothing recorded a length (the same as `datasets`).
DEFAULT_OUTPUT_TOKENS = 256.0


@dataclass
class CostModel:
    """Expected dollars per call for each model; see the module doc for the precedence."""

    models: list[str]
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    call_costs: dict[str, float] = field(default_factory=dict)
    output_tokens: dict[str, float] = field(default_factory=dict)

    def missing(self) -> list[str]:
        return missing_costs(self.models, self.prices, self.call_costs)

    def known(self) -> bool:
        return not self.missing()

    def expected(
        self, prompt_tokens: float, prices: dict[str, tuple[float, float]] | None = None
    ) -> np.ndarray:
        """Dollars of one call to each model (`prices` override the stored ones); 0 where no
        cost is known (callers warn through `missing`)."""
        out = np.zeros(len(self.models))
        for j, m in enumerate(self.models):
            price = (prices or {}).get(m) or self.prices.get(m)
            if price is not None:
                tokens_out = self.output_tokens.get(m, DEFAULT_OUTPUT_TOKENS)
                out[j] = (prompt_tokens * price[0] + tokens_out * price[1]) / 1e6
            elif m in self.call_costs:
                out[j] = self.call_costs[m]
        return out


def missing_costs(
    models: Sequence[str],
    prices: dict[str, tuple[float, float]],
    call_costs: dict[str, float] | None = None,
) -> list[str]:
    """Models with neither a price nor a per-call cost."""
    return [m for m in models if m not in prices and m not in (call_costs or {})]


def warn_missing(where: str, missing: Sequence[str]) -> str | None:
    """Log (and return) the warning for models without a known cost, or None when all have one."""
    if not missing:
        return None
    message = (
        f"{where}: no price or per-call cost for {', '.join(missing)}; routing cannot weigh "
        "their cost (they count as free). Give --prices or costs in the data, or deployment prices."
    )
    log.warning(message)
    return message


def estimate_from_calls(
    models: Sequence[str],
    cost: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray | None,
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Per-model cost from recorded per-call dollars: (per-token prices, flat per-call costs).

    With output token counts, each model's ($/M input, $/M output) comes from non-negative least
    squares of its calls' costs on (prompt tokens, output tokens); without them (or when the fit
    is degenerate) the model gets a flat cost per call, the mean of its recorded costs.
    """
    prices: dict[str, tuple[float, float]] = {}
    flat: dict[str, float] = {}
    for j, m in enumerate(models):
        y = np.asarray(cost[:, j], dtype=np.float64)
        if output_tokens is not None:
            x = np.column_stack([prompt_tokens, output_tokens[:, j]]).astype(np.float64) / 1e6
            coef = _nnls(x, y)
            fitted = x @ coef
            # Keep the fit only if it explains the costs at least as well as their mean.
            if coef.sum() > 0 and np.sum((fitted - y) ** 2) <= np.sum((y - y.mean()) ** 2) + 1e-18:
                prices[m] = (float(coef[0]), float(coef[1]))
                continue
        flat[m] = float(y.mean())
    return prices, flat


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares for two columns (closed form over the four active sets)."""
    best, best_err = np.zeros(x.shape[1]), float(np.sum(y**2))
    for cols in ([0, 1], [0], [1]):
        sub = x[:, cols]
        coef, *_ = np.linalg.lstsq(sub, y, rcond=None)
        if np.all(coef >= 0):
            full = np.zeros(x.shape[1])
            full[cols] = coef
            err = float(np.sum((x @ full - y) ** 2))
            if err < best_err:
                best, best_err = full, err
    return best
