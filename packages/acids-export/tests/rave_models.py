"""Real acids-rave checkpoints for tests (call after ``pytest.importorskip("acids_rave")``)."""

from __future__ import annotations

from pathlib import Path

import torch


def rave_prior_checkpoint(tmp_path: Path) -> Path:
    """An untrained RAVE `tiny` checkpoint and a `tiny` latent prior bound to it: the prior's path."""
    from acids_rave import checkpoint
    from acids_rave.config import PRESETS, PRIOR_PRESETS
    from acids_rave.model import Rave
    from acids_rave.prior import LatentPrior, model_fingerprint

    torch.manual_seed(0)
    model = Rave(PRESETS["tiny"]()).eval()
    rave = checkpoint.save(tmp_path / "rave.ckpt", model)
    prior = LatentPrior(PRIOR_PRESETS["tiny"](), model.n_latent).eval()
    info = {"path": str(rave.resolve()), "sha256": model_fingerprint(model)}
    return checkpoint.save_prior(tmp_path / "prior.ckpt", prior, step=1, model=info)
