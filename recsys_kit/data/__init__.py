"""Data: a contest's files in, a Dataset out.

Owns the Dataset (dataset), its one CSV reader and the side files (load), the parse cache
(cache), side-feature encodings (features), the public data sets' readers and converters
(sources, convert), synthetic contests (synth), and what a model may see of a user's rows
(interactions: Interactions, ItemSide). Imports only recsys_kit.errors, files and seeds.
"""
