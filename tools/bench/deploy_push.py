"""acids-deploy push benchmark (issue 6), against OpenSSH in the same run, on loopback sshd "boards".

Measures, interleaved, median of --repeat:
  1. upload throughput of a --size-mb bundle: acids-deploy's resumable SFTP upload vs `scp` to the same sshd
     (target: ours >= 0.8x scp);
  2. a re-push of an unchanged bundle, as the real console script (process start included; target < 2 s);
  3. a full push (upload, verify, unpack, switch, smoke test) to 4 boards with --parallel 4 vs --parallel 1
     (target: parallel <= 0.5x sequential).

Needs OpenSSH (sshd, scp, ssh-keygen) and the dev venv with acids-deploy, onnx and onnxruntime. Every sshd
listens on 127.0.0.1 only. Results: bench-out/deploy/<time>/results.{md,json}.

    .venv/bin/python tools/bench/deploy_push.py                  # ~2-4 min on 2 shared cores
    .venv/bin/python tools/bench/deploy_push.py --size-mb 10 --repeat 1   # quick check
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Board:
    """One sshd on 127.0.0.1 with its own host key and board directory."""

    def __init__(self, root: Path, name: str, client_pub: Path) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.host_key = keygen(self.dir / "host_ed25519")
        auth = self.dir / "authorized_keys"
        shutil.copy(client_pub, auth)
        self.port = free_port()
        self.install = self.dir / "opt-acids"
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {self.dir}/pid\n"
            f"AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)

    def known_hosts_line(self) -> str:
        kind, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {key}\n"

    def reset(self) -> None:
        shutil.rmtree(self.install, ignore_errors=True)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def make_bundle(work: Path, size_mb: int) -> dict:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from acids_deploy.bundle import artifact_from_file, build_bundle
    from acids_deploy.profiles import get_profile

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "T"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "T"])
    w = numpy_helper.from_array(np.full((1, 1, 1), 0.5, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "gain", [x], [y], initializer=[w]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(work / "gain.onnx"))
    # the weights of a bigger model: incompressible bytes, shipped as a second (TorchScript) artifact
    (work / "weights.ts").write_bytes(np.random.default_rng(0).bytes(size_mb * 1_000_000))
    p = get_profile("desktop")
    arts = [artifact_from_file(work / "gain.onnx", p), artifact_from_file(work / "weights.ts", p)]
    return build_bundle(arts, p, work / "bundle.tar", deps=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "bench-out" / "deploy" / time.strftime("%Y%m%d-%H%M%S")
    )
    args = ap.parse_args()
    if not os.path.exists(SSHD):
        print(f"no sshd at {SSHD}: apt-get install openssh-server", file=sys.stderr)
        return 69
    from acids_deploy.inventory import load_inventory
    from acids_deploy.ssh import BoardConnection

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="acids-deploy-bench-"))
    key = keygen(work / "client_ed25519")
    boards = [Board(work, f"b{i}", key.with_suffix(".pub")) for i in range(4)]
    kh = work / "known_hosts"
    kh.write_text("".join(b.known_hosts_line() for b in boards))
    inv = work / "boards.toml"
    lines = [
        "[defaults]",
        f'user = "{getpass.getuser()}"',
        f'identity_file = "{key}"',
        f'known_hosts = "{kh}"',
        f'python = "{sys.executable}"',
        'groups = ["all4"]',
        "",
    ]
    for b in boards:
        lines += [f"[boards.{b.name}]", 'host = "127.0.0.1"', f"port = {b.port}", 'profile = "desktop"']
        lines += [f'install_dir = "{b.install}"', ""]
    inv.write_text("\n".join(lines))
    cli = [str(Path(sys.executable).with_name("acids-deploy"))]
    env = {**os.environ, "ACIDS_DEPLOY_INVENTORY": str(inv)}
    results: dict = {"size_mb": args.size_mb, "repeat": args.repeat, "load_before": os.getloadavg()}
    try:
        bundle = make_bundle(work, args.size_mb)
        tar = Path(bundle["path"])
        size = tar.stat().st_size
        b0 = boards[0]
        board0 = load_inventory(inv).boards["b0"]
        scp = [
            "scp", "-q", "-P", str(b0.port), "-i", str(key), "-o", f"UserKnownHostsFile={kh}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        ]  # fmt: skip
        (b0.dir / "scp").mkdir()
        scp_s, ours_s = [], []
        for _ in range(args.repeat):  # interleaved: scp, ours, scp, ours, ...
            dest = b0.dir / "scp" / "x.tar"
            dest.unlink(missing_ok=True)
            t0 = time.perf_counter()
            subprocess.run([*scp, str(tar), f"{getpass.getuser()}@127.0.0.1:{dest}"], check=True)
            scp_s.append(time.perf_counter() - t0)
            part = b0.dir / "up.part"
            part.unlink(missing_ok=True)
            t0 = time.perf_counter()
            with BoardConnection(board0) as conn:
                conn.upload_resumable(tar, str(part))
            ours_s.append(time.perf_counter() - t0)
            assert part.stat().st_size == size
        scp_mb = size / 1e6 / statistics.median(scp_s)
        ours_mb = size / 1e6 / statistics.median(ours_s)
        results["upload"] = {
            "bytes": size,
            "scp_s": scp_s,
            "ours_s": ours_s,
            "scp_MB_s": round(scp_mb, 1),
            "ours_MB_s": round(ours_mb, 1),
            "ratio": round(ours_mb / scp_mb, 3),
            "note": "both include connection set-up (ssh handshake + auth)",
        }

        def push(parallel: int) -> float:
            for b in boards:
                b.reset()
            t0 = time.perf_counter()
            proc = subprocess.run(
                [*cli, "push", str(tar), "-t", "all4", "--parallel", str(parallel)],
                env=env,
                capture_output=True,
                text=True,
            )
            dt = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr)
            return dt

        seq, par = [], []
        for _ in range(args.repeat):
            seq.append(push(1))
            par.append(push(4))
        results["fleet4"] = {
            "sequential_s": seq,
            "parallel_s": par,
            "ratio": round(statistics.median(par) / statistics.median(seq), 3),
        }
        unchanged = []
        for _ in range(max(3, args.repeat)):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [*cli, "push", str(tar), "-t", "b0"], env=env, capture_output=True, text=True, check=True
            )
            unchanged.append(time.perf_counter() - t0)
            rec = json.loads(proc.stdout)
            assert rec["status"] == "unchanged" and rec["uploaded_bytes"] == 0, rec
        results["unchanged_repush_s"] = unchanged
    finally:
        for b in boards:
            b.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    up, fl = results["upload"], results["fleet4"]
    load = results["load_before"][0]
    med_u, max_u = statistics.median(unchanged), max(unchanged)
    seq_s, par_s = statistics.median(fl["sequential_s"]), statistics.median(fl["parallel_s"])
    md = [
        f"# acids-deploy push bench ({args.size_mb} MB bundle, median of {args.repeat}, load {load:.1f})",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| upload, scp | {up['scp_MB_s']} MB/s | |",
        f"| upload, acids-deploy | {up['ours_MB_s']} MB/s ({up['ratio']:.2f}x scp) | >= 0.8x |",
        f"| unchanged re-push (console script) | {med_u:.2f} s (max {max_u:.2f}) | < 2 s |",
        f"| 4 boards, --parallel 1 | {seq_s:.1f} s | |",
        f"| 4 boards, --parallel 4 | {par_s:.1f} s ({fl['ratio']:.2f}x) | <= 0.5x |",
    ]
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
