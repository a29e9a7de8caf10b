#!/usr/bin/env python3
"""The end-to-end demo on the built-in real audio (assets/demo-audio), run by `python3 tools/dev.py demo`.

Stages so far (each later package extends this chain):
  1. acids-preprocess: 5 real instrument phrases → 44.1 kHz chunks + loudness/f0/mel → demo-out/dataset,
     piped into acids-data inspect: summary + a PNG (loudness and f0 histograms, a spectrogram with its f0)
  2. acids-rave train: a short training of the `tiny` preset from the piped `dataset` record
  3. acids-rave transfer: a phrase through the trained model (timbre transfer), and `acids-rave info`;
     then `acids-rave train-prior` (a latent prior, from the piped record) and `generate` (3 s, no input)
  4. acids-export: the prior's checkpoint record piped into a streaming TorchScript file for nn~ (the RAVE
     model's encode, decode, forward plus the prior's `prior` method) and the RAVE checkpoint record into a
     streaming ONNX file for a Raspberry Pi (rpi-bookworm profile), each checked against eager PyTorch
  5. acids-ddsp: the violin phrase at 16 kHz with f0/loudness → a short training of the `small` preset →
     the flute phrase played by the violin model (timbre transfer, with a PNG of f0/loudness) → nn~ export
  6. acids-deploy: the Raspberry Pi ONNX artifact piped into a bundle for rpi-bookworm (the board's aarch64
     wheels resolved by pip), the bundle's runner smoke-tested here, and a `push --dry-run` plan for an
     example board inventory (a real push needs a board reachable over SSH)
  7. acids-flowsynth: 512 presets of the built-in synth rendered → a tiny regression-flow model trained →
     the synth parameters inferred from the flute phrase (pitch shifted to C4), re-rendered, with a mel PNG
Every stage runs as its real console script, joined by real shell pipes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(script: str) -> subprocess.CompletedProcess[str]:
    """Run a bash pipeline with pipefail; stderr goes to the terminal, stdout is returned."""
    proc = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{script}"], cwd=ROOT, text=True, stdout=subprocess.PIPE
    )
    if proc.returncode != 0:
        print(f"demo: this step failed with exit code {proc.returncode}:\n{script}", file=sys.stderr)
        sys.exit(proc.returncode)
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "demo-out", help="where the outputs go")
    ap.add_argument("--fresh", action="store_true", help="delete previous outputs first")
    ap.add_argument("--rave-steps", type=int, default=300, help="training steps of the RAVE stage")
    ap.add_argument("--ddsp-steps", type=int, default=200, help="training steps of the DDSP stage")
    ap.add_argument("--flowsynth-epochs", type=int, default=30, help="epochs of the FlowSynth stage")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    audio = ROOT / "assets" / "demo-audio"
    dataset = out / "dataset"
    t0 = time.monotonic()

    print("== 1. preprocess the built-in audio (acids-preprocess | acids-data inspect)", file=sys.stderr)
    records = out / "dataset.jsonl"
    summary = sh(
        f"acids-preprocess '{audio}' -o '{dataset}' --sample-rate 44100 --features loudness,f0,mel"
        f" | tee '{records}' | acids-data inspect --plot '{out / 'dataset.png'}'"
    ).stdout
    record = json.loads(records.read_text().splitlines()[-1])

    print(summary)
    outputs = [
        ("dataset", f"{record['path']}  ({record['chunks']} chunks, {record['seconds'] / 60:.1f} min)"),
        ("dataset record", str(records)),
        ("dataset plot", str(out / "dataset.png")),
    ]

    if shutil.which("acids-rave"):
        steps = args.rave_steps
        run = out / "rave-run"
        print(f"== 2. train RAVE (tiny preset, {steps} steps) from the piped dataset record", file=sys.stderr)
        ckpt_records = out / "rave.jsonl"
        sh(
            f"cat '{records}' | acids-rave train -o '{run}' --config tiny --max-steps {steps}"
            f" --phase1-steps {steps * 3 // 4} --batch 4 --val-every {max(1, steps // 4)} > '{ckpt_records}'"
        )
        ckpt = json.loads(ckpt_records.read_text().splitlines()[-1])["path"]
        print("== 3. timbre transfer of the flute phrase through the model; model info", file=sys.stderr)
        transfer = out / "flute-through-rave.wav"
        sh(f"acids-rave transfer '{ckpt}' '{audio / 'flute.flac'}' '{transfer}' > /dev/null")
        print(sh(f"acids-rave info '{ckpt}'").stdout)
        print("== 3b. a latent prior of the model, then 3 s generated without any input", file=sys.stderr)
        prior_records = out / "rave-prior.jsonl"
        sh(
            f"cat '{records}' | acids-rave train-prior '{ckpt}' -o '{out / 'rave-prior-run'}' --config tiny"
            f" --max-steps 200 > '{prior_records}'"
        )
        prior = json.loads(prior_records.read_text().splitlines()[-1])
        generated = out / "rave-generated.wav"
        sh(f"acids-rave generate '{prior['path']}' -o '{generated}' --seconds 3 > /dev/null")
        if shutil.which("acids-export"):
            print(
                "== 4. export for nn~ (TorchScript: encode, decode, forward and the prior) and a Raspberry Pi"
                " (ONNX), each verified",
                file=sys.stderr,
            )
            artifacts = out / "artifacts.jsonl"
            # the prior's checkpoint exports as its RAVE model plus the `prior` method
            sh(
                f"cat '{prior_records}' | acids-export torchscript --streaming -o '{out / 'rave-nn.ts'}'"
                f" | acids-export check - > '{artifacts}'"
            )
            sh(
                f"cat '{ckpt_records}' | acids-export onnx --profile rpi-bookworm --streaming"
                f" -o '{out / 'rave-rpi.onnx'}' >> '{artifacts}'"
            )
            for line in artifacts.read_text().splitlines():
                art = json.loads(line)
                worst = max(m.get("max_abs_error", 0.0) for m in art["figures"]["methods"].values())
                methods = ", ".join(art["figures"]["methods"])
                outputs.append(
                    (
                        f"{art['format']} ({art['profile']})",
                        f"{art['path']}  ({methods}; max abs error {worst:.2g})",
                    )
                )
        outputs += [
            ("rave checkpoint", ckpt),
            ("rave metrics", str(run / "metrics.jsonl")),
            ("rave validation", str(run / "validation")),
            ("rave transfer", str(transfer)),
            (
                "rave prior",
                f"{prior['path']}  (validation {prior['validation_cross_entropy']:.2f} nats/dim,"
                f" uniform {prior['uniform_cross_entropy']:.2f})",
            ),
            ("rave generated", f"{generated}  (3 s from the prior, no input)"),
        ]

    if shutil.which("acids-ddsp"):
        steps = args.ddsp_steps
        print(
            f"== 5. DDSP: violin phrase → small model ({steps} steps) → flute played by it", file=sys.stderr
        )
        ddsp_records = out / "ddsp.jsonl"
        sh(
            f"acids-preprocess '{audio / 'violin.flac'}' -o '{out / 'ddsp-dataset'}' --sample-rate 16000"
            f" --chunk 65536 -q | acids-ddsp train -o '{out / 'ddsp-run'}' --config small --steps {steps}"
            f" --threads 1 --no-tensorboard > '{ddsp_records}'"
        )
        ddsp_ckpt = json.loads(ddsp_records.read_text().splitlines()[-1])["path"]
        flute_as_violin = out / "flute-as-violin.wav"
        sh(f"acids-ddsp transfer '{ddsp_ckpt}' '{audio / 'flute.flac'}' '{flute_as_violin}' > /dev/null")
        outputs += [
            ("ddsp checkpoint", ddsp_ckpt),
            ("ddsp transfer", f"{flute_as_violin}  (+ {flute_as_violin.with_suffix('.png').name})"),
        ]
        if shutil.which("acids-export"):
            art = sh(
                f"acids-export -q torchscript '{ddsp_ckpt}' --streaming -o '{out / 'ddsp-nn.ts'}'"
            ).stdout
            rec = json.loads(art.splitlines()[-1])
            outputs.append(("ddsp torchscript", f"{rec['path']}  (verified)"))

    pi_onnx = out / "rave-rpi.onnx"
    if shutil.which("acids-deploy") and pi_onnx.exists():
        print("== 6. bundle the Pi model for rpi-bookworm; test its runner; plan a push", file=sys.stderr)
        bundle, records_b, pi_record = out / "pi-bundle.tar", out / "bundle.jsonl", out / "pi-artifact.jsonl"
        lines = (out / "artifacts.jsonl").read_text().splitlines()
        pi_record.write_text("".join(f"{x}\n" for x in lines if json.loads(x)["profile"] == "rpi-bookworm"))
        sh(f"cat '{pi_record}' | acids-deploy bundle --profile rpi-bookworm -o '{bundle}' > '{records_b}'")
        local = out / "pi-bundle-here"  # the runner and model, without the board's aarch64 site/
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir()
        sh(f"tar -xf '{bundle}' -C '{local}' run.py models manifest.json")
        smoke = json.loads(sh(f"'{sys.executable}' '{local / 'run.py'}' --smoke").stdout)
        inventory = out / "boards.toml"
        inventory.write_text(
            "# an example inventory: set host/user/identity_file, pin the host key in known_hosts, then\n"
            f"# acids-deploy push {bundle.name} -i boards.toml -t pi-1\n"
            '[defaults]\nuser = "pi"\nidentity_file = "~/.ssh/id_ed25519"\nknown_hosts = "known_hosts"\n'
            'install_dir = "/home/pi/acids"\n\n'
            '[boards.pi-1]\nhost = "192.168.1.20"\nprofile = "rpi-bookworm"\n'
        )
        sh(f"acids-deploy push -i '{inventory}' -t pi-1 --dry-run < '{records_b}' > /dev/null")
        brec = json.loads(records_b.read_text().splitlines()[-1])
        outputs += [
            ("pi bundle", f"{bundle}  ({brec['bytes'] / 1e6:.0f} MB, {', '.join(brec['dependencies'])})"),
            ("pi runner here", f"{local / 'run.py'}  (smoke test real-time factor {smoke['rtf']:.3g})"),
            ("board inventory", f"{inventory}  (the push plan is printed above)"),
        ]

    if shutil.which("acids-flowsynth"):
        epochs = args.flowsynth_epochs
        print(
            f"== 7. FlowSynth: 512 synth presets → tiny Flow_reg ({epochs} epochs) → the flute's parameters",
            file=sys.stderr,
        )
        fs_records = out / "flowsynth.jsonl"
        sh(
            f"acids-flowsynth render --presets 512 -o '{out / 'flowsynth-dataset'}' --threads 1 -q"
            f" | acids-flowsynth train -o '{out / 'flowsynth-run'}' --config tiny --model flow_reg"
            f" --epochs {epochs} --threads 1 --no-tensorboard > '{fs_records}'"
        )
        fs_ckpt = json.loads(fs_records.read_text().splitlines()[-1])["path"]
        params, render = out / "flute-synth-params.json", out / "flute-synth.wav"
        sh(
            f"acids-flowsynth infer '{fs_ckpt}' '{audio / 'flute.flac'}' -o '{params}' --render '{render}'"
            f" --plot '{render.with_suffix('.png')}' > /dev/null"
        )
        outputs += [
            ("flowsynth checkpoint", fs_ckpt),
            ("flowsynth inference", f"{params}  (re-rendered {render}, + {render.with_suffix('.png').name})"),
        ]

    print(f"demo finished in {time.monotonic() - t0:.0f} s. Outputs:")
    width = max(len(name) for name, _ in outputs)
    for name, where in outputs:
        print(f"  {name:<{width}}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
