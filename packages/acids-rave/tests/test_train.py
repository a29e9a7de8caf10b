import torch

from acids_rave import checkpoint
from acids_rave.train import Trainer, beta_at, fit


def _chunks(real_audio, n, length):
    x, _ = real_audio(n * length / 48000 + 0.1, offset=2.0)
    x = x[..., : n * length].reshape(n, 1, length)
    return x / x.abs().max().clamp_min(1e-3) * 0.8


def test_tiny_training_reduces_the_loss_and_switches_phase(tiny, real_audio, tmp_path):
    torch.manual_seed(0)
    data = _chunks(real_audio, 8, 4096)
    batches = [data[i : i + 4] for i in range(0, 8, 4)]
    trainer = Trainer(tiny)
    untrained = trainer.validate(batches)
    logs = fit(trainer, batches, max_steps=30, valid_batches=batches, val_every=30)
    first = sum(log["fullband"] + log["multiband"] for log in logs[:4]) / 4
    last = sum(log["fullband"] + log["multiband"] for log in logs[16:20]) / 4
    assert last < 0.9 * first, (first, last)
    assert logs[-1]["validation"] < untrained
    assert [log["phase"] for log in logs[:20]] == [1.0] * 20
    assert all(log["phase"] == 2.0 for log in logs[20:])
    assert "discriminator" in logs[-1] and "feature_matching" in logs[-1]
    # phase 2 froze the encoder and switched the noise gain on
    assert not any(p.requires_grad for p in trainer.model.encoder.parameters())
    # latent analysis + checkpoint
    dims = trainer.analyse_latent(batches, 0.9)
    assert 1 <= dims <= tiny.latent_size
    path = trainer.save(tmp_path / "run.ckpt")
    model = checkpoint.load_model(path)
    assert model.n_latent == dims


def test_resume_continues_identically(tiny, tmp_path):
    torch.manual_seed(0)
    data = [0.3 * torch.randn(2, 1, 2048) for _ in range(3)]
    a = Trainer(tiny)
    fit(a, data, max_steps=2)
    a.save(tmp_path / "a.ckpt")
    b = Trainer.resume(tmp_path / "a.ckpt")  # restores the global RNG as saved
    rng = torch.get_rng_state()
    la = a.step(data[2])
    torch.set_rng_state(rng)
    lb = b.step(data[2])
    assert b.state.step == a.state.step == 3
    assert abs(la["loss"] - lb["loss"]) < 1e-6
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_beta_warmup(tiny):
    assert abs(beta_at(tiny, 0) - tiny.loss.beta_start) < 1e-12
    assert beta_at(tiny, tiny.loss.beta_warmup_steps) == tiny.loss.beta
    assert beta_at(tiny, 3) < beta_at(tiny, 6) < tiny.loss.beta
