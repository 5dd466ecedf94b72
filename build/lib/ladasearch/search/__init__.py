"""The search: Ray Tune schedules the trials, Optuna samples the ratios, MLflow records every trial.

Modules: ``settings`` (SearchSettings, SearchConfig, the saved spec), ``space`` (search-space files),
``samplers`` (Optuna samplers by name), ``objectives`` (score, latency and size in a runtime),
``worker`` (one trial), ``driver`` (Ray + Tune + Optuna wiring,
run and resume), ``callbacks`` (MLflow runs and progress lines), ``results`` (rows, best trial, Pareto).
Reliability: ``cluster`` (which Ray, reached in bounded time), ``store`` (the MLflow store, checked and made
once), ``locks`` (a search's name, a new store), ``signals`` (SIGTERM as Ctrl-C), ``trust`` (the runs folder
a resume unpickles), ``recorded`` (resume of a
complete search), ``space_file`` (bounded YAML).
Choices: ``warm_start`` (the first trials: corners, the paper's point, earlier searches), ``study`` (the
Optuna study in a journal file; only scores at the target size reach it), ``dev_eval`` (the dev score of the
chosen model(s), after every choice was made on the validation split).

    settings = SearchSettings(data=DataConfig("sst2"), model="minilm", space=SearchSpace.load("default"),
                              search=SearchConfig(name="s1", target=5.0))
    outcome = run_search(settings)          # later, after a crash: resume_search("s1")
"""

from .driver import init_ray, resume_search, run_search
from .results import SearchOutcome, TrialRow
from .settings import SavedSearch, SearchConfig, SearchSettings
from .space import SearchSpace

__all__ = ["SavedSearch", "SearchConfig", "SearchOutcome", "SearchSettings", "SearchSpace", "TrialRow", "init_ray",
           "resume_search", "run_search"]
