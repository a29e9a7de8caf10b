"""Bundles ("cross-building"): everything a board needs, resolved on the host, in one tar.

No compilation happens: the host picks the board's wheels (pip with the board's Python version and
manylinux tag ladder), installs them into ``site/`` for that platform, and packs them with the model
artifacts, the runner, a systemd unit, the TensorRT recipe (Jetson profiles) and ``manifest.json``, which
holds the sha256 of every file. The tar is deterministic (sorted members, fixed times and owners), so
the same inputs give the same bytes, and the release id is a hash of the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from acids_core.atomic import atomic_write
from acids_core.errors import DataError, MissingDependency, MissingInput, TemporaryFailure
from acids_core.log import get_logger
from acids_core.records import make_record
from acids_deploy import __version__
from acids_deploy.profiles import Profile

log = get_logger("deploy.bundle")

BUNDLE_FORMAT = "acids-bundle"
BUNDLE_FORMAT_VERSION = 1
MTIME = 1_700_000_000  # fixed member time: same inputs, same tar bytes
PRECISIONS = ("fp32", "fp16")
#: comparison with the references when the recipe gives no tolerance (max abs error on audio in [-1, 1])
DEFAULT_TOLERANCE = {"fp16": {"atol": 2e-2, "rtol": 1e-2}, "fp32": {"atol": 1e-3, "rtol": 1e-3}}
#: the values of the trtexec line that only the board knows; the agent fills them in (board/agent.py)
TRT_PLACEHOLDERS = {"--onnx=": "{onnx}", "--saveEngine=": "{engine}", "--timingCacheFile=": "{timing_cache}"}
_SUFFIX_FORMAT = {".onnx": "onnx", ".ts": "torchscript", ".pt": "torchscript", ".torchscript": "torchscript"}


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def board_file(name: str) -> bytes:
    """The bytes of a board-side script shipped with this package (``run.py``, ``agent.py``)."""
    return (resources.files("acids_deploy") / "board" / name).read_bytes()


@dataclass
class Artifact:
    """One model file going into a bundle."""

    path: Path
    format: str
    sha256: str
    record: dict[str, Any]
    extra_files: tuple[Path, ...] = ()
    precision: str | None = None  # fp32 / fp16: the engine the board builds (tensorrt-onnx)
    reference: Path | None = None  # NAME.ref.npz: inputs/outputs per call, compared with the engine
    recipe: Path | None = None  # NAME.trt.json: acids-export's build recipe (owns the trtexec line)
    recipe_data: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name


def artifact_from_record(rec: dict[str, Any], profile: Profile) -> Artifact:
    """Check an ``artifact`` record (exists, sha256 matches, fits the profile) and wrap it."""
    path = Path(str(rec.get("path", "")))
    if not rec.get("path") or not path.is_absolute():
        raise DataError(f"artifact record without an absolute 'path': {json.dumps(rec)[:120]}")
    if not path.is_file():
        raise MissingInput(f"{path}: artifact file not found")
    rec_profile = rec.get("profile")
    if rec_profile and rec_profile != profile.name:
        raise DataError(
            f"{path}: exported for profile {rec_profile!r}, not {profile.name!r}; "
            f"export again with --profile {profile.name}"
        )
    fmt = rec.get("format") or _SUFFIX_FORMAT.get(path.suffix)
    if fmt not in profile.formats:
        raise DataError(
            f"{path}: format {fmt!r} cannot go to a {profile.name} board (takes {profile.formats})"
        )
    digest = sha256_file(path)
    if rec.get("sha256") and rec["sha256"] != digest:
        raise DataError(f"{path}: sha256 {digest[:12]}… differs from the record's {str(rec['sha256'])[:12]}…")
    # ONNX external data (`model.onnx.data`) must travel with the model
    extra = tuple(sorted(p for p in path.parent.glob(path.name + "*.data") if p.is_file()))
    extra += tuple(Path(p) for p in rec.get("external_data", []) if Path(p) not in extra)
    art = Artifact(path=path, format=fmt, sha256=digest, record=rec, extra_files=extra)
    if fmt == "tensorrt-onnx":
        _attach_companions(art)
    return art


def _companion(rec: dict[str, Any], key: str, beside: Path) -> Path | None:
    """The record's ``key`` file (it must exist), else the file ``beside`` the model if there is one."""
    named = rec.get(key)
    if named:
        p = Path(str(named))
        if not p.is_absolute():
            p = Path(str(rec["path"])).parent / p
        if not p.is_file():
            raise MissingInput(f"{p}: the artifact's {key} file is missing (export it again)")
        return p
    return beside if beside.is_file() else None


def _attach_companions(a: Artifact) -> None:
    """acids-export's ``NAME.ref.npz`` and ``NAME.trt.json`` (record fields, or beside the ONNX); the
    precision from the record, checked against the recipe's."""
    rec = a.record
    a.reference = _companion(rec, "reference", a.path.with_suffix(".ref.npz"))
    a.recipe = _companion(rec, "recipe", a.path.with_suffix(".trt.json"))
    precision = rec.get("precision")
    if a.recipe is not None:
        try:
            data = json.loads(a.recipe.read_text())
            (entry,) = data["models"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{a.recipe}: not an acids-export recipe with one model ({e})") from None
        if entry.get("sha256") and entry["sha256"] != a.sha256:
            raise DataError(f"{a.recipe}: recipe of another export (sha256 differs from {a.path.name}'s)")
        theirs = entry.get("precision")
        if precision and theirs and theirs != precision:
            raise DataError(f"{a.recipe}: builds {theirs} but the artifact record says {precision}")
        precision = precision or theirs
        a.recipe_data = data
    if precision is not None and precision not in PRECISIONS:
        raise DataError(f"{a.path}: precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    a.precision = precision


def artifact_from_file(path: Path, profile: Profile) -> Artifact:
    """Wrap a model file given on the command line (format from its suffix)."""
    path = path.resolve()
    fmt = _SUFFIX_FORMAT.get(path.suffix)
    if fmt is None:
        raise DataError(f"{path}: unknown model suffix (expected {', '.join(_SUFFIX_FORMAT)})")
    if fmt == "onnx" and profile.tensorrt is not None:
        fmt = "tensorrt-onnx"  # on a Jetson an ONNX file is also the input of the engine build
    return artifact_from_record({"path": str(path), "format": fmt}, profile)


def _pip_env(offline: bool) -> dict[str, str]:
    env = dict(os.environ)
    # host-side pip constraints pin the host's versions, not the board's
    env["PIP_CONSTRAINT"] = ""
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if offline:
        env["PIP_FIND_LINKS"] = ""
        env["PIP_EXTRA_INDEX_URL"] = ""
    return env


def _target_args(profile: Profile) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", profile.python]
    for tag in profile.platforms():
        args += ["--platform", tag]
    return args


def _run_pip(argv: list[str], env: dict[str, str], what: str) -> None:
    log.debug("running %s", " ".join(argv))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        if any(s in tail for s in ("Temporary failure", "timed out", "ConnectionError", "Max retries")):
            raise TemporaryFailure(f"{what}: the package index is unreachable: {tail}")
        raise MissingDependency(f"{what} failed: {tail}")


def download_wheels(profile: Profile, requirements: list[str], dest: Path) -> None:
    """``pip download`` the board's wheels into ``dest``: binary only, the board's CPython version and
    every rung of its manylinux ladder (needs the package index; host pip constraints are ignored)."""
    log.info("downloading wheels for %s (Python %s, %s)", profile.name, profile.python, profile.arch)
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--dest", str(dest), *_target_args(profile)]
    _run_pip([*argv, *requirements], _pip_env(offline=False), "pip download")


def resolve_dependencies(
    profile: Profile,
    requirements: list[str],
    site: Path,
    wheelhouse: Path | None,
    download: bool,
) -> list[str]:
    """Download the board's wheels (unless ``download`` is False) and install them into ``site``.

    Args:
        wheelhouse: where the board's wheels are (or are downloaded to); a cache under
            ``~/.cache/acids-deploy`` when None.
        download: run ``pip download`` first (needs the package index); False uses only ``wheelhouse``.

    Returns:
        the ``name==version`` of every distribution installed into ``site``.
    """
    if wheelhouse is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        wheelhouse = cache / "acids-deploy" / "wheels" / profile.name
    wheelhouse.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    if download:
        download_wheels(profile, requirements, wheelhouse)
    argv = [*pip, "install", "--target", str(site), "--no-index", "--find-links", str(wheelhouse)]
    argv += ["--no-compile", "--no-warn-script-location", "--quiet", *_target_args(profile), *requirements]
    _run_pip(argv, _pip_env(offline=True), f"pip install for {profile.name} from {wheelhouse}")
    installed = []
    for dist in sorted(site.glob("*.dist-info")):
        stem = dist.name[: -len(".dist-info")]
        name, _, version = stem.partition("-")
        installed.append(f"{name}=={version}")
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts point at the host's Python
    return installed


#: the unit template; the board's agent fills in its placeholders at push time (board/agent.py)
UNIT_TEMPLATE = "systemd/acids-runner.service.in"


def systemd_unit(profile: Profile, models: list[dict[str, Any]]) -> str:
    """The unit template: the runner between ALSA capture and playback, from the ``current`` release.

    Nothing board-specific is written here (one bundle goes to many boards): ``@INSTALL_DIR@``, ``@USER@``,
    ``@PYTHON@`` and ``@SERVICE@`` are filled in on each board at push time from its inventory entry
    (``install_dir``, ``user``, ``python``, ``service``), into ``INSTALL_DIR/systemd/SERVICE.service``.
    """
    rate = int(models[0].get("sample_rate") or 48000) if models else 48000
    alsa = f"-q -t raw -f FLOAT_LE -c 1 -r {rate}"
    pipeline = f"arecord {alsa} | @PYTHON@ run.py --stdin | aplay {alsa}"
    return (
        "# acids-deploy renders this template on each board at push time into\n"
        "#   @INSTALL_DIR@/systemd/@SERVICE@.service\n"
        "# install it once with\n"
        "#   sudo systemctl link @INSTALL_DIR@/systemd/@SERVICE@.service\n"
        "#   sudo systemctl enable --now @SERVICE@\n"
        "# it always runs the release that @INSTALL_DIR@/current points to.\n"
        "[Unit]\n"
        f"Description=acids model runner ({profile.name})\n"
        "After=sound.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        "User=@USER@\n"
        "WorkingDirectory=@INSTALL_DIR@/current\n"
        f"ExecStart=/bin/sh -c '{pipeline}'\n"
        "Restart=on-failure\n"
        "RestartSec=2\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def command_template(argv: list[str], model: str, precision: str) -> list[str]:
    """acids-export's trtexec line with the board-side values as placeholders (see TRT_PLACEHOLDERS).

    The line is used as it is otherwise: its flags (precision, shapes, anything else) are the exporter's.
    """
    if not argv or not any(a.startswith("--onnx=") for a in argv):
        raise DataError(f"the recipe of {model} has no trtexec command with --onnx=")
    out = ["{trtexec}"]
    for a in argv[1:]:
        if "{" in a or "}" in a:
            raise DataError(f"the recipe of {model}: unexpected brace in trtexec argument {a!r}")
        for flag, placeholder in TRT_PLACEHOLDERS.items():
            if a.startswith(flag):
                if flag == "--onnx=" and Path(a[len(flag) :]).name != model:
                    raise DataError(f"the recipe builds {a[len(flag) :]!r}, not {model!r}")
                a = flag + placeholder
                break
        out.append(a)
    if "--saveEngine={engine}" not in out:
        out.insert(2, "--saveEngine={engine}")
    if ("--fp16" in out) != (precision == "fp16"):
        raise DataError(f"the recipe of {model}: its trtexec line does not build {precision}")
    return out


def default_command(precision: str, extra_args: list[str]) -> list[str]:
    """The trtexec line for an ONNX that came without an acids-export recipe."""
    argv = ["{trtexec}", "--onnx={onnx}", "--saveEngine={engine}"]
    argv += ["--fp16"] if precision == "fp16" else []
    return [*argv, *extra_args, "--timingCacheFile={timing_cache}"]


def trt_recipe(
    profile: Profile, models: list[dict[str, Any]], commands: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """What the board runs to build its engines; the board's agent reads it (see board/agent.py).

    Args:
        models: the manifest's model entries (their ``precision`` wins over the profile's default).
        commands: model path -> trtexec line template from the artifact's acids-export recipe; it owns
            the line when present. Models without one get :func:`default_command`.
    """
    assert profile.tensorrt is not None
    trt = profile.tensorrt
    entries = []
    for m in models:
        if m["format"] not in ("onnx", "tensorrt-onnx"):
            continue
        precision = m.get("precision") or trt.precision
        template = (commands or {}).get(m["path"])
        if template is not None:
            source = "acids-export recipe " + str((m.get("recipe") or {}).get("path", ""))
            skip = {"--fp16", *(f + p for f, p in TRT_PLACEHOLDERS.items())}
            extra = [a for a in template[1:] if a not in skip]
        else:
            source = "acids-deploy"
            shapes = m.get("trt_shapes") or {}
            extra = [f"--{k}Shapes={v}" for k, v in sorted(shapes.items())]
            template = default_command(precision, extra)
        entry = {
            "path": m["path"],
            "sha256": m["sha256"],
            "precision": precision,
            "extra_args": extra,
            "command": template,
            "command_from": source.strip(),
        }
        if m.get("reference"):
            entry["reference"] = m["reference"]
        entries.append(entry)
    return {
        "format": "acids-trt-recipe",
        "format_version": 2,
        "tensorrt_expected": trt.expected,  # documentation: the board's own version is read on the board
        "trtexec": trt.trtexec,
        "cache_key": ["onnx sha256", "TensorRT version (read on the board)", "device", "precision", "flags"],
        "models": entries,
    }


def _model_entry(a: Artifact, rel: str) -> dict[str, Any]:
    io_info = a.record.get("io") or {}
    rate = a.record.get("sample_rate") or (io_info.get("sample_rate") if isinstance(io_info, dict) else None)
    entry = {"name": a.path.stem, "path": rel, "format": a.format, "sha256": a.sha256, "io": io_info}
    if rate:
        entry["sample_rate"] = int(rate)
    if isinstance(io_info, dict) and io_info.get("trt_shapes"):
        entry["trt_shapes"] = io_info["trt_shapes"]
    if a.precision:
        entry["precision"] = a.precision
    stem = rel[: -len(a.path.suffix)] if a.path.suffix else rel
    if a.reference is not None:
        tol = dict(DEFAULT_TOLERANCE[a.precision or "fp16"])
        ref_info = (a.recipe_data or {}).get("reference") or {}
        tol.update({k: float(ref_info[k]) for k in ("atol", "rtol") if k in ref_info})
        entry["reference"] = {"path": stem + ".ref.npz", "sha256": sha256_file(a.reference), **tol}
    if a.recipe is not None:
        entry["recipe"] = {"path": stem + ".trt.json", "sha256": sha256_file(a.recipe)}
    return entry


def _add_file(tf: tarfile.TarFile, name: str, data: bytes | None = None, src: Path | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    executable = src is not None and os.access(src, os.X_OK) and src.suffix in ("", ".sh", ".so")
    info.mode = 0o755 if executable else 0o644
    if src is not None:
        info.size = src.stat().st_size
        with open(src, "rb") as f:
            tf.addfile(info, f)
    else:
        assert data is not None
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def build_bundle(
    artifacts: list[Artifact],
    profile: Profile,
    out: Path,
    *,
    requirements: list[str] | None = None,
    wheelhouse: Path | None = None,
    download: bool = True,
    deps: bool = True,
) -> dict[str, Any]:
    """Write the bundle tar to ``out`` and return its ``bundle`` record.

    Args:
        artifacts: the models (at least one).
        requirements: the runner's dependencies; the profile's pins when None.
        wheelhouse: the board's wheels (see :func:`resolve_dependencies`).
        download: allow ``pip download`` (needs the index); False: only ``wheelhouse``.
        deps: False ships no dependencies (the board provides numpy and onnxruntime itself).
    """
    if not artifacts:
        raise MissingInput("no artifacts: give model files or pipe artifact records on stdin")
    names = [a.name for a in artifacts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"two artifacts share the file name {dupes[0]!r}; a bundle keeps one per name")
    files: dict[str, Path | bytes] = {}
    models = []
    commands: dict[str, list[str]] = {}
    for a in artifacts:
        rel = f"models/{a.name}"
        files[rel] = a.path
        for extra in a.extra_files:
            files[f"models/{extra.name}"] = extra
        entry = _model_entry(a, rel)
        for key, src in (("reference", a.reference), ("recipe", a.recipe)):
            if src is not None:
                files[entry[key]["path"]] = src
        if a.recipe_data is not None and profile.tensorrt is not None:
            argv = a.recipe_data.get("command")
            if argv:
                precision = entry.get("precision") or profile.tensorrt.precision
                commands[rel] = command_template(list(argv), a.name, precision)
        models.append(entry)
    reqs = list(profile.requirements if requirements is None else requirements)
    installed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="acids-bundle-") as tmp:
        site = Path(tmp) / "site"
        if deps and reqs:
            installed = resolve_dependencies(profile, reqs, site, wheelhouse, download)
            for p in sorted(site.rglob("*")):
                if p.is_symlink():
                    raise DataError(f"{p}: dependencies contain a symlink; bundles hold regular files only")
                if p.is_file() and "__pycache__" not in p.parts:
                    files["site/" + p.relative_to(site).as_posix()] = p
        files["run.py"] = board_file("run.py")
        files[UNIT_TEMPLATE] = systemd_unit(profile, models).encode()
        if profile.tensorrt is not None:
            recipe = trt_recipe(profile, models, commands)
            files["trt/recipe.json"] = (json.dumps(recipe, indent=1) + "\n").encode()
        listing = {}
        for rel, src in sorted(files.items()):
            if isinstance(src, bytes):
                listing[rel] = {"sha256": hashlib.sha256(src).hexdigest(), "size": len(src)}
            else:
                listing[rel] = {"sha256": sha256_file(src), "size": src.stat().st_size}
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "created_by": f"acids-deploy {__version__}",
            "profile": profile.name,
            "python": profile.python,
            "platform": f"linux_{profile.arch}",
            "requirements": reqs if deps else [],
            "dependencies": installed,
            "deps": "site" if installed else "board",
            # the profile's TensorRT, for people; the board reads its own version when it builds engines
            "tensorrt": {"expected": profile.tensorrt.expected} if profile.tensorrt else None,
            "models": models,
            "files": listing,
        }
        manifest_bytes = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
        release_id = hashlib.sha256(manifest_bytes).hexdigest()[:16]
        with atomic_write(out, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
            _add_file(tf, "manifest.json", data=manifest_bytes)
            for rel, src in sorted(files.items()):
                if isinstance(src, bytes):
                    _add_file(tf, rel, data=src)
                else:
                    _add_file(tf, rel, src=src)
    size = out.stat().st_size
    log.info("bundle %s: %d files, %.1f MB, release %s", out, len(listing) + 1, size / 1e6, release_id)
    return make_record(
        "bundle",
        path=str(out.resolve()),
        sha256=sha256_file(out),
        id=release_id,
        profile=profile.name,
        python=profile.python,
        platform=f"linux_{profile.arch}",
        bytes=size,
        files=len(listing) + 1,
        models=[{"name": m["name"], "format": m["format"], "sha256": m["sha256"]} for m in models],
        dependencies=installed,
        tensorrt=manifest["tensorrt"],
    )


def check_bundle_tar(path: Path) -> dict[str, Any]:
    """Check a bundle before it leaves the host; return its manifest.

    Every member must be a regular file or directory with a relative path that stays inside the release
    (no ``..``, no absolute path, no link); the manifest must list every file with its sha256.
    """
    if not path.is_file():
        raise MissingInput(f"{path}: no such bundle")
    try:
        with tarfile.open(path, "r:") as tf:
            manifest = None
            seen = set()
            for m in tf.getmembers():
                name = m.name
                parts = name.split("/")
                if name.startswith("/") or ".." in parts or "\\" in name or not name:
                    raise DataError(f"{path}: unsafe member {name!r} (outside the release); refusing it")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{path}: member {name!r} is a link or device; refusing it")
                if m.isfile():
                    seen.add(os.path.normpath(name))
                if name == "manifest.json":
                    fobj = tf.extractfile(m)
                    assert fobj is not None
                    manifest = json.load(fobj)
    except tarfile.TarError as e:
        raise DataError(f"{path}: not a bundle tar ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise DataError(f"{path}: no acids-bundle manifest.json")
    if manifest.get("format_version", 0) > BUNDLE_FORMAT_VERSION:
        raise DataError(f"{path}: bundle format {manifest['format_version']} is newer than this acids-deploy")
    missing = set(manifest.get("files", {})) - seen
    if missing:
        raise DataError(f"{path}: manifest lists files the tar lacks: {sorted(missing)[:3]}")
    return manifest


def release_id_of(path: Path) -> str:
    """The release id of a bundle: the first 16 hex digits of its manifest's sha256."""
    with tarfile.open(path, "r:") as tf:
        fobj = tf.extractfile("manifest.json")
        assert fobj is not None
        return hashlib.sha256(fobj.read()).hexdigest()[:16]
