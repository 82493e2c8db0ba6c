"""RecVAE: config checks, the composite prior, the alternating encoder/decoder phases, learning, seeds."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_kit.config import TrainConfig
from recsys_kit.errors import DataError
from recsys_kit.protocol.metrics import recall_per_user, summarize
from recsys_kit.models.popularity import Popularity, PopularityConfig
from recsys_kit.models.recvae import RecVAE, RecVAEConfig, RecVAENet, items_per_user, log_normal
from recsys_kit.protocol.ranking import top_k
from recsys_kit.models.train import RowBatches, fit_net, sparse_batch
from tests.conftest import taste_rows, two_cluster_rows

SMALL = RecVAEConfig(hidden_dim=32, latent_dim=8, layers=3)
QUICK = TrainConfig(epochs=2, batch_size=16, lr=3e-3, patience=10)


def test_config_rejects_bad_mixtures_and_weights():
    with pytest.raises(DataError, match="sum to 1"):
        RecVAEConfig(mixture_weights=(0.5, 0.5, 0.5))
    with pytest.raises(DataError, match="3 weights"):
        RecVAEConfig(mixture_weights=(0.5, 0.5))
    with pytest.raises(DataError, match="mixture_weights"):
        RecVAEConfig(mixture_weights=(0.0, 0.9, 0.1))
    with pytest.raises(DataError, match="gamma"):
        RecVAEConfig(gamma=-0.1)
    with pytest.raises(DataError, match="encoder_passes"):
        RecVAEConfig(encoder_passes=0)


def test_composite_prior_and_kl_weight_match_the_formulas():
    rows = two_cluster_rows()
    batch = sparse_batch(rows[:6], "cpu")
    torch.manual_seed(0)
    net = RecVAENet(rows.shape[1], SMALL)
    z = torch.randn(6, SMALL.latent_dim)
    old_mu, old_logvar = net.previous_encoder(batch, 0.0)

    def density(mean, logvar):
        return np.exp(-0.5 * (logvar + math.log(2 * math.pi) + (z.numpy() - mean) ** 2 / np.exp(logvar)))

    expected = np.log(0.15 * density(0.0, 0.0) + 0.75 * density(old_mu.detach().numpy(), old_logvar.detach().numpy())
                      + 0.1 * density(0.0, 10.0))
    np.testing.assert_allclose(net.log_prior(batch, z).numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_normal(z, 0.0, 0.0).numpy(), np.log(density(0.0, 0.0)), rtol=1e-5)
    assert items_per_user(batch).tolist() == np.diff(rows[:6].indptr).tolist()
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in net.encoder.parameters()) + \
        sum(p.numel() for p in net.decoder.parameters())  # the frozen copy is no parameter


class RecordingNet(RecVAENet):
    """Records, before every step, which phase runs and the weights of both halves and of the prior."""

    def __init__(self, *args):
        super().__init__(*args)
        self.log = []

    def _record(self, phase):
        def flat(module):
            return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()
        self.log.append((phase, flat(self.encoder), flat(self.decoder), flat(self.previous_encoder)))

    def encoder_loss(self, batch, progress):
        self._record("encoder")
        return super().encoder_loss(batch, progress)

    def decoder_loss(self, batch, progress):
        self._record("decoder")
        return super().decoder_loss(batch, progress)


def test_alternating_phases_update_one_half_at_a_time_and_refresh_the_prior_each_epoch():
    rows = two_cluster_rows()  # 40 users, batch 16: 3 steps a pass
    torch.manual_seed(0)
    net = RecordingNet(rows.shape[1], RecVAEConfig(hidden_dim=32, latent_dim=8, layers=3, encoder_passes=2))
    summary = fit_net(net, RowBatches(rows), TrainConfig(epochs=2, batch_size=16, lr=1e-2), "cpu", seed=0)
    phases = [entry[0] for entry in net.log]
    epoch = ["encoder"] * 6 + ["decoder"] * 3
    assert phases == epoch + epoch
    for (phase, enc, dec, prior), (_, next_enc, next_dec, next_prior) in zip(net.log, net.log[1:]):
        if phase == "encoder":  # an encoder step moves the encoder and leaves the decoder as it was
            assert torch.equal(dec, next_dec) and not torch.equal(enc, next_enc)
        else:
            assert torch.equal(enc, next_enc) and not torch.equal(dec, next_dec)
    # q_old: the encoder as each epoch started, fixed through the epoch.
    first, second = net.log[0], net.log[9]
    assert torch.equal(first[3], first[1]) and torch.equal(second[3], second[1])
    assert all(torch.equal(entry[3], first[3]) for entry in net.log[:9])
    assert not torch.equal(first[3], second[3])
    assert summary["epochs_run"] == 2


def test_epoch_record_carries_each_phase_loss():
    records = []
    RecVAE(SMALL, QUICK, seed=0).fit(two_cluster_rows(), on_epoch=records.append)
    assert len(records) == QUICK.epochs
    assert all({"loss", "loss_encoder", "loss_decoder"} <= set(r) for r in records)
    assert all(r["loss"] == r["loss_encoder"] for r in records)  # the objective is the encoder's ELBO


def holdout(rows: sp.csr_matrix, seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Each user's items split at random into 80% input and 20% target."""
    rng = np.random.default_rng(seed)
    hide = rng.random(rows.nnz) < 0.2
    coo = rows.tocoo()
    keep = sp.csr_matrix((coo.data[~hide], (coo.row[~hide], coo.col[~hide])), shape=rows.shape)
    target = sp.csr_matrix((coo.data[hide], (coo.row[hide], coo.col[hide])), shape=rows.shape)
    return keep, target


def test_recvae_learns_beyond_popularity_and_is_seeded():
    inputs, targets = holdout(taste_rows(n_users=400, n_items=200))
    train, test_in, test_target = inputs[:320], inputs[320:], targets[320:]

    def recall(model):
        return summarize(recall_per_user(top_k(model.score(test_in), 10), test_target, 10))

    config = RecVAEConfig(hidden_dim=64, latent_dim=32, layers=3, gamma=0.005)
    train_config = TrainConfig(epochs=6, batch_size=64, min_steps_per_epoch=0, lr=3e-3)
    model = RecVAE(config, train_config, seed=3).fit(train)
    baseline = recall(Popularity(PopularityConfig()).fit(train))
    assert recall(model) > baseline * 1.2, (recall(model), baseline)
    again = RecVAE(config, train_config, seed=3).fit(train)
    other = RecVAE(config, train_config, seed=4).fit(train)
    assert np.array_equal(model.score(test_in), again.score(test_in))
    assert not np.array_equal(model.score(test_in), other.score(test_in))
