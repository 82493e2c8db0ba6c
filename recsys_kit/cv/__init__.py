"""Cross-validation: the fold loop, the refit on every public row, and the leaderboard estimate.

Owns `run_cv` (run), the refit and the estimate's deeper fits (refit). Imports data, protocol,
models and runs.
"""
