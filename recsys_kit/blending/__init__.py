"""Blending (not `blend`: that name is `recsys_kit.blend()`): members' score matrices combined with weights fitted on out-of-fold rows.

Owns the ensemble run (ensemble), the methods and normalisations (methods), weight fitting and
the fallback rule (weights) and the row-block arithmetic (arithmetic). Imports runs and below,
and cv.refit's depth estimate.
"""
