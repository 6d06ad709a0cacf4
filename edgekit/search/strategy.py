"""Which level-1 candidates (a pruned or distilled model × a graph technique × a runtime) to build.

- :class:`Exhaustive` builds all of them, cheapest first (the order of :func:`space.space`).
- :class:`OptunaSampler` lets Optuna's ask/tell TPE sampler propose them one at a time over three
  factors (model stem, graph technique, runtime), two objectives (latency relative to fp32 measured
  in the same short run, and the gate's score). A candidate the gate rejects is told as failed.

``auto`` picks exhaustive for small spaces and Optuna above :data:`OPTUNA_ABOVE` candidates.
Failures of the gate are never extended whatever the strategy: only candidates whose parents
passed reach a strategy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from edgekit.errors import BadInputError
from edgekit.search.space import Job, Spec

STRATEGIES = ("auto", "exhaustive", "optuna")
OPTUNA_ABOVE = 48  # level-1 candidates; at or below this the search builds them all
DEFAULT_TRIALS = 24


class Exhaustive:
    name = "exhaustive"
    trials = 0

    def rounds(self, jobs: Sequence[Job]) -> Iterator[list[Job]]:
        if jobs:
            yield list(jobs)

    def tell(self, spec: Spec, objectives: tuple[float, float] | None) -> None:
        pass


class OptunaSampler:
    """Optuna ask/tell over (stem, graph, runtime); ``trials`` candidates are built at most."""

    name = "optuna"

    def __init__(self, seed: int, trials: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, trials))
        self.study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
        self.trials = trials
        self._open: dict[str, Any] = {}
        self._told: dict[str, tuple[float, float] | None] = {}

    def rounds(self, jobs: Sequence[Job]) -> Iterator[list[Job]]:
        from optuna.distributions import BaseDistribution, CategoricalDistribution
        from optuna.trial import TrialState

        by_key = {(j.spec.stem, j.spec.graph, j.spec.runtime): j for j in jobs}
        dists: dict[str, BaseDistribution] = {
            "stem": CategoricalDistribution(sorted({str(k[0]) for k in by_key})),
            "graph": CategoricalDistribution(sorted({k[1] for k in by_key})),
            "runtime": CategoricalDistribution(sorted({k[2] for k in by_key})),
        }
        built = 0
        for _ in range(self.trials * 20):  # asks that hit an invalid or repeated combination are cheap
            if built >= self.trials or built >= len(by_key):
                return
            trial = self.study.ask(dists)
            key = (trial.params["stem"], trial.params["graph"], trial.params["runtime"])
            job = by_key.get(key)
            if job is None:  # this graph technique does not exist on this runtime
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            if job.spec.name in self._told:  # proposed again: tell what was measured
                values = self._told[job.spec.name]
                self.study.tell(trial, list(values) if values else None, state=None if values else TrialState.FAIL)
                continue
            self._open[job.spec.name] = trial
            built += 1
            yield [job]

    def tell(self, spec: Spec, objectives: tuple[float, float] | None) -> None:
        from optuna.trial import TrialState

        trial = self._open.pop(spec.name, None)
        self._told[spec.name] = objectives
        if trial is not None:
            if objectives is None:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, list(objectives))


def make(name: str, n_candidates: int, *, seed: int, trials: int | None) -> Exhaustive | OptunaSampler:
    if name not in STRATEGIES:
        raise BadInputError(f"--strategy must be one of {', '.join(STRATEGIES)} (got {name!r})")
    if trials is not None and trials < 1:
        raise BadInputError(f"--trials must be >= 1 (got {trials})")
    if name == "auto":
        name = "optuna" if n_candidates > OPTUNA_ABOVE else "exhaustive"
    if name == "exhaustive":
        return Exhaustive()
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise BadInputError("--strategy optuna needs Optuna: pip install 'edgekit[search]'") from None
    return OptunaSampler(seed, trials or DEFAULT_TRIALS)
