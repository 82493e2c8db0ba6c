"""Runs: the run directory, written once and read back by one type.

Owns run creation and its checked readers (store), the RunDir type every reader uses (run_dir),
resume of an unfinished `kit cv` (resume) and per-epoch curves (curves). Files are written
through recsys_kit.files. Imports data, protocol and the top-level modules; never models' torch code.
"""
