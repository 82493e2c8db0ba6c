"""recsys-kit: honest K-fold training, tuning and blending for top-10 recommendation contests.

The notebook API (recsys_kit.api; README "Python API"), one call per step of the CLI's loop:

    load_data(dir)                     -> Dataset          the contest-layout folder
    cross_validate(data, model, folds) -> CVResult         `kit cv`: metrics, scores on demand
    blend([run, run, ...])             -> CVResult         `kit ensemble`
    stack([run, run, ...], data=dir)   -> CVResult         `kit stack`: a ranker learned on OOF candidates
    submit(run, out)                   -> Path             `kit submit`: the contest CSV, validated
    validate(csv, data_dir)            -> list[str]        `kit validate`: broken rules, [] if none
    open_run(run_dir)                  -> CVResult         any finished run directory

More in recsys_kit.api: tune, runs_table, report, convert, synthesize, record_public (`kit lb`),
ledger, calibrated. Importing the package is light: torch and optuna load inside the calls that need them.
"""
from recsys_kit.api import CVResult, blend, cross_validate, load_data, open_run, stack, submit, validate

__version__ = "0.1.0"
__all__ = ["CVResult", "blend", "cross_validate", "load_data", "open_run", "stack", "submit", "validate"]
