"""Exponential moving average of a network's weights (Song et al. 2021, App. H: rate 0.9999 for
VP/sub-VP, 0.999 for VE), which sampling and evaluation use instead of the raw weights."""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch


class ExponentialMovingAverage:
    """A shadow copy of a network, updated after every optimizer step:

        shadow <- shadow + (1 - decay_n) (param - shadow),   decay_n = min(rate, (1 + n) / (10 + n))

    where n counts the updates so far (the official warm-up of the rate, so that early averages
    are not dominated by the random initialisation). Buffers are copied, not averaged.

    Args:
      net: the trained network (its parameters are read, never written).
      rate: the EMA rate in [0, 1); 0 makes the shadow a copy of the latest weights.
    """

    def __init__(self, net: torch.nn.Module, rate: float):
        if not (0.0 <= rate < 1.0):
            raise ValueError(f"rate={rate!r}: expected a number in [0, 1)")
        self.rate = float(rate)
        self.num_updates = 0
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)

    def decay(self) -> float:
        """The decay of the next update."""
        return min(self.rate, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        """Move the shadow towards `net`'s current weights."""
        weight = 1.0 - self.decay()
        shadow = list(self.shadow.parameters())
        params = [p.detach().to(s.dtype) for p, s in zip(net.parameters(), shadow)]
        if shadow:
            torch._foreach_lerp_(shadow, params, weight)
        for b_shadow, b in zip(self.shadow.buffers(), net.buffers()):
            b_shadow.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> Dict[str, Any]:
        return {"rate": self.rate, "num_updates": self.num_updates,
                "weights": self.shadow.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        self.shadow.load_state_dict(state["weights"])
