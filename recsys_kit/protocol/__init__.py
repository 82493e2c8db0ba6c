"""Protocol: what is hidden, who is scored, and how.

Owns the contest-like holdout and the user folds (holdout), the fold split as values (split),
Recall@10 / NDCG@10 and the contest's cut-off K (metrics), top-k and the seen-item mask
(ranking), nested contests with hidden answers (nested), the checks before a run (preflight),
a first run's parse and holdout drawn in a forked child (prefetch) and the time-consistency
filter fitted on OOF (time_filter). Imports data and the top-level modules.
"""
