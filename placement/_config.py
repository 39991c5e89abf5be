"""``PlacementConfig``: the knobs of a placement round, its plugins and its strategy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from anypu.errors import ConfigError
from anypu.placement._filters import DEFAULT_FILTERS
from anypu.placement._framework import DEFAULT_EFFICIENCY, TERMS, FilterPlugin, ScorePlugin
from anypu.placement._scores import DEFAULT_SCORES
from anypu.placement._shares import DEFAULT_RUNTIME_OVERHEAD
from anypu.placement.gpushare import TRACE_POLICIES

__all__ = ["POLICY_NAMES", "PlacementConfig"]

#: ``PlacementConfig.policy``: ``cost`` (the objective in seconds, solved with CP-SAT) or any
#: GPU-sharing policy of ``placement.gpushare``, applied to live jobs by ``_live_policy``.
#: Each names a strategy of the registry (``_strategies.STRATEGIES``).
POLICY_NAMES: tuple[str, ...] = ("cost", *(cls.name for cls in TRACE_POLICIES))


def _check_plugins(kind: str, plugins: Sequence[object], protocol: type) -> None:
    if not isinstance(plugins, tuple):
        raise ConfigError(f"PlacementConfig.{kind} must be a tuple of plugins")
    for plugin in plugins:
        if not isinstance(plugin, protocol):
            raise ConfigError(
                f"PlacementConfig.{kind}: {plugin!r} is not a {protocol.__name__}"
                f" (see anypu.placement.{protocol.__name__} for what it must have)"
            )
    # Each passed isinstance(plugin, protocol), and both plugin protocols have ``name: str``.
    names: list[str] = [plugin.name for plugin in plugins]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"PlacementConfig.{kind} names {duplicates} more than once")


def _frozen_weights() -> Mapping[str, float]:
    return MappingProxyType(dict.fromkeys(TERMS, 1.0))


@dataclass(frozen=True)
class PlacementConfig:
    """Knobs of one placement round. Every field has a sensible default.

    ``weights`` multiply the terms in the objective (missing terms weigh 1);
    ``efficiency`` maps a device kind to the fraction of its peak TFLOPS a model gets
    (kinds not listed use ``default_efficiency``). ``fragmentation_s`` is the size of
    the packing tie-breaker: keep it well below a typical job's run time. CP-SAT refines
    the first ``cpsat_max_jobs`` jobs of a round (highest priority first); later jobs
    keep their greedy device class, which bounds the model's size for big rounds.
    ``policy`` is ``cost`` or one of ``POLICY_NAMES``' GPU-sharing policies, which then
    places the accelerator jobs (``_live_policy``); ``seed`` feeds CP-SAT and ``random``.
    ``runtime_overhead`` is the device memory a worker's runtime holds besides a job's
    tensors, by ``kind/vendor`` or ``kind``, added to what a job reserves of a shared
    device (``_shares``). A job held back for room ``earmark_after_s`` seconds has a shared
    device set aside until it fits there (``_earmarks``). ``filters`` and ``scores`` are the plugins every strategy runs (each checked against
    ``FilterPlugin`` / ``ScorePlugin``): add a rule or a term here, not in a strategy.
    """

    time_limit_s: float = 0.2
    top_k: int = 8
    cpsat_max_jobs: int = 200
    num_workers: int = 2
    use_cpsat: bool = True
    weights: Mapping[str, float] = field(default_factory=_frozen_weights)
    efficiency: Mapping[str, float] = field(default_factory=lambda: DEFAULT_EFFICIENCY)
    default_efficiency: float = 0.3
    launch_overhead_s: float = 0.002
    load_overhead_s: float = 0.05
    load_bytes_per_s: float = 1e9
    fragmentation_s: float = 5e-4
    priority_weight: float = 1.0
    policy: str = "cost"
    seed: int = 0
    runtime_overhead: Mapping[str, int] = field(default_factory=lambda: DEFAULT_RUNTIME_OVERHEAD)
    earmark_after_s: float = 5.0
    filters: tuple[FilterPlugin, ...] = DEFAULT_FILTERS
    scores: tuple[ScorePlugin, ...] = DEFAULT_SCORES

    def __post_init__(self) -> None:
        def positive(name: str, value: float) -> None:
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"PlacementConfig.{name} must be > 0, got {value!r}")

        def non_negative(name: str, value: float) -> None:
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0):
                raise ConfigError(f"PlacementConfig.{name} must be >= 0, got {value!r}")

        positive("time_limit_s", self.time_limit_s)
        positive("load_bytes_per_s", self.load_bytes_per_s)
        non_negative("earmark_after_s", self.earmark_after_s)
        positive("default_efficiency", self.default_efficiency)
        for name in ("launch_overhead_s", "load_overhead_s", "fragmentation_s", "priority_weight"):
            non_negative(name, getattr(self, name))
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"PlacementConfig.top_k must be an integer >= 1, got {self.top_k!r}")
        if not isinstance(self.cpsat_max_jobs, int) or self.cpsat_max_jobs < 2:
            raise ConfigError(
                f"PlacementConfig.cpsat_max_jobs must be an integer >= 2, got {self.cpsat_max_jobs!r}"
            )
        if not isinstance(self.num_workers, int) or not 1 <= self.num_workers <= 2:
            raise ConfigError(
                f"PlacementConfig.num_workers must be 1 or 2 (the scheduler shares its "
                f"cores), got {self.num_workers!r}"
            )
        unknown = sorted(set(self.weights) - set(TERMS))
        if unknown:
            raise ConfigError(
                f"PlacementConfig.weights has unknown term(s) {', '.join(unknown)}; "
                f"known terms: {', '.join(TERMS)}"
            )
        for term, w in self.weights.items():
            non_negative(f"weights[{term!r}]", w)
        for key, nbytes in self.runtime_overhead.items():
            non_negative(f"runtime_overhead[{key!r}]", nbytes)
        for kind, eff in self.efficiency.items():
            if isinstance(eff, bool) or not (isinstance(eff, (int, float)) and 0 < eff <= 1):
                raise ConfigError(
                    f"PlacementConfig.efficiency[{kind!r}] must be in (0, 1], got {eff!r}"
                )
        _check_plugins("filters", self.filters, FilterPlugin)
        _check_plugins("scores", self.scores, ScorePlugin)
        if self.policy not in POLICY_NAMES:
            raise ConfigError(
                f"PlacementConfig.policy {self.policy!r} is unknown; "
                f"choose one of: {', '.join(POLICY_NAMES)}"
            )

    def weight(self, term: str) -> float:
        return float(self.weights.get(term, 1.0))

    def efficiency_of(self, kind: str) -> float:
        return float(self.efficiency.get(kind, self.default_efficiency))
