"""Join datasets (the parts written by ``--shard i/N`` runs, or any compatible datasets) into one.

Shard files are immutable, so they are hard-linked into ``OUT/shards`` (copied where a link fails, e.g.
across filesystems, or with ``link=False``); each shard gets a fresh .json marker, renamed when its name
is already taken. The manifest is written last: a killed merge leaves no manifest, and re-running it into
the same directory starts over.

Overlaps: the same part given twice is refused. A source present in several parts (the same content at
two paths that the partition sent to different parts) is kept once, from the first part that has it, as a
single run would: its chunks are filtered out of the later parts' shards (those shards are rewritten
rather than linked) and its later entries are recorded as skipped duplicates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acids_core.atomic import atomic_write_json, clean_temporaries, commit_file, temporary_path
from acids_core.errors import UsageError
from acids_data.store import (
    MANIFEST,
    SHARDS,
    build_manifest,
    dataset_root,
    read_manifest,
    read_shard_index,
    settings_differences,
    settings_of,
    write_shard,
)

log = logging.getLogger(__name__)
_NAME_RE = re.compile(r"^part-(\d{3,})-(\d{5,})$")
_OURS_RE = re.compile(r"^part-\d{3,}-\d{5,}\.")


def merge(
    parts: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    link: bool = True,
    force: bool = False,
    created_by: str | None = None,
) -> dict[str, Any]:
    """Merge ``parts`` into a new dataset at ``out``; returns its manifest.

    Args:
        parts: dataset directories (or manifests, or dataset records).
        out: the merged dataset's directory: new, or without a manifest.json.
        link: hard-link shard files (fall back to copying); False always copies.
        force: merge parts whose run did not finish (``"complete": false``); the result is incomplete too.
        created_by: stored in the manifest; default: the first part's.

    Raises:
        UsageError: no parts, a part given twice, ``out`` already a dataset, an incomplete part without
            ``force``, or parts made with different settings.
    """
    roots = [dataset_root(p) for p in parts]
    if not roots:
        raise UsageError("merge needs at least one dataset")
    real = [os.path.realpath(r) for r in roots]
    for i, r in enumerate(real):
        if r in real[:i]:
            raise UsageError(f"{roots[i]} is given twice; each part once")
    out = Path(out)
    if os.path.realpath(out) in real:
        raise UsageError(f"{out} is one of the parts; merge into a new directory")
    if (out / MANIFEST).exists():
        raise UsageError(f"{out} already holds a dataset; merge into a new directory")
    manifests = [read_manifest(r) for r in roots]
    incomplete = [str(r) for r, m in zip(roots, manifests, strict=True) if not m.get("complete")]
    if incomplete and not force:
        raise UsageError(
            f"{', '.join(incomplete)}: the run did not finish (complete: false); "
            "re-run the same command there to finish it, or merge with force"
        )
    ref = settings_of(manifests[0])
    for r, m in zip(roots[1:], manifests[1:], strict=True):
        diffs = settings_differences(settings_of(m), ref, other=f"{roots[0]}:")
        if diffs:
            raise UsageError(
                f"{r} was made with {'; '.join(diffs)}; merge only parts made with the same settings"
            )

    shards_out = out / SHARDS
    shards_out.mkdir(parents=True, exist_ok=True)
    clean_temporaries(shards_out)
    for p in shards_out.iterdir():  # left by a killed merge (no manifest.json): start over
        if p.is_file() and _OURS_RE.match(p.name):
            p.unlink()

    used: set[str] = set()
    next_k: dict[int, int] = {}
    shards: list[dict[str, Any]] = []
    owner: dict[str, int] = {}  # sha -> the part whose chunks of it are kept
    files: dict[tuple[str | None, str], dict[str, Any]] = {}
    first_path: dict[str, str] = {}
    stats = {"linked": 0, "copied": 0, "rewritten": 0}
    for pi, (root, m) in enumerate(zip(roots, manifests, strict=True)):
        mine: set[str] = set()
        for s in m["shards"]:
            idx = read_shard_index(root / SHARDS / f"{s['name']}.json")
            mine.update(idx["files"])
            keep = np.array([owner.get(sha, pi) == pi for sha in idx["files"]], bool)
            rows = keep[np.asarray(idx["chunks"], np.int64).reshape(-1, 3)[:, 0]]
            if not rows.any():
                continue
            name = _free_name(s["name"], used, next_k)
            if rows.all():
                arrays = {}
                for key, fname in idx["arrays"].items():
                    arrays[key] = f"{name}.{key}.npy"
                    stats[_link_or_copy(root / SHARDS / fname, shards_out / arrays[key], link)] += 1
                index = {**idx, "name": name, "arrays": arrays}
                atomic_write_json(shards_out / f"{name}.json", index, indent=None)
            else:
                index = _rewrite(root / SHARDS, idx, rows, shards_out, name)
                stats["rewritten"] += 1
            shards.append({"name": name, "n": index["n"], "arrays": index["arrays"]})
        for sha in mine:
            owner.setdefault(sha, pi)
        for e in m["files"]:
            sha = e.get("sha256")
            key = (sha, e["path"])
            if sha and e.get("chunks") and owner.get(sha) != pi:
                e = {**e, "status": "skipped", "chunks": 0, "reason": f"duplicate of {first_path.get(sha)}"}
            if sha and e.get("chunks") and sha not in first_path:
                first_path[sha] = e["path"]
            files.setdefault(key, e)
    n_dups = sum(1 for e in files.values() if str(e.get("reason", "")).startswith("duplicate of"))
    log.info("merged %d parts: %s; %d duplicate sources", len(roots), stats, n_dups)
    m0 = manifests[0]
    extra = {
        "parts": [
            {
                "path": str(Path(r).absolute()),
                "created_by": m.get("created_by"),
                "complete": bool(m.get("complete")),
                "shards": len(m["shards"]),
                "chunks": m.get("totals", {}).get("chunks"),
                **({"parts": m["parts"]} if m.get("parts") else {}),
            }
            for r, m in zip(roots, manifests, strict=True)
        ]
    }
    settings = {**ref, "feature_keys": m0["feature_keys"], "chunk_keys": m0.get("chunk_keys", [])}
    manifest = build_manifest(
        settings,
        created_by=created_by or m0.get("created_by") or "acids-data",
        shards=shards,
        files=list(files.values()),
        complete=not incomplete,
        extra=extra,
    )
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _free_name(name: str, used: set[str], next_k: dict[int, int]) -> str:
    """``name`` itself, or the next free ``part-PPP-KKKKK`` name of the same part number."""
    m = _NAME_RE.match(name)
    if m is None or name in used:
        part = int(m.group(1)) if m else 0
        k = next_k.get(part, 0)
        while f"part-{part:03d}-{k:05d}" in used:
            k += 1
        next_k[part] = k + 1
        name = f"part-{part:03d}-{k:05d}"
    used.add(name)
    return name


def _link_or_copy(src: Path, dst: Path, link: bool) -> str:
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    if link:
        try:
            os.link(src, dst)
            return "linked"
        except OSError:  # another filesystem, or links not allowed: copy
            pass
    tmp = temporary_path(dst)
    try:
        shutil.copyfile(src, tmp)
        commit_file(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return "copied"


def _rewrite(src_dir: Path, idx: dict[str, Any], rows: np.ndarray, out_dir: Path, name: str) -> dict:
    """Write the kept ``rows`` of a shard as a new shard ``name``."""
    chunks = np.asarray(idx["chunks"], np.int64).reshape(-1, 3)[rows]
    used = sorted(set(chunks[:, 0].tolist()))
    remap = {old: new for new, old in enumerate(used)}
    arrays = {}
    for key, fname in idx["arrays"].items():
        a = np.load(src_dir / fname, mmap_mode="r")
        arrays[key] = ([np.asarray(a[rows])], a.dtype, tuple(a.shape[1:]))
        del a
    files = [idx["files"][i] for i in used]
    paths = [(idx.get("paths") or idx["files"])[i] for i in used]
    new_chunks = [(remap[int(li)], int(ci), int(st)) for li, ci, st in chunks]
    return write_shard(out_dir, name, arrays, files, paths, new_chunks)
