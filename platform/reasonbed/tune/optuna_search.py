"""The one module that touches Optuna and Ray Tune's OptunaSearch.

`StudySearch` is Ray Tune's OptunaSearch (seeded sampler, persistent RDB storage) with changes that
keep the Optuna study honest for dashboards: a trial that ASHA stopped early is told to the study as
PRUNED (with its intermediate values), not COMPLETE, and carries the user attributes
`tune_trial_id` and `stopped_by`; every suggested config carries `_draw`, the Optuna trial number
(the draw's place in the study: 0 is the defaults), which the trial records; intermediate values are keyed
by training examples seen (ASHA's time unit) when reports carry them; a restored study does not draw the
defaults a second time; `close_abandoned()` marks trials left RUNNING by an interrupted driver as FAIL
(`abandoned`), so a restored sweep leaves no trial in limbo. `make_searcher()` builds
it for `search=tpe` (TPESampler) or `search=random` (RandomSampler, DomainBed's random search): one
path for both, draw 0 the defaults.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from reasonbed.tune.trial import DRAW_KEY

log = logging.getLogger(__name__)


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna storage for a SQLAlchemy URL (sqlite:///path.db by default).

    SQLite waits up to 60 s for a lock, since parallel studies share one file.
    """
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


SAMPLERS = ("tpe", "random")


def make_sampler(search: str, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's seeded sampler for `search`: TPE (adaptive) or random (independent uniform draws)."""
    if search == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if search == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"search: unknown search {search!r}; known: {', '.join(SAMPLERS)}")


def make_searcher(search: str, seed: int, study_name: str, storage: Any, defaults: dict[str, Any] | None,
                  metric: str = "val_acc") -> StudySearch:
    """The searcher of one study; its first draw is `defaults` (when given), the rest come from the sampler."""
    return StudySearch(metric=metric, mode="max", sampler=make_sampler(search, seed), study_name=study_name,
                       storage=storage, points_to_evaluate=[defaults] if defaults else None)


LIVE_OR_FINISHED = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING,
                    optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class StudySearch(OptunaSearch):
    """OptunaSearch that records early stops as PRUNED and maps Tune trial ids into the study."""

    def _setup_study(self, mode: Any) -> None:
        """Ray enqueues points_to_evaluate into the (persistent) study each time it sets the study up, and a
        restored sweep sets it up again: the defaults would be drawn twice. Enqueue a point only when no
        waiting, running or finished trial of the study holds it (an abandoned one, closed FAIL, does not)."""
        points, self._points_to_evaluate = self._points_to_evaluate, []
        try:
            super()._setup_study(mode)
        finally:
            self._points_to_evaluate = points
        held = [trial.system_attrs.get("fixed_params", trial.params)
                for trial in self._ot_study.get_trials(deepcopy=False, states=LIVE_OR_FINISHED)]
        for point in points:
            if not any(_same_params(point, other) for other in held):
                self._ot_study.enqueue_trial(point)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if "examples_seen" not in result or trial_id in self._completed_trials:
            return super().on_trial_result(trial_id, result)
        self._ot_trials[trial_id].report(float(result[self.metric]), int(result["examples_seen"]))

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            if isinstance(config, dict):  # Tune trial ids are random: the draw number orders a study's trials
                config = {**config, DRAW_KEY: ot_trial.number}
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        stopped = bool(result) and not error and int(result.get("step", 0)) < int(result.get("total_steps", 0))
        if not stopped or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        if result.get(self.metric) is not None:  # the value it was stopped at, as its last intermediate value
            ot_trial.report(float(result[self.metric]),
                            int(result.get("examples_seen", result.get("training_iteration", 1))))
        ot_trial.set_user_attr("stopped_by", "asha")
        ot_trial.set_user_attr("stopped_at_step", int(result.get("step", 0)))
        try:
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - optuna refuses e.g. a trial already finished
            log.warning("could not record trial %s as pruned: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


def _same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        math.isclose(float(a[key]), float(b[key])) if isinstance(a[key], (int, float)) and isinstance(b[key], (int, float))
        else a[key] == b[key] for key in a)


def close_abandoned(storage_url: str, study_name: str) -> int:
    """Mark trials still RUNNING (their driver was killed) as FAIL; returns how many."""
    storage = rdb_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    study_id = storage.get_study_id_from_name(study_name)
    closed = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                    "abandoned", True)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        closed += 1
    return closed


def study_summary(storage_url: str, study_name: str) -> dict[str, Any]:
    """Counts of trial states (with early stops told apart), for logs and tests."""
    study = optuna.load_study(study_name=study_name, storage=rdb_storage(storage_url))
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    return {"study": study_name, "states": states, "trials": sum(states.values())}


def param_importances(storage_url: str, study_name: str) -> dict[str, float]:
    """Optuna's parameter importances (PED-ANOVA) over finished trials, summing to 1; empty if too few, or when
    no parameter tells the best trials apart (all raw importances 0, which Optuna's normalisation would show as
    equal shares).

    PED-ANOVA (Watanabe et al., IJCAI 2023; Optuna 5's default evaluator, named here so that a change of
    Optuna's default cannot change the statistic unnoticed): how much each hyperparameter's distribution in
    the study's top 10% of trials differs from its distribution over all of them; deterministic (fANOVA fits
    a random forest, and needs scikit-learn)."""
    study = optuna.load_study(study_name=study_name, storage=rdb_storage(storage_url))
    finished = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(finished) < 2:
        return {}
    try:
        raw = optuna.importance.PedAnovaImportanceEvaluator().evaluate(study)
    except (RuntimeError, ValueError) as error:
        log.info("no parameter importances for %s: %s", study_name, error)
        return {}
    total = sum(raw.values())
    return {param: value / total for param, value in raw.items()} if total > 0 else {}
