"""What every sampling method declares, once: its options, its default last step, its checks.

A method is a frozen dataclass whose fields are its own options with the paper's defaults. The
registry `sampling.METHODS`, the application's config group `sampling.<method>`, the checks run
before any work, controllable generation and the docs' option table all read this one
declaration; a new method is one module with one such class plus one registry entry.

Every method runs with the options all samplers share (see `sampling.sample`):
    run(sde, score_fn, x_T, *, eps, denoise, N, generator, progress) -> x_0
and counts nothing itself: `sampling.Sampler` wraps `score_fn` to count evaluations.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, ClassVar, Dict, Optional

import torch

Tensor = torch.Tensor

DENOISE = (False, "pf", "mean")
DEFAULT_EPS = 1e-3


class Declaration:
    """Methods whose dataclass fields are their options: the options' defaults and types."""

    @classmethod
    def option_defaults(cls) -> Dict[str, Any]:
        """The method's own options and their defaults, in declaration order."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def option_types(cls) -> Dict[str, type]:
        """Each option's value type (the `X` of `Optional[X]`), for typed config fields."""
        hints = typing.get_type_hints(cls)
        out = {}
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            out[f.name] = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
        return out

    def options(self) -> Dict[str, Any]:
        """This instance's options (JSON-ready)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SamplingMethod(Declaration):
    """Base of the method declarations (see the module docstring).

    Class attributes:
      default_denoise: the final step (`DENOISE`) when the caller leaves `denoise` at None/True.
      allows_zero_eps: whether eps = 0 is valid where std(0) > 0 (VE): the chain-based methods
        never evaluate the score at their last grid time.
    """

    default_denoise: ClassVar = "pf"
    allows_zero_eps: ClassVar[bool] = False

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Check the option values that need no SDE; raise ValueError naming the option."""

    def check(self, sde, N: int, eps: float) -> None:
        """Check what depends on the SDE, the step count and the end time (e.g. that the SDE's
        N-level chain is valid); raise ValueError before any work."""

    # ---------------------------------------------------------------------------------- run
    def run(self, sde, score_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, *, eps: float, denoise,
            N: int, generator: Optional[torch.Generator], progress) -> Tensor:
        """Samples at zero noise from the prior samples x (B, ...)."""
        raise NotImplementedError

