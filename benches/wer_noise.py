#!/usr/bin/env python3
"""How far WER moves when the model's numbers move but its accuracy does not (issue: the int8
target is "WER within +0.3 of fp32 on each set").

int8 changes every encoder output a little (the cross K/V come out with an RMS error of about
2 % against fp32), and a beam search or a long-form seek loop can turn a small change into
different words. This bench asks how much of an int8 WER delta that alone explains: it adds
Gaussian noise of `--rel` times each tensor's RMS to the fp32 encoder's linear weights (no
bias in expectation, so no accuracy change in expectation), exports that encoder with
models/export_whisper.py, and runs `steno eval` of the fp32 variant on each set at each beam
size, for the unperturbed model and for every seed. It prints one JSON document:

    {"rel": 0.01, "variant": "fp32", "baseline": {"librispeech b1": 12.28, ..., "pooled b1": ...},
     "seeds": [{"seed": 3, "rms_error_pct": {...}, "wer": {...}, "delta": {...}}, ...]}

"pooled bN" is the WER of all sets together (all word edits over all reference words).

`rms_error_pct` is the perturbed encoder's cross K/V RMS error against fp32 on the
audio-samples/ clips (the size of the perturbation); `int8_rms_error_pct` is the shipped int8
encoder's on the same clips, for scale.

Usage: models/.venv/bin/python benches/wer_noise.py [--sets librispeech,hifitts,longform]
       [--beams 1,5] [--seeds 3,4,5] [--rel 0.01] [--steno target/release/steno]
Needs `models/provision` (the CT2 weights in models/.cache and the fp32 export) and a release
build. A benchmark, not a test: it prints numbers; nothing asserts a threshold.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import export_whisper as ew  # noqa: E402
from whisper_mel import log_mel  # noqa: E402

MODEL = "tiny.en"
# The provisioned folders a models tree needs besides the perturbed one (copied, not linked).
SIBLINGS = ["runtime", "whisper-assets", "silero-vad"]


def perturbed_encoder(out_dir, seed, rel):
    """Write <out_dir>/tiny.en-encoder.onnx(.data): the fp32 encoder with noisy linear weights."""
    V = ew.read_ct2(ROOT / "models" / ".cache" / f"ct2-{MODEL}" / "model.bin")
    rng = np.random.default_rng(seed)
    for key in sorted(V):
        if key.startswith("encoder/layer_") and "linear" in key and key.endswith("/weight"):
            w = ew.f32(V[key])
            noise = rng.standard_normal(w.shape).astype(np.float32) * rel * np.sqrt((w**2).mean())
            V[key] = (w + noise).astype(np.float32)
    shipped = onnx.load(str(ROOT / "models" / f"whisper-{MODEL}" / f"{MODEL}-encoder.onnx"), load_external_data=False)
    metadata = {p.key: p.value for p in shipped.metadata_props}
    graph = ew.build_encoder(V, ew.dims_of(V), metadata, "steno", int8=None)
    ew.save(graph, Path(out_dir) / f"{MODEL}-encoder.onnx", True)


def clip_mels():
    """Log-mel windows of the audio-samples clips (at least 10 s, as steno pads them)."""
    filters = np.load(ROOT / "models" / "whisper-assets" / "mel_filters.npz")["mel_80"]
    mels = {}
    for path in sorted((ROOT / "audio-samples").glob("*.wav")):
        with wave.open(str(path)) as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        audio = np.concatenate([audio, np.zeros(max(0, 160000 - len(audio)), np.float32)])[:480000]
        mel = log_mel(audio, filters).astype(np.float32)[None]
        frames = min(mel.shape[2] - mel.shape[2] % 2, 3000)
        mels[path.stem] = mel[:, :, :frames]
    return mels


def rms_error_pct(reference, candidate, mels):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref, cand = ort.InferenceSession(reference, so), ort.InferenceSession(candidate, so)
    out = {}
    for name, mel in mels.items():
        a, b = ref.run(None, {"mel": mel}), cand.run(None, {"mel": mel})
        out[name] = round(100 * float(np.mean([np.sqrt(((x - y) ** 2).mean() / (x**2).mean()) for x, y in zip(a, b)])), 2)
    return out


def key(name, beam):
    return f"{name} b{beam}"


def eval_errors(steno, models_dir, folder, beam):
    """(word edits, reference words) of `steno eval` on one set."""
    cmd = [steno, "eval", str(folder), "--model-variant", "fp32", "--beam-size", str(beam), "--threads", "2", "--json"]
    env = dict(os.environ, STENO_MODELS_DIR=str(models_dir))
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} (STENO_MODELS_DIR={models_dir}) failed: {p.stderr.decode(errors='replace')[-1000:]}")
    e = json.loads(p.stdout)["report"]["errors"]
    return e["substitutions"] + e["deletions"] + e["insertions"], e["reference_words"]


def wer_table(steno, models_dir, sets, beams):
    """WER % of every set at every beam size, and of all sets pooled ("pooled b5": all edits over
    all reference words), which weighs each set by its words."""
    counts = {key(name, beam): eval_errors(steno, models_dir, folder, beam) for name, folder in sets.items() for beam in beams}
    table = {k: round(100 * edits / words, 2) for k, (edits, words) in counts.items()}
    for beam in beams:
        edits, words = (sum(counts[key(name, beam)][i] for name in sets) for i in (0, 1))
        table[key("pooled", beam)] = round(100 * edits / words, 2)
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="librispeech,hifitts,longform", help="folders under ../shared/eval")
    ap.add_argument("--beams", default="1,5")
    ap.add_argument("--seeds", default="3,4,5")
    ap.add_argument("--rel", type=float, default=0.01, help="noise std / each weight tensor's RMS")
    ap.add_argument("--steno", default=str(ROOT / "target" / "release" / "steno"))
    args = ap.parse_args()
    if not os.access(args.steno, os.X_OK):
        sys.exit(f"{args.steno} not found: run `cargo build --release` first")
    models = ROOT / "models"
    for needed in [models / ".cache" / f"ct2-{MODEL}" / "model.bin", models / f"whisper-{MODEL}"] + [models / s for s in SIBLINGS]:
        if not needed.exists():
            sys.exit(f"{needed} is missing: run `models/provision`")
    sets = {name: ROOT.parent / "shared" / "eval" / name for name in args.sets.split(",") if name}
    for name, folder in sets.items():
        if not (folder / "refs.tsv").is_file():
            sys.exit(f"{folder}/refs.tsv is missing")
    beams = [int(b) for b in args.beams.split(",") if b]

    baseline = wer_table(args.steno, models, sets, beams)
    print(json.dumps({"baseline": baseline}), file=sys.stderr, flush=True)
    mels = clip_mels()
    shipped = models / f"whisper-{MODEL}"
    fp32_encoder = str(shipped / f"{MODEL}-encoder.onnx")
    int8_rms = rms_error_pct(fp32_encoder, str(shipped / f"{MODEL}-encoder.int8.onnx"), mels)
    seeds = []
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        with tempfile.TemporaryDirectory(prefix="steno-wer-noise-") as tmp:
            tree = Path(tmp)
            for sibling in SIBLINGS:
                shutil.copytree(models / sibling, tree / sibling)
            shutil.copytree(models / f"whisper-{MODEL}", tree / f"whisper-{MODEL}")
            perturbed_encoder(tree / f"whisper-{MODEL}", seed, args.rel)
            rms = rms_error_pct(fp32_encoder, str(tree / f"whisper-{MODEL}" / f"{MODEL}-encoder.onnx"), mels)
            wer = wer_table(args.steno, tree, sets, beams)
        delta = {k: round(wer[k] - baseline[k], 2) for k in wer}
        seeds.append({"seed": seed, "rms_error_pct": rms, "wer": wer, "delta": delta})
        print(json.dumps(seeds[-1]), file=sys.stderr, flush=True)
    doc = {"model": MODEL, "variant": "fp32", "rel": args.rel, "int8_rms_error_pct": int8_rms, "baseline": baseline,
           "seeds": seeds}
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
