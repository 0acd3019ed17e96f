#!/usr/bin/env python3
"""Peak RSS of `steno transcribe` against the input's length (issue: bounded memory).

Builds WAV files of the asked lengths by looping ../shared/eval/longform (16 kHz mono s16,
written with the standard `wave` module into a temporary folder, deleted afterwards), runs
`steno transcribe` on each in a fresh process and prints one JSON document:

    {"model": ..., "variant": ..., "runs": [{"minutes": 1, "audio_s": 60.0, "peak_rss_mib": ...,
      "wall_s": ..., "rtfx": ..., "words": ...}, ...]}

Usage: benches/rss_vs_length.py [--minutes 1,30,120] [--variant int8] [--steno target/release/steno]
       [--format txt] [-- extra steno transcribe flags]
A benchmark, not a test: it prints numbers; nothing asserts a threshold.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import wave

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def longform_frames():
    folder = os.path.join(ROOT, "..", "shared", "eval", "longform")
    chunks = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".wav"):
            with wave.open(os.path.join(folder, name), "rb") as w:
                if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
                    sys.exit(f"{name}: expected 16 kHz mono s16")
                chunks.append(w.readframes(w.getnframes()))
    if not chunks:
        sys.exit(f"no WAV files in {folder}")
    return b"".join(chunks)


def write_looped(path, seconds, source):
    want = int(seconds * 16000) * 2
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        written = 0
        while written < want:
            piece = source[: want - written]
            w.writeframes(piece)
            written += len(piece)


def run_one(steno, path, variant, fmt, extra):
    """Runs steno in a child of a fresh Python, so ru_maxrss is that run's alone."""
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.monotonic()\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "wall = time.monotonic() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'rc': p.returncode, 'wall_s': wall, 'peak_rss_kib': rss,"
        " 'words': len(p.stdout.split()), 'stderr': p.stderr.decode(errors='replace')[-2000:]}))\n"
    )
    cmd = [sys.executable, "-c", probe, steno, "transcribe", "--model-variant", variant, "-f", fmt, path, *extra]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", default="1,30,120", help="comma-separated lengths in minutes")
    ap.add_argument("--variant", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--format", default="txt")
    ap.add_argument("--steno", default=os.path.join(ROOT, "target", "release", "steno"))
    ap.add_argument("extra", nargs="*", help="extra flags for steno transcribe (after --)")
    args = ap.parse_args()
    if not os.access(args.steno, os.X_OK):
        sys.exit(f"{args.steno} not found: run `cargo build --release` first")
    source = longform_frames()
    runs = []
    with tempfile.TemporaryDirectory(prefix="steno-rss-") as tmp:
        for minutes in [float(m) for m in args.minutes.split(",") if m]:
            path = os.path.join(tmp, f"looped-{minutes:g}min.wav")
            write_looped(path, minutes * 60, source)
            result = run_one(args.steno, path, args.variant, args.format, args.extra)
            os.remove(path)
            if result["rc"] != 0:
                sys.exit(f"steno failed on {minutes:g} min: {result['stderr']}")
            audio_s = minutes * 60
            runs.append(
                {
                    "minutes": minutes,
                    "audio_s": audio_s,
                    "peak_rss_mib": round(result["peak_rss_kib"] / 1024, 1),
                    "wall_s": round(result["wall_s"], 2),
                    "rtfx": round(audio_s / result["wall_s"], 1),
                    "words": result["words"],
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"steno": args.steno, "variant": args.variant, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
