"""Blending: members' score matrices combined with weights fitted on out-of-fold rows.

Owns the ensemble run (ensemble), its members checked to line up (members), the methods and
normalisations (methods), weight fitting and the fallback rule (weights) and the row-block
arithmetic (arithmetic). Imports runs and below, and cv's depth estimate. Named `blending`, not
`blend`: a subpackage `recsys_kit.blend` would replace the API function `recsys_kit.blend()`
as the package's attribute the moment it is imported.
"""
