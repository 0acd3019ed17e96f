"""Peer comparison: steno against faster-whisper and sherpa-onnx on one folder of audio.

Runs every engine x setting on the same files, each in a fresh process, and prints a markdown
table (and a JSON document with every number and per-file hypothesis):

    engine, setting, files, audio s, load s, transcription s (load excluded),
    RTFx = audio s / transcription s, WER % (one normaliser for all), peak RSS MiB,
    and on steno's rows: steno RTFx / best peer RTFx at the same setting.

Engines (same Whisper weights for all: the CTranslate2 export the models come from):
  steno           target/release/steno eval DIR --json (models/whisper-<model>/, fp32 or int8)
  faster-whisper  WhisperModel(models/.cache/ct2-<model>/, compute_type float32 or int8)
  sherpa-onnx     OfflineRecognizer.from_whisper on models/whisper-<model>-sherpa/ (steno's
                  sherpa-layout export, `models/provision --sherpa`); int8 files are made here
                  with onnxruntime's quantize_dynamic (MatMul, QInt8: the usual ONNX int8) into
                  benches/compare/.cache/. Greedy only; every file is padded to 30 s (that
                  export's encoder takes a fixed 3000-frame input); files over 29.5 s are not
                  supported (sherpa-onnx would cut them), so such a folder gets n/a.

Settings: fp32-greedy, fp32-beam5, int8-greedy, int8-beam5 (beam size 1 or 5 at temperature 0,
each engine's defaults otherwise, e.g. the temperature fallback of steno and faster-whisper).

How: the folder holds audio files and refs.tsv (`<id><TAB><reference>`, audio `<id>.wav` etc.),
as `steno eval` reads it. Before each configuration the harness waits until the machine is idle
(CPU busy below --idle-busy-pct over a 2 s sample; gives up after --idle-timeout-s and records a
warning). Each configuration runs in its own process: steno itself, or this script in worker
mode (`--worker SPEC OUT`) for the Python engines, importing only its engine. Peak RSS is that
process's ru_maxrss (os.wait4; the harness keeps itself small, since a child's ru_maxrss starts
from the size of the process that forked it), checked against the process's own VmHWM. Transcription time runs from the first file to the last, audio
decoding included, model loading excluded (reported apart). WER is corpus WER (edits / reference
words) after Whisper's EnglishTextNormalizer (whisper/normalizers from the openai-whisper sdist,
extracted by `provision`) on both sides, for every engine; steno's own WER is kept as a check.

Usage (through the wrapper, which provisions the venv first):
    benches/compare/run ../shared/eval/librispeech [--engines steno,faster-whisper,sherpa-onnx]
        [--settings fp32-beam5,int8-greedy] [--threads 2] [--limit N] [--repeat 3] [--json out.json]
--repeat N runs every configuration N times in rounds (each round runs every configuration once,
so a drift in the machine's speed reaches all engines alike); a row shows its median run, and
steno's rows the ratio round by round and its median. Every run records the CPU steal during it.
A benchmark, not a test: it prints numbers; nothing asserts a threshold.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.path.join(HERE, ".cache")
ENGINES = ["steno", "faster-whisper", "sherpa-onnx"]
SETTINGS = ["fp32-greedy", "fp32-beam5", "int8-greedy", "int8-beam5"]
AUDIO_EXTENSIONS = ["wav", "flac", "mp3", "ogg", "opus", "m4a"]  # as steno eval tries them
# sherpa-onnx's Whisper takes under 3000 - 50 mel frames (29.5 s) and cuts longer input.
SHERPA_MAX_SECONDS = 29.5
# Frames of padding sherpa-onnx adds after the audio, capped at 3000: with 3000, every input is
# padded to Whisper's 30 s window, the fixed input length of steno's sherpa-layout encoder.
SHERPA_TAIL_PADDINGS = 3000
SAMPLE_RATE = 16000


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


# --- the data set --------------------------------------------------------------------------


def read_references(folder, limit=None):
    """[(id, audio path, reference text)] from folder/refs.tsv, in file order."""
    refs = []
    with open(os.path.join(folder, "refs.tsv"), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if "\t" not in line:
                sys.exit(f"{folder}/refs.tsv:{n}: expected `<id><TAB><text>`")
            uid, text = line.split("\t", 1)
            audio = next(
                (p for p in (os.path.join(folder, f"{uid}.{e}") for e in AUDIO_EXTENSIONS)
                 if os.path.isfile(p)),
                None,
            )
            if audio is None:
                sys.exit(f"{folder}/refs.tsv:{n}: no audio file {uid}.wav (or .flac, ...)")
            refs.append((uid, os.path.abspath(audio), text))
    if limit is not None:
        refs = refs[:limit]
    if not refs:
        sys.exit(f"{folder}/refs.tsv lists no utterances")
    return refs


def load_audio(path):
    """Mono float32 samples at 16 kHz: `wave` for 16-bit PCM WAV at 16 kHz, PyAV otherwise."""
    import numpy as np

    if path.endswith(".wav"):
        try:
            with wave.open(path, "rb") as w:
                if w.getsampwidth() == 2 and w.getframerate() == SAMPLE_RATE:
                    pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
                    pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1)
                    return (pcm / 32768.0).astype(np.float32)
        except wave.Error:
            pass  # e.g. float WAV: let PyAV decode it
    from faster_whisper.audio import decode_audio

    return decode_audio(path, sampling_rate=SAMPLE_RATE)


def audio_seconds(path):
    if path.endswith(".wav"):
        try:
            with wave.open(path, "rb") as w:
                return w.getnframes() / w.getframerate()
        except wave.Error:
            pass
    return len(load_audio(path)) / SAMPLE_RATE


# --- word error rate ------------------------------------------------------------------------


def english_normalizer():
    """Whisper's EnglishTextNormalizer, from the files `provision` extracted (not `whisper`)."""
    folder = os.path.join(CACHE, "whisper_normalizers")
    if not os.path.isfile(os.path.join(folder, "english.py")):
        sys.exit(f"{folder} is missing; run benches/compare/provision")
    sys.path.insert(0, CACHE)
    from whisper_normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


def word_errors(reference, hypothesis):
    """(substitutions, deletions, insertions) of a minimal word alignment (Levenshtein)."""
    ref, hyp = reference.split(), hypothesis.split()
    # cost[j] = (edits, subs, dels, ins) aligning ref[:i] with hyp[:j]; one row at a time
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                e, s, d, n = prev[j - 1]
                best = (e + 1, s + 1, d, n)
            e, s, d, n = prev[j]
            if e + 1 < best[0]:
                best = (e + 1, s, d + 1, n)
            e, s, d, n = cur[j - 1]
            if e + 1 < best[0]:
                best = (e + 1, s, d, n + 1)
            cur.append(best)
        prev = cur
    _, s, d, n = prev[-1]
    return s, d, n


def score(refs, hypotheses, normalize):
    """Per-file and corpus word errors; a file without a hypothesis counts as all deleted."""
    items, totals = [], {"substitutions": 0, "deletions": 0, "insertions": 0, "reference_words": 0}
    for uid, _, reference in refs:
        hyp = hypotheses.get(uid, "")
        s, d, n = word_errors(normalize(reference), normalize(hyp))
        words = len(normalize(reference).split())
        items.append({"id": uid, "hypothesis": hyp, "errors": s + d + n, "reference_words": words})
        for key, value in zip(totals, (s, d, n, words)):
            totals[key] += value
    edits = totals["substitutions"] + totals["deletions"] + totals["insertions"]
    wer = edits / totals["reference_words"] if totals["reference_words"] else 0.0
    return items, totals, wer


# --- waiting for an idle machine ------------------------------------------------------------


def cpu_times(steal=False):
    """(total, idle) jiffies of all CPUs since boot, or (total, steal) with `steal`."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user/nice)
    total = sum(fields[:8])
    return total, fields[7] if steal else fields[3] + fields[4]


def busy_percent(seconds):
    t0, i0 = cpu_times()
    time.sleep(seconds)
    t1, i1 = cpu_times()
    return 100.0 * (1.0 - (i1 - i0) / max(t1 - t0, 1))


def wait_for_idle(max_busy, timeout, sample_s=2.0):
    """Sample CPU use until it is below max_busy %; {'waited_s', 'busy_pct', 'warning'?}."""
    started = time.monotonic()
    while True:
        busy = busy_percent(sample_s)
        waited = time.monotonic() - started
        if busy < max_busy:
            return {"waited_s": round(waited, 1), "busy_pct": round(busy, 1)}
        if waited >= timeout:
            warning = f"machine not idle: CPU {busy:.0f} % busy after waiting {waited:.0f} s"
            log(f"warning: {warning}; running anyway")
            return {"waited_s": round(waited, 1), "busy_pct": round(busy, 1), "warning": warning}


# --- running one configuration in its own process -------------------------------------------


def run_measured(cmd, env=None):
    """Run cmd; (exit code, stdout, stderr, rusage) with the child's own peak RSS (wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; tell Popen
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(errors="replace"), usage


def run_steno(args, setting, folder, refs):
    precision, strategy = setting.split("-")
    cmd = [
        args.steno, "eval", folder, "--json", "--threads", str(args.threads),
        "--models-dir", args.models_dir, "--model", args.model, "--model-variant", precision,
        "--language", "en", "--beam-size", "1" if strategy == "greedy" else "5",
    ]
    code, stdout, stderr, usage = run_measured(cmd)
    try:
        doc = json.loads(stdout)
    except json.JSONDecodeError:
        return {"error": f"steno eval exited {code}: {stderr.strip()[-500:]}"}, usage
    report = doc["report"]
    failed = [i for i in report["items"] if i.get("error")]
    result = {
        "load_s": doc["load_seconds"],
        "transcribe_s": report["wall_seconds"],
        "hypotheses": {i["id"]: i["hypothesis"] for i in report["items"]},
        "engine_wer_pct": 100.0 * report["wer"],
        "engine_audio_s": report["audio_seconds"],
        "self_peak_rss_mib": (report["peak_rss_bytes"] or 0) / 2**20 or None,
        "command": " ".join(cmd),
    }
    if failed:
        result["error"] = f"{len(failed)} files failed, e.g. {failed[0]['id']}: {failed[0]['error']}"
    return result, usage


def python_engine_model(args, engine, setting):
    """What the worker loads: the CTranslate2 folder, or the sherpa-onnx files (int8 made now)."""
    if engine == "faster-whisper":
        folder = os.path.join(args.models_dir, ".cache", f"ct2-{args.model}")
        if not os.path.isfile(os.path.join(folder, "model.bin")):
            raise FileNotFoundError(f"{folder}/model.bin is missing; run models/provision")
        return folder
    return sherpa_files(args, setting.split("-")[0])


def run_python_engine(args, engine, setting, model, refs):
    spec = {
        "engine": engine,
        "setting": setting,
        "threads": args.threads,
        "model": model,
        "files": [(uid, path) for uid, path, _ in refs],
    }
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ, HF_HUB_OFFLINE="1")  # a local model folder: never the hub
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", spec_path, out_path]
        code, _, stderr, usage = run_measured(cmd, env=env)
        if code != 0 or not os.path.isfile(out_path):
            return {"error": f"worker exited {code}: {stderr.strip()[-800:]}"}, usage
        with open(out_path) as f:
            result = json.load(f)
        if stderr.strip():  # sherpa-onnx reports a failed file here and returns empty text
            result["stderr_tail"] = stderr.strip()[-800:]
        return result, usage


def sherpa_files(args, precision):
    """{encoder, decoder, tokens} of the sherpa-layout export; int8 quantised on first use."""
    name = args.model
    src = os.path.join(args.models_dir, f"whisper-{name}-sherpa")
    files = {part: os.path.join(src, f"{name}-{part}.onnx") for part in ("encoder", "decoder")}
    files["tokens"] = os.path.join(src, f"{name}-tokens.txt")
    for path in files.values():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing; run `models/provision --sherpa`")
    if precision == "fp32":
        return files
    return quantized_sherpa_files(name, files)


def quantized_sherpa_files(name, files):
    """MatMul weights to QInt8 with quantize_dynamic (the usual ONNX int8, which steno's export used
    before its blockwise int8 decoder); cached in .cache/whisper-<name>-sherpa-int8/, redone when the fp32 files change."""
    import hashlib

    out = os.path.join(CACHE, f"whisper-{name}-sherpa-int8")
    digest = hashlib.sha256()
    for part in ("encoder", "decoder"):
        with open(files[part], "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    stamp_path = os.path.join(out, "source.sha256")
    result = {part: os.path.join(out, f"{name}-{part}.int8.onnx") for part in ("encoder", "decoder")}
    result["tokens"] = files["tokens"]
    if os.path.isfile(stamp_path) and open(stamp_path).read().strip() == digest.hexdigest():
        return result
    log(f"quantising the sherpa-onnx export to int8 -> {out}")
    os.makedirs(out, exist_ok=True)
    # In a process of its own: this one stays small, as its children's ru_maxrss starts from
    # the size of the process that forked them.
    pairs = [(files[part], result[part]) for part in ("encoder", "decoder")]
    subprocess.run([sys.executable, os.path.abspath(__file__), "--quantize", json.dumps(pairs)],
                   check=True)
    with open(stamp_path, "w") as f:
        f.write(digest.hexdigest() + "\n")
    return result


def quantize(pairs):
    """quantize_dynamic each (fp32 input, int8 output) pair (MatMul weights, QInt8)."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # not the "consider pre-processing" advice
    for source, target in pairs:
        quantize_dynamic(
            model_input=source,
            model_output=target,
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8,
            # shape inference stops at com.microsoft ops; every quantised MatMul is float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def unsupported(engine, setting, refs, durations):
    """Why engine cannot run setting on these files, or None."""
    if engine == "sherpa-onnx":
        if setting.endswith("beam5"):
            return "sherpa-onnx decodes Whisper greedily only"
        longest = max(durations[uid] for uid, _, _ in refs)
        if longest > SHERPA_MAX_SECONDS:
            return (f"sherpa-onnx Whisper takes <= {SHERPA_MAX_SECONDS} s per file; "
                    f"longest is {longest:.1f} s")
    return None


# --- worker mode: one Python engine, one setting, in this process ---------------------------


def worker(spec_path, out_path):
    """Load the engine, transcribe the files, write times and hypotheses to out_path."""
    with open(spec_path) as f:
        spec = json.load(f)
    precision, strategy = spec["setting"].split("-")
    beam = 1 if strategy == "greedy" else 5
    t0 = time.perf_counter()
    if spec["engine"] == "faster-whisper":
        from faster_whisper import WhisperModel

        t1 = time.perf_counter()
        model = WhisperModel(spec["model"], device="cpu",
                             compute_type="float32" if precision == "fp32" else "int8",
                             cpu_threads=spec["threads"])

        def transcribe(path):
            segments, _ = model.transcribe(path, beam_size=beam, language="en")
            return "".join(s.text for s in segments).strip()  # runs the generator to the end
    else:
        import sherpa_onnx

        t1 = time.perf_counter()
        files = spec["model"]
        recognizer = sherpa_onnx.OfflineRecognizer.from_whisper(
            encoder=files["encoder"], decoder=files["decoder"], tokens=files["tokens"],
            num_threads=spec["threads"], language="en", task="transcribe",
            decoding_method="greedy_search", tail_paddings=SHERPA_TAIL_PADDINGS)

        def transcribe(path):
            stream = recognizer.create_stream()
            stream.accept_waveform(SAMPLE_RATE, load_audio(path))
            recognizer.decode_stream(stream)
            return stream.result.text.strip()
    t2 = time.perf_counter()
    hypotheses = {}
    for uid, path in spec["files"]:
        hypotheses[uid] = transcribe(path)
    t3 = time.perf_counter()
    with open(out_path, "w") as f:
        json.dump({"import_s": t1 - t0, "load_s": t2 - t1, "transcribe_s": t3 - t2,
                   "self_peak_rss_mib": self_peak_rss_mib(), "hypotheses": hypotheses}, f)


def self_peak_rss_mib():
    """This process's VmHWM (peak RSS since exec), MiB: a check on the parent's ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return None


# --- report ---------------------------------------------------------------------------------


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                         model)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(l.split()[1]) for l in f if l.startswith("MemTotal:"))
            mem = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": mem,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(steno):
    out = {}
    try:
        out["steno"] = subprocess.run([steno, "--version"], capture_output=True, text=True,
                                      check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        out["steno"] = f"unavailable ({e})"
    for package in ("faster-whisper", "ctranslate2", "sherpa-onnx", "sherpa-onnx-core",
                    "onnxruntime"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def summarize(row):
    """The row's figures are its median run's (by transcription time; the lower middle one for
    an even count); `runs` keeps every run."""
    runs = row.get("runs") or []
    if not runs:
        return
    median = sorted(runs, key=lambda r: r["transcribe_s"])[(len(runs) - 1) // 2]
    for key, value in median.items():
        if key not in ("round",):
            row[key] = value
    if len(runs) > 1:
        rtfx = [r["rtfx"] for r in runs if r.get("rtfx")]
        row["rtfx_range"] = [min(rtfx), max(rtfx)]
        steal = [r["steal_pct"] for r in runs if r.get("steal_pct") is not None]
        if steal:
            row["steal_pct_range"] = [min(steal), max(steal)]
        wers = sorted({round(r["wer_pct"], 2) for r in runs})
        if len(wers) > 1:
            row["wer_pct_runs"] = [r["wer_pct"] for r in runs]
        # A run with failed files (faster for it) must show even when it is not the median.
        failed = [r["round"] for r in runs if r.get("error")]
        if failed:
            row["failed_rounds"] = failed


def fmt(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(rows):
    head = ["engine", "setting", "files", "audio s", "load s", "transcribe s", "RTFx", "WER %",
            "peak RSS MiB", "steno/best peer RTFx", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        notes = r.get("unsupported") or r.get("error") or ""
        if any((run.get("idle") or {}).get("warning") for run in r.get("runs", [])):
            notes = (notes + "; " if notes else "") + "not idle"
        if r.get("rtfx_range"):
            lo, hi = r["rtfx_range"]
            notes = (notes + "; " if notes else "") + f"{len(r['runs'])} runs, RTFx {lo:.1f}-{hi:.1f}"
        if r.get("rtfx_ratio_by_round"):
            by_round = r["rtfx_ratio_by_round"]
            notes = (notes + "; " if notes else "") + "ratio by round " + ", ".join(
                f"{x:.2f}" for x in by_round) + f" (median {statistics.median(by_round):.2f})"
        if r.get("steal_pct_range"):
            lo, hi = r["steal_pct_range"]
            notes = (notes + "; " if notes else "") + f"CPU steal {lo:.0f}-{hi:.0f} %"
        if r.get("failed_rounds"):
            notes = (notes + "; " if notes else "") + "files failed in round " + ", ".join(map(str, r["failed_rounds"]))
        if r.get("wer_pct_runs"):
            notes = (notes + "; " if notes else "") + "WER by run " + ", ".join(f"{x:.2f}" for x in r["wer_pct_runs"])
        if r.get("engine_wer_pct") is not None and r.get("wer_pct") is not None \
                and abs(r["engine_wer_pct"] - r["wer_pct"]) > 0.005:
            notes = (notes + "; " if notes else "") + f"own WER {r['engine_wer_pct']:.2f} %"
        cells = [r["engine"], r["setting"], str(r["files"]), fmt(r["audio_s"], 1),
                 fmt(r.get("load_s"), 2), fmt(r.get("transcribe_s"), 2), fmt(r.get("rtfx"), 2),
                 fmt(r.get("wer_pct"), 2), fmt(r.get("peak_rss_mib"), 0),
                 fmt(r.get("rtfx_ratio"), 2) if r["engine"] == "steno" else "",
                 notes.replace("|", "/").replace("\n", " ")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", help="folder with audio files and refs.tsv")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, of " + ", ".join(ENGINES))
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, of " + ", ".join(SETTINGS))
    ap.add_argument("--threads", type=int, default=2, help="threads per engine (default 2)")
    ap.add_argument("--limit", type=int, help="only the first N files of refs.tsv")
    ap.add_argument("--model", default="tiny.en", help="model name under models/ (default tiny.en)")
    ap.add_argument("--models-dir", default=os.path.join(ROOT, "models"))
    ap.add_argument("--steno", default=os.path.join(ROOT, "target", "release", "steno"),
                    help="steno binary (default target/release/steno)")
    ap.add_argument("--json", metavar="FILE", help="write the JSON document here ('-': to stdout, "
                    "the table then goes to stderr)")
    ap.add_argument("--idle-busy-pct", type=float, default=15.0,
                    help="run a configuration once CPU use is below this (default 15)")
    ap.add_argument("--idle-timeout-s", type=float, default=300.0,
                    help="wait at most this long for an idle machine, then run anyway (default 300)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every configuration N times, in rounds; a row shows its median run (default 1)")
    ap.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--quantize", metavar="PAIRS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    if args.quantize:
        return quantize(json.loads(args.quantize))
    if not args.dir:
        ap.error("the folder is required")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    engines = [e for e in args.engines.split(",") if e]
    settings = [s for s in args.settings.split(",") if s]
    for value, known in ((engines, ENGINES), (settings, SETTINGS)):
        bad = [v for v in value if v not in known]
        if bad:
            ap.error(f"unknown {', '.join(bad)} (known: {', '.join(known)})")
    args.models_dir = os.path.abspath(args.models_dir)
    args.steno = os.path.abspath(args.steno)
    if "steno" in engines and not os.access(args.steno, os.X_OK):
        sys.exit(f"{args.steno} not found; build it with `cargo build --release` or pass --steno")

    folder = os.path.abspath(args.dir)
    refs = read_references(folder, args.limit)
    durations = {uid: audio_seconds(path) for uid, path, _ in refs}
    total_audio = sum(durations.values())
    normalize = english_normalizer()
    log(f"{len(refs)} files, {total_audio:.1f} s of audio from {folder}")

    with tempfile.TemporaryDirectory() as subset:
        if args.limit is not None:  # steno eval takes a folder: link the chosen files into one
            with open(os.path.join(subset, "refs.tsv"), "w", encoding="utf-8") as f:
                for uid, path, text in refs:
                    f.write(f"{uid}\t{text}\n")
                    os.symlink(path, os.path.join(subset, os.path.basename(path)))
            steno_dir = subset
        else:
            steno_dir = folder

        rows, models = [], {}
        for setting in settings:
            for engine in engines:
                row = {"engine": engine, "setting": setting, "files": len(refs),
                       "audio_s": total_audio, "runs": []}
                rows.append(row)
                why = unsupported(engine, setting, refs, durations)
                if why:
                    row["unsupported"] = why
                    log(f"{engine} {setting}: n/a ({why})")
        # Rounds: every configuration once per round, so a drift in the machine's speed (CPU
        # steal on a shared host) reaches every engine alike rather than one engine's runs.
        for round_no in range(1, args.repeat + 1):
            for row in rows:
                if row.get("unsupported") or row.get("error"):
                    continue
                engine, setting = row["engine"], row["setting"]
                tag = f"{engine} {setting}" + (f" (round {round_no}/{args.repeat})" if args.repeat > 1 else "")
                try:
                    # model files first (sherpa-onnx int8 is quantised here), then the idle wait
                    if engine != "steno" and (engine, setting) not in models:
                        models[engine, setting] = python_engine_model(args, engine, setting)
                    idle = wait_for_idle(args.idle_busy_pct, args.idle_timeout_s)
                    log(f"{tag}: running (CPU {idle['busy_pct']} % busy before)")
                    before = cpu_times(steal=True)
                    if engine == "steno":
                        result, usage = run_steno(args, setting, steno_dir, refs)
                    else:
                        result, usage = run_python_engine(args, engine, setting, models[engine, setting], refs)
                    after = cpu_times(steal=True)
                except Exception as e:  # a missing model file, a failed quantisation: say so, go on
                    row["error"] = str(e)
                    log(f"{tag}: {e}")
                    continue
                run = {"round": round_no, "idle": idle, "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
                       "cpu_s": usage.ru_utime + usage.ru_stime,
                       # CPU time the hypervisor gave other guests while this run wanted it:
                       # the noise of a shared host, in % of all CPUs' time during the run.
                       "steal_pct": 100.0 * (after[1] - before[1]) / max(after[0] - before[0], 1)}
                hypotheses = result.pop("hypotheses", None)
                run.update(result)
                if "error" in result and hypotheses is None:
                    row["error"] = result["error"]
                    log(f"{tag}: {result['error']}")
                    continue
                items, errors, wer = score(refs, hypotheses, normalize)
                run["rtfx"] = total_audio / run["transcribe_s"] if run["transcribe_s"] else None
                run["wer_pct"] = 100.0 * wer
                run["word_errors"] = errors
                run["items"] = items
                row["runs"].append(run)
                log(f"{tag}: RTFx {run['rtfx']:.2f}, WER {run['wer_pct']:.2f} %, "
                    f"load {run['load_s']:.2f} s, peak RSS {run['peak_rss_mib']:.0f} MiB")

    for row in rows:
        summarize(row)
    for row in rows:
        if row["engine"] == "steno" and row.get("rtfx"):
            peers = [r for r in rows if r["setting"] == row["setting"] and r["engine"] != "steno" and r.get("rtfx")]
            row["rtfx_ratio"] = row["rtfx"] / max(r["rtfx"] for r in peers) if peers else None
            if peers and args.repeat > 1:
                # Round by round: steno's run against the best peer run of the same round.
                ratios = []
                for run in row["runs"]:
                    same = [p["rtfx"] for r in peers for p in r["runs"] if p["round"] == run["round"] and p.get("rtfx")]
                    if run.get("rtfx") and same:
                        ratios.append(run["rtfx"] / max(same))
                row["rtfx_ratio_by_round"] = ratios

    doc = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "folder": folder,
        "files": len(refs),
        "audio_s": total_audio,
        "model": args.model,
        "threads": args.threads,
        "repeat": args.repeat,
        "machine": machine_info(),
        "versions": versions(args.steno),
        "normalizer": "whisper.normalizers.EnglishTextNormalizer (openai-whisper 20250625)",
        "wer": "corpus WER: (substitutions + deletions + insertions) / reference words",
        "rows": rows,
    }
    table = markdown(rows)
    if args.json == "-":
        json.dump(doc, sys.stdout, indent=2)
        print()
        print(table, file=sys.stderr)
    else:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
            log(f"wrote {args.json}")
        m = doc["machine"]
        print(f"{len(refs)} files, {total_audio:.1f} s audio; {args.model}, {args.threads} threads; "
              f"{m['cpu']} ({m['cores_usable']} cores), load {m['load_average']}\n")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
