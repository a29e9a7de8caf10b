"""``acids-data inspect``: what a dataset holds, what was skipped and why, feature statistics, a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from acids_data.store import read_manifest


def _feature_arrays(root: Path, manifest: dict[str, Any], key: str) -> np.ndarray | None:
    """All frames of one feature, concatenated over shards (memory-mapped, flattened)."""
    parts = []
    for shard in manifest.get("shards", []):
        name = shard.get("arrays", {}).get(key)
        if name is None:
            return None
        arr = np.load(root / "shards" / Path(name).name, mmap_mode="r")
        parts.append(np.asarray(arr, dtype=np.float32).reshape(-1))
    return np.concatenate(parts) if parts else None


def _stats(x: np.ndarray) -> dict[str, float]:
    q = np.percentile(x, [5, 50, 95])
    return {
        "mean": round(float(x.mean()), 3),
        "std": round(float(x.std()), 3),
        "p5": round(float(q[0]), 3),
        "median": round(float(q[1]), 3),
        "p95": round(float(q[2]), 3),
    }


def summarise(root: Path, voiced_threshold: float = 0.5) -> dict[str, Any]:
    """A JSON-able summary of the dataset at ``root``."""
    m = read_manifest(root)
    files = m.get("files", [])
    skipped = [{"path": f["path"], "reason": f.get("reason")} for f in files if f.get("status") == "skipped"]
    padded = [{"path": f["path"], "reason": f.get("reason")} for f in files if f.get("status") == "padded"]
    totals = m.get("totals", {})
    chunk_s = m["chunk"] / m["sample_rate"]
    out: dict[str, Any] = {
        "path": str(Path(root).resolve()),
        "format_version": m.get("format_version"),
        "complete": m.get("complete", False),
        "sample_rate": m["sample_rate"],
        "channels": m["channels"],
        "chunk": m["chunk"],
        "chunk_seconds": round(chunk_s, 4),
        "hop": m.get("hop"),
        "chunks": totals.get("chunks", 0),
        "dataset_seconds": round(totals.get("chunks", 0) * chunk_s, 2),
        "source_seconds": round(
            sum(f.get("duration", 0.0) for f in files if f.get("status") != "skipped"), 2
        ),
        "files_ok": totals.get("files_ok", 0),
        "files_padded": len(padded),
        "files_skipped": len(skipped),
        "shards": len(m.get("shards", [])),
        "skipped": skipped,
        "padded": padded,
        "features": {},
    }
    feats = m.get("features", {}) or {}
    if "loudness" in feats:
        ld = _feature_arrays(root, m, "loudness")
        if ld is not None and ld.size:
            out["features"]["loudness_db"] = _stats(ld)
    if "f0" in feats:
        f0 = _feature_arrays(root, m, "f0")
        conf = _feature_arrays(root, m, "f0_confidence")
        if f0 is not None and conf is not None and f0.size:
            voiced = conf >= voiced_threshold
            entry: dict[str, Any] = {"voiced_fraction": round(float(voiced.mean()), 4)}
            if voiced.any():
                hz = f0[voiced]
                midi = 69 + 12 * np.log2(np.maximum(hz, 1e-3) / 440.0)
                entry["hz"] = _stats(hz)
                entry["midi"] = _stats(midi)
            out["features"]["f0"] = entry
    if "mel" in feats:
        out["features"]["mel"] = {"n_mels": feats["mel"].get("n_mels")}
    return out


def format_summary(s: dict[str, Any]) -> str:
    """The summary as text for a terminal."""
    lines = [
        f"dataset   {s['path']}" + ("" if s["complete"] else "   (INCOMPLETE: the run did not finish)"),
        f"audio     {s['sample_rate']} Hz, {s['channels']} channel(s), chunks of {s['chunk']} samples "
        f"({s['chunk_seconds']:.2f} s), hop {s['hop']}",
        f"content   {s['chunks']} chunks = {s['dataset_seconds'] / 60:.1f} min, from {s['files_ok']} files "
        f"({s['source_seconds'] / 60:.1f} min of source audio) in {s['shards']} shard(s)",
    ]
    f = s["features"]
    if "loudness_db" in f:
        ld = f["loudness_db"]
        lines.append(
            f"loudness  median {ld['median']:.1f} dB, 5-95% {ld['p5']:.1f} .. {ld['p95']:.1f} dB (A-weighted)"
        )
    if "f0" in f:
        e = f["f0"]
        text = f"f0        voiced {100 * e['voiced_fraction']:.0f}% of frames"
        if "hz" in e:
            text += (
                f", median {e['hz']['median']:.1f} Hz (MIDI {e['midi']['median']:.1f}),"
                f" 5-95% {e['hz']['p5']:.0f} .. {e['hz']['p95']:.0f} Hz"
            )
        lines.append(text)
    if "mel" in f:
        lines.append(f"mel       {f['mel']['n_mels']} bands")
    if s["padded"]:
        lines.append(f"padded    {len(s['padded'])} file(s) shorter than a chunk or with a padded tail")
    if s["skipped"]:
        lines.append(f"skipped   {len(s['skipped'])} file(s):")
        lines += [f"  {e['path']}: {e['reason']}" for e in s["skipped"]]
    else:
        lines.append("skipped   none")
    return "\n".join(lines)


def plot(root: Path, out: Path, seed: int = 0) -> Path:
    """Write a PNG: loudness and f0 histograms, and the spectrogram of a random chunk with its f0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from acids_data.reader import ShardReader

    m = read_manifest(root)
    reader = ShardReader(root)
    if len(reader) == 0:
        raise ValueError("the dataset has no chunks to plot")
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), gridspec_kw={"height_ratios": [1, 1.3]})
    ax_ld, ax_f0 = axes[0]
    ld = _feature_arrays(root, m, "loudness")
    if ld is not None and ld.size:
        ax_ld.hist(ld, bins=80, color="#3b6ea8")
        ax_ld.set(title="loudness (A-weighted, dB)", xlabel="dB", ylabel="frames")
    else:
        ax_ld.text(0.5, 0.5, "no loudness feature", ha="center", va="center")
        ax_ld.set_axis_off()
    f0 = _feature_arrays(root, m, "f0")
    conf = _feature_arrays(root, m, "f0_confidence")
    if f0 is not None and conf is not None and (conf >= 0.5).any():
        midi = 69 + 12 * np.log2(np.maximum(f0[conf >= 0.5], 1e-3) / 440.0)
        ax_f0.hist(midi, bins=np.arange(np.floor(midi.min()), np.ceil(midi.max()) + 1, 0.5), color="#a8553b")
        ax_f0.set(title="f0 of voiced frames (confidence >= 0.5)", xlabel="MIDI pitch", ylabel="frames")
    else:
        ax_f0.text(0.5, 0.5, "no voiced f0", ha="center", va="center")
        ax_f0.set_axis_off()
    gs = axes[1, 0].get_gridspec()
    for ax in axes[1]:
        ax.remove()
    ax_spec = fig.add_subplot(gs[1, :])
    i = int(np.random.default_rng(seed).integers(len(reader)))
    item = reader[i]
    x = item["audio"].mean(axis=0)
    sr = m["sample_rate"]
    n_fft = 2048 if sr > 24000 else 1024
    hop = n_fft // 4
    win = np.hanning(n_fft).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, (n_fft // 2, n_fft // 2)), n_fft)[::hop]
    spec = 20 * np.log10(np.abs(np.fft.rfft(frames * win, axis=-1)).T + 1e-6)
    # log-frequency axis: the harmonics and the f0 track stay readable from bass to treble
    times = np.arange(spec.shape[1]) * hop / sr
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    keep = freqs >= 30
    ax_spec.pcolormesh(
        times, freqs[keep], spec[keep], shading="auto", cmap="magma", vmin=spec.max() - 90, vmax=spec.max()
    )
    ax_spec.set_yscale("log")
    if "f0" in item:
        fh = m["feature_hop"]
        t = (np.arange(len(item["f0"])) + 0.5) * fh / sr
        f0_track = np.where(item["f0_confidence"] >= 0.5, item["f0"], np.nan)
        ax_spec.plot(t, f0_track, "-", lw=2.0, color="#39e1ff", label="f0 (voiced frames)")
        ax_spec.legend(loc="upper right")
    src, index, start = reader.source(i)
    ax_spec.set(
        title=f"chunk {i}: {Path(src).name} chunk {index} (from {start / sr:.2f} s)",
        xlabel="time (s)",
        ylabel="Hz (log)",
        ylim=(30, min(sr / 2, 12000)),
    )
    fig.suptitle(f"{Path(root).resolve().name}: {len(reader)} chunks at {sr} Hz")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
