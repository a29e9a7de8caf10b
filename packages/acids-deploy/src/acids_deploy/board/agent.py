# ruff: noqa: UP031, T201
"""acids-deploy board agent: the only code acids-deploy runs on a board besides the bundle's runner.

Written for the oldest board Python (3.6 on JetPack 4): standard library only; no f-strings, no
dataclasses, no ``subprocess.run(capture_output=...)``, no walrus. Every command prints one JSON object on
stdout and exits 0; failures exit with a code below and {"error": ...}.

Layout under ROOT (the board's install_dir)::

    .acids/agent-<sha>.py   this file, content-addressed
    .acids/history          release ids, one per line, the last one is current
    incoming/<tar sha>.tar.part     upload in progress (resumable)
    releases/<id>/          unpacked, verified releases
    current -> releases/<id>
    engine-cache/<key>.plan TensorRT engines, keyed by (onnx sha256, the TensorRT version read on the
                            board, device, precision, build flags)
    logs/deploy.log         JSON lines, one per event
    systemd/<service>.service   the current release's unit, rendered for this board (``unit``)
"""

import hashlib
import json
import os
import platform
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import time

EXIT_ERROR = 5
EXIT_CHECKSUM = 3
EXIT_UNSAFE = 4
EXIT_NO_RELEASE = 6  # rollback: nothing to roll back to, or no such release
CHUNK = 1 << 20


class AgentError(Exception):
    def __init__(self, message, code=EXIT_ERROR):
        Exception.__init__(self, message)
        self.code = code


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def log_event(root, event, **fields):
    fields["event"] = event
    fields["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    try:
        os.makedirs(os.path.join(root, "logs"), exist_ok=True)
        with open(os.path.join(root, "logs", "deploy.log"), "a") as f:
            f.write(json.dumps(fields, sort_keys=True) + "\n")
    except OSError:
        pass


def check_id(release_id):
    """A release id is a plain name: no slash, no dot-dot, nothing a shell or a path could misread."""
    ok = release_id and all(c.isalnum() or c in "-_." for c in release_id)
    if not ok or release_id.startswith("."):
        raise AgentError("invalid release id %r" % (release_id,))
    return release_id


def releases_dir(root):
    return os.path.join(root, "releases")


def current_release(root):
    link = os.path.join(root, "current")
    if not os.path.islink(link):
        return None
    return os.path.basename(os.readlink(link).rstrip("/"))


def read_history(root):
    path = os.path.join(root, ".acids", "history")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def write_history(root, ids):
    path = os.path.join(root, ".acids", "history")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(i + "\n" for i in ids[-50:]))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def list_releases(root):
    d = releases_dir(root)
    if not os.path.isdir(d):
        return []
    names = [n for n in os.listdir(d) if not n.startswith(".") and os.path.isdir(os.path.join(d, n))]
    return sorted(names, key=lambda n: os.path.getmtime(os.path.join(d, n)))


def verify_release(path):
    """Check every file of the release against its manifest; return a problem string or None."""
    manifest_path = os.path.join(path, "manifest.json")
    if not os.path.isfile(manifest_path):
        return "no manifest.json"
    with open(manifest_path) as f:
        manifest = json.load(f)
    files = manifest.get("files", {})
    for rel, info in sorted(files.items()):
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            return "missing file %s" % rel
        if os.path.getsize(full) != info["size"] or sha256_file(full) != info["sha256"]:
            return "checksum mismatch: %s" % rel
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            if name.endswith(".plan") and os.path.islink(os.path.join(dirpath, name)):
                continue  # the link to a TensorRT engine built on this board
            rel = os.path.relpath(os.path.join(dirpath, name), path).replace(os.sep, "/")
            if rel != "manifest.json" and rel not in files and not rel.startswith("__pycache__"):
                if "/__pycache__/" not in "/" + rel and not rel.startswith("state/"):
                    return "unexpected file %s" % rel
    return None


def safe_member_name(name):
    """The member's normalised relative path, or AgentError when it could land outside the release."""
    if not name or "\\" in name or "\x00" in name:
        raise AgentError("unsafe archive member %r" % (name,), EXIT_UNSAFE)
    if name.startswith("/"):
        raise AgentError("unsafe archive member %r: absolute path" % (name,), EXIT_UNSAFE)
    norm = posixpath.normpath(name)
    parts = norm.split("/")
    if norm in (".", "") or ".." in parts or ".." in name.split("/"):
        raise AgentError("unsafe archive member %r: goes outside the release" % (name,), EXIT_UNSAFE)
    return norm


def safe_extract(tar_path, dest):
    """Unpack regular files and directories only, each checked to stay inside ``dest``."""
    real_dest = os.path.realpath(dest)
    count = 0
    with tarfile.open(tar_path, "r:") as tf:
        members = tf.getmembers()
        for m in members:  # check everything before writing anything
            safe_member_name(m.name)
            if not (m.isfile() or m.isdir()):
                raise AgentError("unsafe archive member %r: links and devices are refused" % (m.name,), 4)
        for m in members:
            rel = safe_member_name(m.name)
            target = os.path.join(real_dest, rel)
            parent = os.path.realpath(os.path.dirname(target))
            if parent != real_dest and not parent.startswith(real_dest + os.sep):
                raise AgentError("unsafe archive member %r: resolves outside" % (m.name,), EXIT_UNSAFE)
            if m.isdir():
                if not os.path.isdir(target):
                    os.makedirs(target, 0o755)
                continue
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            mode = 0o755 if m.mode & 0o111 else 0o644
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as out:
                src = tf.extractfile(m)
                shutil.copyfileobj(src, out, CHUNK)
            count += 1
    return count


def rmtree_quiet(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)


def cmd_probe(root, tar_sha, release_id):
    release_id = check_id(release_id)
    part = os.path.join(root, "incoming", tar_sha + ".tar.part")
    rel = os.path.join(releases_dir(root), release_id)
    out = {
        "current": current_release(root),
        "releases": list_releases(root),
        "history": read_history(root)[-5:],
        "part_size": os.path.getsize(part) if os.path.isfile(part) else 0,
        "release_exists": os.path.isdir(rel),
        "release_problem": None,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if out["release_exists"]:
        out["release_problem"] = verify_release(rel)
    return out


def cmd_status(root):
    out = {
        "current": current_release(root),
        "releases": list_releases(root),
        "history": read_history(root)[-10:],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    cur = out["current"]
    if cur:
        out["current_problem"] = verify_release(os.path.join(releases_dir(root), cur))
    return out


def cmd_install(root, tar_sha, release_id):
    """Check the uploaded tar's sha256, unpack it into releases/<id> (verified), drop the tar."""
    release_id = check_id(release_id)
    incoming = os.path.join(root, "incoming")
    part = os.path.join(incoming, tar_sha + ".tar.part")
    if not os.path.isfile(part):
        raise AgentError("no upload at %s" % part)
    got = sha256_file(part)
    if got != tar_sha:
        os.remove(part)  # a corrupt upload is never resumed
        log_event(root, "checksum-mismatch", expected=tar_sha, got=got)
        raise AgentError(
            "checksum mismatch of the upload: expected %s, got %s" % (tar_sha, got), EXIT_CHECKSUM
        )
    rdir = releases_dir(root)
    os.makedirs(rdir, exist_ok=True)
    final = os.path.join(rdir, release_id)
    tmp = os.path.join(rdir, "." + release_id + ".tmp")
    rmtree_quiet(tmp)
    os.makedirs(tmp)
    try:
        count = safe_extract(part, tmp)
        problem = verify_release(tmp)
        if problem:
            raise AgentError("release %s does not match its manifest: %s" % (release_id, problem), 3)
    except AgentError as e:
        rmtree_quiet(tmp)
        os.remove(part)
        log_event(root, "install-refused", release=release_id, reason=str(e))
        raise
    if os.path.isdir(final):  # a damaged copy of the same release: replace it
        trash = os.path.join(rdir, "." + release_id + ".old")
        rmtree_quiet(trash)
        os.rename(final, trash)
        rmtree_quiet(trash)
    os.rename(tmp, final)
    os.remove(part)
    log_event(root, "installed", release=release_id, files=count)
    return {"installed": release_id, "files": count}


def switch_to(root, release_id):
    release_id = check_id(release_id)
    if not os.path.isdir(os.path.join(releases_dir(root), release_id)):
        raise AgentError("no release %s on this board" % release_id, EXIT_NO_RELEASE)
    previous = current_release(root)
    tmp_link = os.path.join(root, ".current.tmp")
    if os.path.lexists(tmp_link):
        os.remove(tmp_link)
    os.symlink(os.path.join("releases", release_id), tmp_link)
    os.rename(tmp_link, os.path.join(root, "current"))  # atomic replacement of the old link
    history = [h for h in read_history(root)]
    if not history or history[-1] != release_id:
        history.append(release_id)
    write_history(root, history)
    return previous


def cmd_switch(root, release_id):
    previous = switch_to(root, release_id)
    log_event(root, "switch", release=release_id, previous=previous)
    return {"current": release_id, "previous": previous}


def read_failed(root):
    path = os.path.join(root, ".acids", "failed")
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return set(line.strip() for line in f if line.strip())


def cmd_rollback(root, target=None, failed=None):
    """Switch to ``target`` (default: the newest earlier release that did not fail its smoke test).

    ``failed`` names the release being abandoned after a failed smoke test; later automatic rollbacks
    skip it.
    """
    current = current_release(root)
    if failed:
        with open(os.path.join(root, ".acids", "failed"), "a") as f:
            f.write(check_id(failed) + "\n")
    if target:
        target = check_id(target)
    else:
        existing = set(list_releases(root))
        bad = read_failed(root)
        for rid in reversed(read_history(root)):
            if rid != current and rid in existing and rid not in bad:
                target = rid
                break
    if not target:
        raise AgentError(
            "nothing to roll back to: no earlier release on this board (current: %s)" % (current or "none"),
            EXIT_NO_RELEASE,
        )
    switch_to(root, target)
    log_event(root, "rollback", release=target, previous=current)
    return {"current": target, "previous": current}


def cmd_prune(root, keep):
    keep = max(1, int(keep))
    current = current_release(root)
    history = read_history(root)
    protected = set([current, *history[-2:]])
    removed = []
    names = list_releases(root)
    for name in names[: max(0, len(names) - keep)]:
        if name not in protected:
            rmtree_quiet(os.path.join(releases_dir(root), name))
            removed.append(name)
    if removed:
        log_event(root, "prune", removed=removed)
    return {"removed": removed}


def _trt_version_from_number(n):
    """NV_TENSORRT_VERSION as trtexec prints it: 8201 -> 8.2.1 (TensorRT 8), 100300 -> 10.3.0 (10+)."""
    n = int(n)
    if n >= 10000:
        return "%d.%d.%d" % (n // 10000, (n // 100) % 100, n % 100)
    return "%d.%d.%d" % (n // 1000, (n // 100) % 10, n % 100)


def _output(argv, timeout=60):
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError:
        return None
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return out.decode("utf-8", "replace")


def tensorrt_version(trtexec=None):
    """The board's TensorRT version and where it was read: trtexec, dpkg, or the Python package.

    trtexec prints ``[TensorRT v8201]`` on its first line whatever the arguments (older ones refuse
    ``--version`` but still print it). Returns (version, source), or (None, reasons).
    """
    tried = []
    if trtexec:
        out = _output([trtexec, "--version"])
        if out is not None:
            m = re.search(r"TensorRT[. ]v(\d{4,6})\b", out) or re.search(
                r"TensorRT version:?\s*(\d+\.\d+(?:\.\d+)*)", out
            )
            if m:
                v = m.group(1)
                return (v if "." in v else _trt_version_from_number(v)), "trtexec"
        tried.append("trtexec printed no version")
    for pkg in ("libnvinfer-bin", "tensorrt", "libnvinfer10", "libnvinfer8"):
        out = _output(["dpkg-query", "-W", "-f=${Version}", pkg], timeout=30)
        m = re.match(r"(\d+\.\d+(?:\.\d+)*)", out or "")
        if m and "no packages found" not in (out or ""):
            return m.group(1), "dpkg " + pkg
    tried.append("no dpkg package")
    out = _output([sys.executable, "-c", "import tensorrt; print(tensorrt.__version__)"])
    m = re.search(r"^(\d+\.\d+(?:\.\d+)*)\s*$", out or "", re.M)
    if m:
        return m.group(1), "python tensorrt"
    tried.append("python cannot import tensorrt")
    return None, "; ".join(tried)


def device_name():
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            with open(path, "rb") as f:
                return f.read().decode("ascii", "replace").strip("\x00 \n")
        except OSError:
            pass
    return platform.machine()


def slug(text):
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)[:48]


def fill_command(template, values):
    """The recipe's trtexec line with the board's values put in for {trtexec} {onnx} {engine}
    {timing_cache}; every other argument is used as it is."""
    argv = []
    for arg in template:
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", value)
        argv.append(arg)
    return argv


def cmd_engine(root, release_id, trtexec):
    """Build (or reuse) the TensorRT engine of every model the release's recipe lists.

    The trtexec line is the recipe's (acids-export's, or acids-deploy's for a bare ONNX). The cache key
    is (onnx sha256, the TensorRT version read on this board, device, precision, build flags); with no
    readable version nothing is reused.
    """
    release = os.path.join(releases_dir(root), check_id(release_id))
    recipe_path = os.path.join(release, "trt", "recipe.json")
    if not os.path.isfile(recipe_path):
        return {"engines": [], "skipped": "no recipe in this bundle"}
    with open(recipe_path) as f:
        recipe = json.load(f)
    exe = trtexec if os.path.isfile(trtexec) else shutil.which("trtexec")
    if not exe:
        return {"engines": [], "skipped": "no trtexec on this board (%s)" % trtexec}
    version, source = tensorrt_version(exe)
    device = slug(device_name())
    cache = os.path.join(root, "engine-cache")
    os.makedirs(cache, exist_ok=True)
    tag = slug(version) if version else "unknown"
    engines = []
    for model in recipe.get("models", []):
        template = model.get("command")
        if not template:
            raise AgentError("%s: the recipe has no trtexec command (bundle it again)" % model["path"])
        precision = model.get("precision", "fp16")
        flags = hashlib.sha256(json.dumps(template).encode()).hexdigest()[:8]
        key = "%s-trt%s-%s-%s-%s" % (model["sha256"][:16], tag, device, precision, flags)
        plan = os.path.join(cache, key + ".plan")
        built = False
        if version is None or not os.path.isfile(plan):
            tmp = plan + ".tmp"
            argv = fill_command(
                template,
                {
                    "trtexec": exe,
                    "onnx": os.path.join(release, model["path"]),
                    "engine": tmp,
                    "timing_cache": os.path.join(cache, "timing-trt%s-%s.cache" % (tag, device)),
                },
            )
            t0 = time.time()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            log_out = proc.communicate()[0].decode("utf-8", "replace")
            if proc.returncode != 0 or not os.path.isfile(tmp):
                log_event(root, "engine-failed", release=release_id, model=model["path"], tensorrt=version)
                raise AgentError(
                    "trtexec (TensorRT %s) failed for %s: %s" % (tag, model["path"], log_out[-600:])
                )
            os.rename(tmp, plan)
            built = round(time.time() - t0, 3)
        link = os.path.join(release, model["path"] + ".plan")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(plan, link)
        engines.append(
            {
                "model": model["path"],
                "key": key,
                "built": bool(built),
                "build_s": built or None,
                "precision": precision,
                "command_from": model.get("command_from", "?"),
            }
        )
    log_event(
        root, "engines", release=release_id, engines=engines, tensorrt=version, tensorrt_source=source,
        device=device,
    )  # fmt: skip
    return {"engines": engines, "tensorrt": version, "tensorrt_source": source, "device": device}


UNIT_TEMPLATE = "systemd/acids-runner.service.in"
#: what may go into a unit line unquoted: no spaces, quotes, ``%`` (systemd specifiers), ``$`` or newlines
UNIT_SAFE = re.compile(r"^[A-Za-z0-9_./+@:-]+$")


def render_unit(template, install_dir, user, python, service):
    """The unit template with this board's values; AgentError (EXIT_UNSAFE) when one cannot go into a
    unit file as it is."""
    values = {"INSTALL_DIR": install_dir, "USER": user, "PYTHON": python, "SERVICE": service}
    for name, value in sorted(values.items()):
        if not UNIT_SAFE.match(value or "") or value.startswith("-"):
            raise AgentError(
                "%s %r cannot go into a systemd unit (letters, digits and _./+@:- only)"
                % (name.lower(), value),
                EXIT_UNSAFE,
            )
    if not install_dir.startswith("/"):
        raise AgentError("install_dir %r is not absolute" % install_dir, EXIT_UNSAFE)
    text = template
    for name, value in values.items():
        text = text.replace("@" + name + "@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise AgentError("the unit template has unknown placeholders: %s" % ", ".join(sorted(set(left))))
    return text


def cmd_unit(root, user, python, service):
    """Render the current release's unit template for this board into ROOT/systemd/SERVICE.service.

    The values come from the board's inventory entry (install dir = ROOT, the SSH user, the board's
    python, the service name); the file is replaced atomically and only when its text changes.
    """
    current = current_release(root)
    if not current:
        return {"skipped": "no current release"}
    template_path = os.path.join(releases_dir(root), current, UNIT_TEMPLATE)
    if not os.path.isfile(template_path):
        return {"skipped": "release %s has no unit template (%s)" % (current, UNIT_TEMPLATE)}
    with open(template_path) as f:
        template = f.read()
    try:
        text = render_unit(template, root, user, python, service)
    except AgentError as e:
        log_event(root, "unit-skipped", release=current, reason=str(e))
        return {"skipped": str(e)}
    unit_dir = os.path.join(root, "systemd")
    os.makedirs(unit_dir, exist_ok=True)
    path = os.path.join(unit_dir, service + ".service")
    old = None
    if os.path.isfile(path):
        with open(path) as f:
            old = f.read()
    changed = old != text
    if changed:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        log_event(root, "unit", release=current, path=path)
    return {"unit": path, "changed": changed, "release": current}


def cmd_logs(root, lines):
    path = os.path.join(root, "logs", "deploy.log")
    if not os.path.isfile(path):
        return {"lines": []}
    with open(path) as f:
        return {"lines": [line.rstrip("\n") for line in f][-int(lines) :]}


COMMANDS = {
    "probe": cmd_probe,
    "status": cmd_status,
    "install": cmd_install,
    "switch": cmd_switch,
    "rollback": cmd_rollback,
    "prune": cmd_prune,
    "engine": cmd_engine,
    "logs": cmd_logs,
    "unit": cmd_unit,
}


def main(argv):
    if len(argv) < 2 or argv[0] not in COMMANDS:
        print(json.dumps({"error": "usage: agent.py {%s} ROOT [ARGS]" % ",".join(sorted(COMMANDS))}))
        return EXIT_ERROR
    root = argv[1]
    if not os.path.isabs(root):
        print(json.dumps({"error": "ROOT must be absolute"}))
        return EXIT_ERROR
    os.makedirs(os.path.join(root, ".acids"), exist_ok=True)
    os.makedirs(os.path.join(root, "incoming"), exist_ok=True)
    try:
        result = COMMANDS[argv[0]](root, *argv[2:])
    except AgentError as e:
        print(json.dumps({"error": str(e)}))
        return e.code
    except (OSError, ValueError, KeyError, tarfile.TarError) as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        return EXIT_ERROR
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
