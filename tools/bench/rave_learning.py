"""Does a short RAVE run learn to follow its input? A diagnostic for the early training of `small`.

The quality bench (rave_quality.py) scores the spectral distance, which a model that outputs the same
quiet noise for every input already brings far below its untrained value. This script trains `small`
in one process (the trainer of ``acids-rave train``, no CLI) on the quality bench's training dataset and
every ``--eval-every`` steps reconstructs held-out audio with the posterior mean and prints:

* ``loud_corr``: correlation of input and output frame log-RMS (frames of 2048 samples) on 20 s of the
  test trumpet phrase followed by 1.5 s of five test notes (files the bench holds out);
* ``spec_dist``: the training spectral distance on that audio;
* ``z_snr``: the posterior mean's standard deviation over time / the posterior standard deviation
  (below ~0.1 the reparametrised latent is mostly noise: the decoder cannot read the input through it);
* ``amp``: the mean gate sigmoid(amplitude) of the waveform branch (v1: its loudness gate; near 0: the
  branch is shut and the output is the noise branch alone); ``rms_out`` / ``rms_in``;
* at step 0 only, ``input_dependence``: how much the decoder's output differs between two 6 s stretches
  of the phrase, relative to its level (0: the output ignores the input).

The model is built from ``--preset`` (default ``small``) with its initialisation ``init.*`` (see
acids_rave.config.InitConfig); ``--set key=value`` overrides any config key, e.g. the initialisation
before it was adopted (PyTorch's default, as upstream): ``--set init.trunk_gain=0 --set
init.zero_bias=false``; for `small`, ``--set init.zero_bias=false`` alone is the trunk gain without zero
biases and ``--set init.trunk_gain=0`` the zero biases alone.
``--drop-silent RMS`` leaves out training crops whose RMS is below RMS (a quarter of the bench's
32768-sample crops are digital silence: zero-padded one-shots), refilling the batch from the next.

Usage (one thread; ~1 CPU-s per step for `small`, ~1.7 for `v2`, ~0.9 for `v1`; seeded: a rerun follows the
same path up to floating-point summation order, which can differ with buffer alignment, e.g. with another
``--eval-every``; see the README):

    .venv/bin/python tools/bench/rave_learning.py --steps 2000 --eval-every 250
    .venv/bin/python tools/bench/rave_learning.py --steps 2000 --eval-every 250 \\
        --set init.trunk_gain=0 --set init.zero_bias=false
    .venv/bin/python tools/bench/rave_learning.py --preset v2 --steps 1200 --eval-every 200
    python tools/bench/rave_learning.py --preset v2 --device cuda --batch 8 --n-signal 131072 \
        --steps 1600 --eval-every 200 --data DATASET --eval-data DIR   # on a GPU, v2's own batch

Needs the quality bench's datasets (``rave_quality.py --out bench-out/rave-quality-20min`` makes them), or
``--data`` any dataset without the held-out files, which ``--eval-data`` finds as
``phrases/48000/trumpet_phrases.flac`` and ``notes/48000/NAME.flac`` (default: the shared data).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EVAL_NOTES = ("cello_061_080", "flute_071_080", "violin_081_080", "trumpet_054_080", "alto_sax_066_080")


def eval_audio(sample_rate: int, data_dir: str = "/work/shared/data"):  # type: ignore[no-untyped-def]
    import numpy as np
    import soundfile as sf
    import soxr

    def load(path: str, seconds: float):  # type: ignore[no-untyped-def]
        x, sr = sf.read(path, dtype="float32")
        if x.ndim > 1:
            x = x.mean(1)
        return soxr.resample(x, sr, sample_rate)[: int(sample_rate * seconds)]

    parts = [load(f"{data_dir}/phrases/48000/trumpet_phrases.flac", 20)]
    parts += [load(f"{data_dir}/notes/48000/{n}.flac", 1.5) for n in EVAL_NOTES]
    return np.concatenate(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--drop-silent", type=float, default=0.0, help="leave out crops below this RMS")
    ap.add_argument("--data", type=Path, default=REPO / "bench-out" / "rave-quality-20min" / "train")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--device", default="cpu", help="cpu (1 thread) or cuda")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-signal", type=int, default=32768, help="crop length (v2's own: 131072)")
    ap.add_argument("--eval-data", default="/work/shared/data", help="where the held-out files are")
    a = ap.parse_args()

    import numpy as np
    import torch

    from acids_data.dataset import ChunkDataset
    from acids_rave.config import load_config
    from acids_rave.data import EpochBatches
    from acids_rave.losses import spectral_distance
    from acids_rave.train import Trainer

    if a.device == "cpu":
        torch.set_num_threads(1)
    cfg = load_config(a.preset, a.set)
    cfg = dataclasses.replace(
        cfg,
        sample_rate=44100,
        train=dataclasses.replace(
            cfg.train, batch=a.batch, n_signal=a.n_signal, valid_fraction=0.0, phase1_steps=10**9
        ),
    )
    ds = ChunkDataset(
        str(a.data),
        keys=["audio"],
        crop=a.n_signal,
        gain_db=(-6.0, 0.0),
        split="train",
        valid_fraction=0.0,
        seed=0,
    )
    batches = EpochBatches(ds, a.batch, seed=0).from_step(0)
    tr = Trainer(cfg, a.device)
    print(json.dumps({"preset": a.preset, "init": dataclasses.asdict(cfg.init), "set": a.set}), flush=True)

    x = eval_audio(44100, a.eval_data)
    n = len(x) // tr.model.compression_ratio * tr.model.compression_ratio
    xt = torch.from_numpy(x[:n])[None, None].to(tr.device)

    def evaluate() -> dict[str, float]:
        m = tr.model
        m.eval()
        with torch.no_grad():
            mean, std = m.posterior(xt)
            h = m.decoder.net(mean)
            if m.decoder.kind == "v2":
                gate = torch.sigmoid(m.decoder.wave(h).chunk(2, 1)[1])
            else:  # v1: the loudness gate, 2 * sigmoid(loudness) ** 2.3 (in [0, 2])
                gate = 2 * torch.sigmoid(m.decoder.loudness(h)) ** 2.3
            y = m.pqmf.inverse(m.decoder(mean))
            xr = m.pqmf.inverse(m.pqmf(xt))
            k = n // 2048
            fi = xr[0, 0, : k * 2048].reshape(k, 2048).pow(2).mean(-1).add(1e-8).log()
            fo = y[0, 0, : k * 2048].reshape(k, 2048).pow(2).mean(-1).add(1e-8).log()
            figures = {
                "step": tr.state.step,
                "loud_corr": round(float(np.corrcoef(fi.cpu().numpy(), fo.cpu().numpy())[0, 1]), 3),
                "spec_dist": round(float(spectral_distance(xr, y, cfg.loss.scales, cfg.loss.log_epsilon)), 2),
                "z_snr": round(float(mean.std(-1).mean() / std.mean()), 4),
                "amp": round(float(gate.mean()), 4),
                "rms_out": round(float(y.pow(2).mean().sqrt()), 4),
                "rms_in": round(float(xr.pow(2).mean().sqrt()), 4),
            }
        m.train()
        return figures

    def input_dependence() -> float:
        """RMS of the difference of the decoder's outputs (bands) for two 6 s stretches of the phrase,
        relative to the RMS of the first: 0 means the output ignores its input."""
        m, half = tr.model, 6 * 44100 // tr.model.compression_ratio * tr.model.compression_ratio
        m.eval()
        with torch.no_grad():
            ya = m.decoder(m.posterior(xt[..., :half])[0])
            yb = m.decoder(m.posterior(xt[..., half : 2 * half])[0])
        m.train()
        return float((ya - yb).pow(2).mean().sqrt() / ya.pow(2).mean().sqrt())

    log = [{**evaluate(), "input_dependence": round(input_dependence(), 6)}]
    print(json.dumps(log[-1]), flush=True)
    t0, w0 = time.process_time(), time.perf_counter()
    for s in range(a.steps):
        xb = next(batches)
        if a.drop_silent:
            keep = xb.pow(2).mean((1, 2)).sqrt() > a.drop_silent
            while keep.sum() < a.batch:
                xn = next(batches)
                kn = xn.pow(2).mean((1, 2)).sqrt() > a.drop_silent
                xb = torch.cat([xb[keep], xn[kn]])
                keep = torch.ones(xb.shape[0], dtype=torch.bool)
            xb = xb[keep][: a.batch]
        out = tr.step(xb)
        if (s + 1) % a.eval_every == 0:
            log.append(
                {
                    **evaluate(),
                    "train_loss": round(out["loss"], 2),
                    "cpu_s": round(time.process_time() - t0),
                    "wall_s": round(time.perf_counter() - w0, 1),
                }
            )
            print(json.dumps(log[-1]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()
