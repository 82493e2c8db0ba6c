"""recsys-kit: honest K-fold training, tuning and blending for top-10 recommendation contests."""

__version__ = "0.1.0"
