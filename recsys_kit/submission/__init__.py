"""Submission: a run's top-10 unseen items per user as the contest's CSV, and its validator.

Owns write_submission and validate_submission (contest_csv). Named `submission`, not `submit`:
a subpackage `submit` would shadow `recsys_kit.submit()` once imported. Imports runs, protocol and data.
"""
