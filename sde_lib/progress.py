"""Progress reporting shared by every long-running function of the library.

Samplers, ODE solvers and the likelihood take `progress`:
  * False (default): nothing is shown;
  * True: the function shows its own tqdm bar;
  * an object with `update(amount: float)` (a tqdm bar, or any callback object): the function
    reports the *fraction* of its own work done, increments summing to 1.0 over the call. A
    caller that runs many calls (batches of samples, rounds of an evaluation) makes one bar of
    total = number of calls, passes it to each, and the bar moves within every call and shows
    an ETA over all of them.
"""
from __future__ import annotations

from typing import Optional

from tqdm.auto import tqdm


class _Fraction:
    """Forwards `update(amount)` in the function's own units as a fraction of `total`."""

    def __init__(self, sink, total: float):
        self.sink, self.total = sink, float(total)
        self.done = 0.0

    def update(self, amount: float) -> None:
        amount = min(float(amount), self.total - self.done)  # never report more than the call
        if amount > 0 and self.total > 0:
            self.done += amount
            self.sink.update(amount / self.total)

    def close(self) -> None:
        """Report what is left (a solver that stopped short of its span, a skipped step)."""
        self.update(self.total - self.done)


class _Silent:
    def update(self, amount: float) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(progress, total: float, desc: str, unit: str = "step"):
    """The bar a function reports to: its own tqdm (progress=True), the caller's object (as
    fractions of `total`), or nothing. Use as a context manager, or call `close()`.

    Args:
      progress: False, True, or an object with `update(float)` (see the module docstring).
      total: the amount of work of this call in its own units (steps, or time span).
      desc, unit: label and unit of an own bar.
    """
    if progress is True:
        return _Bar(tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True))
    if not progress:
        return _Bar(_Silent())
    if not callable(getattr(progress, "update", None)):
        raise TypeError(f"progress must be a bool or an object with update(float), got {type(progress).__name__}")
    return _Bar(_Fraction(progress, total))


class _Bar:
    """Context manager around a sink (a tqdm bar, a fraction forwarder or nothing); closed on exit."""

    def __init__(self, sink):
        self.sink = sink

    def update(self, amount: float) -> None:
        self.sink.update(amount)

    def close(self) -> None:
        self.sink.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> Optional[bool]:
        self.close()
        return None

