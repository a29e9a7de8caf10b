"""The synthesizer backend interface: a parameter table and a batched ``render``.

A backend describes its parameters with :class:`Param` (name, physical range, default, continuous or
discrete, curve) and renders a batch of *normalised* parameter vectors (every value in [0, 1], in table
order, like a VST host's normalised values) into mono audio::

    synth = get_backend("acids-sub")
    audio = synth.render(params, note=60, velocity=100, hold=3.0, duration=4.0, sample_rate=22050)  # (B, T)

The normalised space is what the models predict (a sigmoid output) and what the dataset stores, so
backends with different units are interchangeable. ``Param.to_physical`` / ``to_normalised`` map through
the curve: ``linear`` (v = lo + u (hi - lo)) or ``exp`` (v = lo (hi / lo) ** u, for frequencies and times;
lo > 0). A discrete parameter with ``steps`` choices snaps u to ``k / (steps - 1)``.

Backends are found by name in :data:`BACKENDS`; optional ones (amsynth through DawDreamer) register a
factory that raises :class:`~acids_core.errors.MissingDependency` when their package is absent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from acids_core.errors import UsageError

if TYPE_CHECKING:
    import torch

Curve = Literal["linear", "exp"]


@dataclass(frozen=True)
class Param:
    """One synthesizer parameter.

    Attributes:
        name: unique within the backend.
        lo, hi: the physical range (inclusive).
        default: physical default value (used when the parameter is not sampled).
        continuous: False for a switch or a choice.
        steps: number of choices of a discrete parameter (0 for continuous ones).
        curve: how a normalised u in [0, 1] maps to the range.
        unit: for display ("Hz", "s", "st", ...).
    """

    name: str
    lo: float
    hi: float
    default: float
    continuous: bool = True
    steps: int = 0
    curve: Curve = "linear"
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.lo < self.hi:
            raise ValueError(f"{self.name}: lo must be < hi")
        if not self.lo <= self.default <= self.hi:
            raise ValueError(f"{self.name}: default {self.default} outside [{self.lo}, {self.hi}]")
        if self.curve == "exp" and self.lo <= 0:
            raise ValueError(f"{self.name}: an exp curve needs lo > 0")
        if not self.continuous and self.steps < 2:
            raise ValueError(f"{self.name}: a discrete parameter needs steps >= 2")

    def to_physical(self, u: Any) -> Any:
        """Normalised (float or tensor in [0, 1]) → physical value, through the curve."""
        if self.curve == "exp":
            return self.lo * (self.hi / self.lo) ** u
        return self.lo + (self.hi - self.lo) * u

    def to_normalised(self, v: float) -> float:
        """Physical value → normalised u in [0, 1] (clamped)."""
        if self.curve == "exp":
            u = math.log(v / self.lo) / math.log(self.hi / self.lo)
        else:
            u = (v - self.lo) / (self.hi - self.lo)
        return min(1.0, max(0.0, u))

    @property
    def default_normalised(self) -> float:
        return self.snap(self.to_normalised(self.default))

    def snap(self, u: float) -> float:
        """The nearest allowed normalised value (itself for a continuous parameter)."""
        if self.continuous:
            return u
        k = round(u * (self.steps - 1))
        return k / (self.steps - 1)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "min": self.lo,
            "max": self.hi,
            "default": self.default,
            "continuous": self.continuous,
            "steps": self.steps,
            "curve": self.curve,
            "unit": self.unit,
        }


@runtime_checkable
class SynthBackend(Protocol):
    """What every backend provides.

    Attributes:
        name: the backend's registry name.
        params: the parameter table, in the order of the normalised vectors.
        subsets: named parameter subsets (``"16"``, ``"32"``, ``"all"``) as tuples of names.
        differentiable: True when ``render`` back-propagates to ``params``.
        deterministic: True when the same inputs always give the same samples.
    """

    name: str
    params: tuple[Param, ...]
    subsets: dict[str, tuple[str, ...]]
    differentiable: bool
    deterministic: bool

    def render(
        self,
        params: torch.Tensor,
        note: int | torch.Tensor = 60,
        velocity: int | torch.Tensor = 100,
        hold: float = 3.0,
        duration: float = 4.0,
        sample_rate: int = 22050,
    ) -> torch.Tensor:
        """Render ``params`` (B, P) normalised → mono audio (B, T), T = round(duration * sample_rate)."""
        ...


def param_names(backend: SynthBackend) -> list[str]:
    return [p.name for p in backend.params]


def default_vector(backend: SynthBackend) -> list[float]:
    """The normalised defaults, in table order."""
    return [p.default_normalised for p in backend.params]


def subset_indices(backend: SynthBackend, subset: str | Sequence[str]) -> list[int]:
    """Indices (in table order) of a named subset, a list of parameter names, or "name,name,...".

    Raises:
        UsageError: an unknown subset or parameter name.
    """
    names = param_names(backend)
    if isinstance(subset, str) and subset not in backend.subsets and (subset in names or "," in subset):
        subset = [s.strip() for s in subset.split(",") if s.strip()]
    if isinstance(subset, str):
        if subset not in backend.subsets:
            raise UsageError(
                f"{backend.name} has no parameter subset {subset!r} (subsets: {', '.join(backend.subsets)})"
            )
        wanted = backend.subsets[subset]
    else:
        wanted = tuple(subset)
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise UsageError(f"{backend.name} has no parameter(s) {unknown}")
    return sorted(names.index(n) for n in wanted)


def _acids_sub() -> SynthBackend:
    from acids_flowsynth.subtractive import SubtractiveSynth

    return SubtractiveSynth()


_AMSYNTH: list[SynthBackend] = []


def _amsynth() -> SynthBackend:
    """One shared instance per process: its render workers (one per sample rate) are reused."""
    from acids_flowsynth.amsynth import AmsynthSynth

    if not _AMSYNTH:
        _AMSYNTH.append(AmsynthSynth())
    return _AMSYNTH[0]


BACKENDS: dict[str, Callable[[], SynthBackend]] = {"acids-sub": _acids_sub, "amsynth": _amsynth}


def get_backend(name: str) -> SynthBackend:
    """The backend registered as ``name`` (UsageError listing the choices otherwise)."""
    if name not in BACKENDS:
        raise UsageError(f"unknown synth {name!r} (synths: {', '.join(BACKENDS)})")
    return BACKENDS[name]()
