import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(name: str) -> Path:
    """A real data set beside the repo; CI always has it, so its absence fails, never skips."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.fail(f"{path} is missing: real-data tests need ../shared/data beside the repository")
    return path


@pytest.fixture(autouse=True, scope="session")
def _own_data_cache(tmp_path_factory):
    # Parsed data sets are cached between commands (recsys_kit.data_cache): keep the tests' own.
    os.environ["RECSYS_KIT_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))
    yield


@pytest.fixture(autouse=True)
def _few_threads():
    # Two CI cores: keep torch from oversubscribing when pytest runs things back to back.
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


def two_cluster_rows(n_users: int = 40, n_items: int = 12, seed: int = 0) -> sp.csr_matrix:
    """Even users like the first half of the items, odd users the second: an obvious answer."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    dense = np.zeros((n_users, n_items), dtype=np.float32)
    for user in range(n_users):
        block = np.arange(half) + (user % 2) * half
        dense[user, rng.choice(block, size=half - 2, replace=False)] = 1
    return sp.csr_matrix(dense)


def taste_rows(n_users: int = 600, n_items: int = 300, seed: int = 0) -> sp.csr_matrix:
    """Users from a few taste clusters over a long-tailed catalogue (EASE has structure to find)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.7
    clusters = rng.dirichlet(np.full(n_items, 0.3), size=6) * popularity
    dense = np.zeros((n_users, n_items), dtype=np.float32)
    for user in range(n_users):
        taste = clusters[user % 6] / clusters[user % 6].sum()
        dense[user, rng.choice(n_items, size=rng.integers(10, 60), replace=False, p=taste)] = 1
    return sp.csr_matrix(dense)
