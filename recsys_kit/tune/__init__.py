"""Tuning: Optuna studies over a model's search space, many workers on one storage.

Owns the study loop (study), the study's summary: trials.csv, best.toml, importances and plots
(summary), storage and study opening (storage) and the search space files (search_space).
Imports cv and everything below it.
"""
