#!/usr/bin/env python3
"""Load benchmark for `steno serve` (concurrent live WebSocket streams, or parallel uploads).

Starts nothing itself: run the server first, then this with the clients' venv
(tests/clients/provision makes it; only websockets + the standard library are used):

    target/release/steno serve --listen 127.0.0.1:8080 &          # prints "listening on ..." at once;
    until curl -sf http://127.0.0.1:8080/health >/dev/null; do sleep 0.5; done   # 200 once the model is loaded
    PY=tests/clients/.venv/bin/python
    # N concurrent real-time streams of ../shared/eval/longform audio (whole files by default):
    $PY benches/serve_load.py --base-url http://127.0.0.1:8080 streams --n 4 [--seconds 60] [--pid PID]
    # find the largest N that keeps up: one JSON per N, then a summary with the largest ok N
    $PY benches/serve_load.py --base-url http://127.0.0.1:8080 streams --sweep 1,2,4,6,8 --seconds 60 --pid $!
    # 8 parallel HTTP uploads (response_format=json) of the eval WAVs; throughput = audio s / wall s
    $PY benches/serve_load.py --base-url http://127.0.0.1:8080 uploads --n 8 [FILES...]

streams: stream i plays longform file i mod F (16 kHz mono s16 WAVs), starting `--offset-step`
seconds later into the file for each further round of files (so equal files do not speak in
lockstep; playback wraps around the file's end), in 100 ms chunks, chunk k sent at t0 + k*0.1 s,
for --seconds (default: the file's length), then {"type":"end"}. The latency of a final is its
arrival time minus the time the chunk holding its `end` sample was sent (= t0 + end when the client
keeps pace), counted for finals with reason "silence" only (a max-length cut or the end-of-input
flush has no end of speech); compute_p50/p95_s is the server's compute_ms (endpoint decision to
final: queueing and decoding); --finals-log FILE appends every final as a JSON line. Per stream: finals, latency p50/p95/max, dropped_samples of the last stats event, the
client's worst lateness in sending a chunk (max_send_lag_s), the close code. ok = every stream
closed with 1000 after a stats event, has finals, p95 <= --max-p95 (1.0 s) and dropped == 0.
With --pid, the server's RSS (VmRSS of /proc/PID/status) is sampled before, during (every 0.25 s)
and after each run; mem_per_stream_mib = (peak - before) / N.

uploads: --n worker threads take the next file from a queue until all are transcribed (multipart
built by hand, http.client); prints total audio seconds (WAV headers), wall seconds and
throughput = audio s / wall s, with per-request latency p50/max.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import queue
import sys
import threading
import time
import urllib.parse
import uuid
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHUNK_S = 0.1


def eval_dir(name: str) -> Path:
    """../shared/eval/NAME beside the repository (or shared/eval/NAME inside it)."""
    for base in (REPO.parent / "shared" / "eval", REPO / "shared" / "eval"):
        if (base / name).is_dir():
            return base / name
    return REPO.parent / "shared" / "eval" / name


def read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getcomptype() != "NONE":
            sys.exit(f"{path}: needs 16-bit mono PCM (has {w.getnchannels()} ch, {8 * w.getsampwidth()}-bit)")
        return w.readframes(w.getnframes()), w.getframerate()


def wav_seconds(path: Path) -> float:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / w.getframerate()
    except (OSError, EOFError, wave.Error) as e:
        sys.exit(f"{path}: not a readable WAV file ({type(e).__name__}: {e})")


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values, None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def r3(x):
    return None if x is None else round(x, 3)


def rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- streams

async def one_stream(i: int, args, audio: bytes, rate: int, name: str, offset_s: float,
                     seconds: float, start_barrier: asyncio.Event) -> dict:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    width = 2
    chunk_bytes = int(rate * CHUNK_S) * width
    total_bytes = int(seconds * rate) * width
    start_byte = (int(offset_s * rate) * width) % len(audio)
    n_chunks = math.ceil(total_bytes / chunk_bytes)

    def chunk(k: int) -> bytes:
        a = (start_byte + k * chunk_bytes) % len(audio)
        n = min(chunk_bytes, total_bytes - k * chunk_bytes)
        b = audio[a:a + n]
        while len(b) < n:  # wrap around the end of the file
            b += audio[: n - len(b)]
        return b

    res = {"stream": i, "file": name, "offset_s": round(offset_s, 1), "audio_s": round(total_bytes / width / rate, 2),
           "finals": 0, "partials": 0, "latencies": [], "other_finals": 0, "compute_ms": [], "dropped": None, "stats": None, "close_code": None,
           "errors": [], "warnings": 0, "max_send_lag_s": 0.0, "final_events": []}
    url = args.base_url.rstrip("/")
    url = ("wss://" + url[8:] if url.startswith("https://") else "ws://" + url.split("://", 1)[-1]) + "/v1/stream"
    await start_barrier.wait()
    try:
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {args.api_key}"}, proxy=None,
                           compression=None, open_timeout=30, max_size=2**24)
    except InvalidStatus as e:
        res["errors"].append(f"upgrade refused: HTTP {e.response.status_code}")
        return res
    except OSError as e:
        res["errors"].append(f"connect: {e}")
        return res
    sent_at: list[float] = []
    async with ws:
        try:
            await ws.send(json.dumps({"type": "config", "sample_rate": rate, "encoding": "pcm_s16le"}))
            ready = json.loads(await asyncio.wait_for(ws.recv(), 60))
        except (ConnectionClosed, asyncio.TimeoutError) as e:
            res["errors"].append(f"no ready event: {type(e).__name__} {e}")
            res["close_code"] = ws.close_code
            return res
        if ready.get("type") != "ready":
            res["errors"].append(f"expected ready, got {ready}")
            return res
        t0 = time.monotonic()

        async def sender():
            try:
                for k in range(n_chunks):
                    due = t0 + k * CHUNK_S
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    now = time.monotonic()
                    res["max_send_lag_s"] = max(res["max_send_lag_s"], now - due)
                    sent_at.append(now)
                    await ws.send(chunk(k))
                await ws.send(json.dumps({"type": "end"}))
            except ConnectionClosed as e:
                res["errors"].append(f"closed while sending: {e}")

        send_task = asyncio.create_task(sender())
        deadline = t0 + seconds + args.tail_timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    res["errors"].append(f"no close {args.tail_timeout:.0f} s after the audio ended")
                    break
                try:
                    raw = await asyncio.wait_for(ws.recv(), left)
                except ConnectionClosed:
                    break
                except asyncio.TimeoutError:
                    continue
                now = time.monotonic()
                if not isinstance(raw, str):
                    continue
                ev = json.loads(raw)
                kind = ev.get("type")
                if kind == "final":
                    res["finals"] += 1
                    end = float(ev.get("end", 0.0))
                    k = min(max(math.ceil(end / CHUNK_S) - 1, 0), n_chunks - 1)
                    ref = sent_at[k] if k < len(sent_at) else t0 + end
                    # End-of-speech latency is only defined for finals the speaker's pause
                    # ended; a max-length cut ends at an earlier committed word while speech
                    # goes on, and the end-of-input flush follows the client's `end`.
                    if ev.get("reason", "silence") == "silence":
                        res["latencies"].append(now - ref)
                    else:
                        res["other_finals"] += 1
                    if "compute_ms" in ev:
                        res["compute_ms"].append(float(ev["compute_ms"]) / 1e3)
                    res["final_events"].append({
                        "stream": i, "file": name, "start": ev.get("start"), "end": end,
                        "reason": ev.get("reason"), "latency_s": r3(now - ref), "compute_ms": ev.get("compute_ms"),
                        "text": ev.get("text")})
                elif kind == "partial":
                    res["partials"] += 1
                elif kind == "stats":
                    res["stats"] = ev
                    res["dropped"] = ev.get("dropped_samples")
                elif kind == "error":
                    res["errors"].append(ev.get("message"))
                elif kind == "warning":
                    res["warnings"] += 1
        finally:
            send_task.cancel()
            await asyncio.gather(send_task, return_exceptions=True)
        res["close_code"] = ws.close_code
    return res


async def sample_rss(pid: int | None, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        v = rss_kib(pid)
        if v is not None:
            peak[0] = max(peak[0], v)
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except asyncio.TimeoutError:
            pass


async def run_streams(args, n: int, files: list[tuple[str, bytes, int]]) -> dict:
    rss_before = rss_kib(args.pid)
    peak = [rss_before or 0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(args.pid, peak, stop))
    barrier = asyncio.Event()
    tasks = []
    for i in range(n):
        name, audio, rate = files[i % len(files)]
        file_s = len(audio) / 2 / rate
        offset = ((i // len(files)) * args.offset_step) % file_s
        seconds = args.seconds if args.seconds else file_s
        tasks.append(asyncio.create_task(one_stream(i, args, audio, rate, name, offset, seconds, barrier)))
    t = time.monotonic()
    barrier.set()
    results = await asyncio.gather(*tasks)
    wall = time.monotonic() - t
    stop.set()
    await sampler
    await asyncio.sleep(args.settle)
    rss_after = rss_kib(args.pid)

    if args.finals_log:
        with open(args.finals_log, "a") as log:
            for r in results:
                for f in r["final_events"]:
                    log.write(json.dumps({"n": n, **f}) + "\n")
    per_stream, all_lat, ok = [], [], True
    for r in results:
        lat = r["latencies"]
        all_lat += lat
        p95 = pct(lat, 95)
        stream_ok = (not r["errors"] and r["close_code"] == 1000 and r["stats"] is not None and r["finals"] > 0
                     and p95 is not None and p95 <= args.max_p95 and r["dropped"] == 0)
        ok &= stream_ok
        st = r["stats"] or {}
        per_stream.append({
            "stream": r["stream"], "file": r["file"], "offset_s": r["offset_s"], "audio_s": r["audio_s"],
            "finals": r["finals"], "partials": r["partials"], "finals_not_at_silence": r["other_finals"],
            "compute_p50_s": r3(pct(r["compute_ms"], 50)), "compute_p95_s": r3(pct(r["compute_ms"], 95)),
            "p50_s": r3(pct(lat, 50)), "p95_s": r3(p95), "max_s": r3(max(lat) if lat else None),
            "dropped": r["dropped"], "max_send_lag_s": r3(r["max_send_lag_s"]),
            "rtf": st.get("real_time_factor"), "mean_decode_ms": st.get("mean_decode_ms"),
            "close_code": r["close_code"], "warnings": r["warnings"], "errors": r["errors"][:3], "ok": stream_ok,
        })
    dropped = [r["dropped"] for r in results if r["dropped"] is not None]
    out = {
        "mode": "streams", "n": n, "seconds": args.seconds or "whole file", "wall_s": round(wall, 1),
        "overall_p50_s": r3(pct(all_lat, 50)), "overall_p95_s": r3(pct(all_lat, 95)),
        "max_p95_s": r3(max((s["p95_s"] for s in per_stream if s["p95_s"] is not None), default=None)),
        "max_dropped": max(dropped) if dropped else None,
        "max_send_lag_s": r3(max(r["max_send_lag_s"] for r in results)),
        "streams": per_stream, "ok": ok,
    }
    if args.pid is not None:
        out["rss_mib"] = {"before": r3(rss_before / 1024) if rss_before else None, "peak": r3(peak[0] / 1024),
                          "after": r3(rss_after / 1024) if rss_after else None}
        out["mem_per_stream_mib"] = r3((peak[0] - rss_before) / 1024 / n) if rss_before else None
    return out


def cmd_streams(args) -> None:
    try:
        import websockets  # noqa: F401
    except ImportError:
        sys.exit("serve_load.py streams needs the websockets package: use tests/clients/.venv/bin/python "
                 "(tests/clients/provision makes it)")
    paths = [Path(f) for f in args.files] or sorted(eval_dir("longform").glob("*.wav"))
    if not paths:
        sys.exit(f"no WAV files (looked in {eval_dir('longform')})")
    files = []
    for pth in paths:
        audio, rate = read_wav(pth)
        files.append((pth.name, audio, rate))
    ns = [int(x) for x in args.sweep.split(",")] if args.sweep else [args.n]
    results = []
    for j, n in enumerate(ns):
        if j:
            time.sleep(args.pause)
        out = asyncio.run(run_streams(args, n, files))
        results.append(out)
        print(json.dumps(out), flush=True)
    if args.sweep:
        ok_ns = [r["n"] for r in results if r["ok"]]
        print(json.dumps({"mode": "streams-sweep", "seconds": args.seconds or "whole file", "sweep": ns,
                          "ok_by_n": {str(r["n"]): r["ok"] for r in results},
                          "p95_by_n": {str(r["n"]): r["max_p95_s"] for r in results},
                          "mem_per_stream_mib_by_n": {str(r["n"]): r.get("mem_per_stream_mib") for r in results},
                          "largest_ok_n": max(ok_ns) if ok_ns else 0}), flush=True)


# ---------------------------------------------------------------- uploads

def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "serveload" + uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: audio/wav\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def cmd_uploads(args) -> None:
    if args.files:
        paths = [Path(f) for f in args.files]
    else:
        paths = sorted(eval_dir("longform").glob("*.wav")) + sorted(eval_dir("librispeech").glob("*.wav"))
    if not paths:
        sys.exit("no WAV files given or found under ../shared/eval/{longform,librispeech}")
    u = urllib.parse.urlsplit(args.base_url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    seconds = {p: wav_seconds(p) for p in paths}
    audio_s = sum(seconds.values())
    q: queue.Queue[Path] = queue.Queue()
    for p in paths:
        q.put(p)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    rtfs: list[float] = []

    def worker() -> None:
        while True:
            try:
                p = q.get_nowait()
            except queue.Empty:
                return
            body, ctype = multipart({"model": args.model, "response_format": "json"}, p.name, p.read_bytes())
            t = time.monotonic()
            try:
                conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
                conn.request("POST", "/v1/audio/transcriptions", body=body,
                             headers={"Content-Type": ctype, "Authorization": f"Bearer {args.api_key}"})
                r = conn.getresponse()
                data = r.read()
                conn.close()
                dt = time.monotonic() - t
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
                text = json.loads(data).get("text")
                if not isinstance(text, str):
                    raise RuntimeError(f"no text in {data[:200]!r}")
                with lock:
                    latencies.append(dt)
                    rtfs.append(dt / seconds[p])
            except Exception as e:  # noqa: BLE001 - reported in the summary
                with lock:
                    errors.append(f"{p.name}: {type(e).__name__}: {e}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t0
    print(json.dumps({
        "mode": "uploads", "n": args.n, "files": len(paths), "ok_files": len(latencies),
        "audio_s": round(audio_s, 2), "wall_s": round(wall, 2), "throughput": round(audio_s / wall, 2),
        "latency_p50_s": r3(pct(latencies, 50)), "latency_max_s": r3(max(latencies) if latencies else None),
        "request_rtf_p50": r3(pct(rtfs, 50)), "errors": len(errors), "first_errors": errors[:5],
        "ok": not errors,
    }), flush=True)
    if errors:
        sys.exit(1)


def main() -> None:
    p = argparse.ArgumentParser(description="Load benchmark for `steno serve` (see the top of this file).")
    p.add_argument("--base-url", required=True, help="the running server, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", default="unused", help="bearer key (the server's --api-key)")
    sub = p.add_subparsers(dest="mode", required=True)

    s = sub.add_parser("streams", help="N concurrent real-time WebSocket streams")
    s.add_argument("--n", type=int, default=1, help="concurrent streams (default 1)")
    s.add_argument("--sweep", default=None, help="comma-separated N values to run in turn, e.g. 1,2,4,6,8")
    s.add_argument("--seconds", type=float, default=None, help="audio seconds per stream (default: the whole file)")
    s.add_argument("--pid", type=int, default=None, help="the server's process id: sample its RSS")
    s.add_argument("--max-p95", type=float, default=1.0, help="per-stream p95 latency bound for ok (default 1.0 s)")
    s.add_argument("--offset-step", type=float, default=37.0,
                   help="start offset added per round of files so equal files do not run in lockstep (default 37 s)")
    s.add_argument("--pause", type=float, default=5.0, help="seconds between sweep runs (default 5)")
    s.add_argument("--settle", type=float, default=1.0, help="seconds after a run before the 'after' RSS (default 1)")
    s.add_argument("--finals-log", default=None,
                   help="append one JSON line per final event (stream, start, end, reason, latency, compute_ms, text)")
    s.add_argument("--tail-timeout", type=float, default=60.0,
                   help="seconds after the audio ends to wait for the close (default 60)")
    s.add_argument("files", nargs="*", help="16 kHz mono s16 WAVs (default: ../shared/eval/longform/*.wav)")
    s.set_defaults(func=cmd_streams)

    u = sub.add_parser("uploads", help="parallel HTTP uploads (throughput)")
    u.add_argument("--n", type=int, default=8, help="parallel uploads (default 8)")
    u.add_argument("--model", default="tiny.en", help="model field (default tiny.en)")
    u.add_argument("--timeout", type=float, default=600.0, help="per-request timeout (default 600 s)")
    u.add_argument("files", nargs="*",
                   help="WAV files (default: ../shared/eval/longform/*.wav and ../shared/eval/librispeech/*.wav)")
    u.set_defaults(func=cmd_uploads)

    args = p.parse_args()
    if getattr(args, "n", 1) < 1:
        p.error("--n must be >= 1")
    args.func(args)


if __name__ == "__main__":
    main()
