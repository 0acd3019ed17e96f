#!/usr/bin/env python3
"""Two `steno serve` replicas behind a load balancer; one is killed mid-run.

    tests/clients/.venv/bin/python tests/clients/lb_check.py --base-url http://127.0.0.1:LB_PORT \
        --replica http://127.0.0.1:PORT_A --replica http://127.0.0.1:PORT_B --kill-pid PID_OF_B

Through the balancer (the base URL) it runs 4 live WebSocket streams of audio-samples/jfk.wav at
real-time pace and, at the same time, 20 uploads (openai package, 2 at a time). 3 s in, it kills
the second replica with SIGKILL (a crash, not a shutdown). Before the kill and at the end it
reads each live replica's /metrics.

Checks:
- every stream ends (none hangs): each one on the surviving replica with all its finals (closed
  normally, its text running from "fellow americans" to "...your country"), each one on the
  killed replica closed by the balancer; at least one of each kind;
- every upload ends within 30 s: a correct transcript, or an error answered fast (a balancer 5xx);
  at least 15 of the 20 succeed (the balancer retries connection failures on the other replica);
- /metrics of each replica is Prometheus text whose streams gauge, batch_job count and audio
  seconds show its share of the work.
Prints a JSON summary (requests per replica, what the clients saw); exits 1 on any failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import urllib.request

from _common import JFK_WAV, Checks, base_parser, missing_phrases, normalise, read_pcm16_mono, ws_url

try:
    import openai
    from openai import OpenAI
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
except ImportError as e:
    sys.exit(f"lb_check.py: {e}; run tests/clients/provision and use tests/clients/.venv/bin/python")

STREAMS = 4
UPLOADS = 20
KILL_AFTER_S = 3.0
CHUNK_S = 0.1


def metrics(url: str) -> dict[str, float]:
    """The unlabelled samples and the batch_job count of a replica's /metrics."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url.rstrip("/") + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


async def stream(base_url: str, pcm: bytes, rate: int, index: int) -> dict:
    chunk = int(rate * CHUNK_S) * 2
    finals, started = [], time.monotonic()
    outcome = "closed"
    try:
        async with connect(ws_url(base_url, "/v1/stream"), open_timeout=10, close_timeout=5) as ws:
            await ws.send(json.dumps({"type": "config", "sample_rate": rate, "encoding": "pcm_s16le"}))

            async def reader():
                async for message in ws:
                    event = json.loads(message)
                    if event.get("type") == "final":
                        finals.append(event["text"])

            reading = asyncio.create_task(reader())
            t0 = time.monotonic()
            try:
                for k in range(0, len(pcm), chunk):
                    await ws.send(pcm[k:k + chunk])
                    await asyncio.sleep(max(0.0, t0 + (k // chunk + 1) * CHUNK_S - time.monotonic()))
                await ws.send(json.dumps({"type": "end"}))
            except ConnectionClosed:
                pass
            try:
                await asyncio.wait_for(reading, timeout=30)
            except ConnectionClosed:
                pass
            outcome = f"close {ws.close_code}"
    except (ConnectionClosed, OSError) as e:
        outcome = f"{type(e).__name__}"
    return {"stream": index, "outcome": outcome, "finals": finals, "seconds": round(time.monotonic() - started, 2)}


def upload(client: OpenAI, index: int) -> dict:
    started = time.monotonic()
    try:
        with open(JFK_WAV, "rb") as f:
            text = client.audio.transcriptions.create(model="tiny.en", file=f, response_format="text")
        ok = not missing_phrases(str(text))
        return {"upload": index, "ok": ok, "seconds": round(time.monotonic() - started, 2),
                "text": str(text)[:60]}
    except Exception as e:  # the balancer's 5xx or a dropped connection: must be fast
        return {"upload": index, "ok": False, "seconds": round(time.monotonic() - started, 2),
                "error": f"{type(e).__name__}: {str(e)[:120]}"}


async def uploads(base_url: str) -> list[dict]:
    client = OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=30,
                    http_client=openai.DefaultHttpxClient(trust_env=False))
    results = []
    sem = asyncio.Semaphore(2)

    async def one(i):
        async with sem:
            results.append(await asyncio.to_thread(upload, client, i))

    await asyncio.gather(*(one(i) for i in range(UPLOADS)))
    return sorted(results, key=lambda r: r["upload"])


async def run(args, checks: Checks) -> dict:
    pcm, rate = read_pcm16_mono(JFK_WAV)
    survivor, victim = args.replica
    streams = [asyncio.create_task(stream(args.base_url, pcm, rate, i)) for i in range(STREAMS)]
    posting = asyncio.create_task(uploads(args.base_url))
    await asyncio.sleep(KILL_AFTER_S)
    before = {url: await asyncio.to_thread(metrics, url) for url in args.replica}
    os.kill(args.kill_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stream_results = await asyncio.gather(*streams)
    upload_results = await posting
    after = await asyncio.to_thread(metrics, survivor)
    return {"before_kill": before, "survivor_after": after, "streams": stream_results,
            "uploads": upload_results, "run_after_kill_s": round(time.monotonic() - killed_at, 2)}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--replica", action="append", required=True,
                        help="a replica's own URL (twice: the survivor, then the one to kill)")
    parser.add_argument("--kill-pid", type=int, required=True, help="process id of the second replica")
    args = parser.parse_args()
    if len(args.replica) != 2:
        sys.exit("lb_check.py: give --replica twice")
    checks = Checks("lb_check.py")
    result = asyncio.run(run(args, checks))
    survivor, victim = args.replica

    # All its finals: closed normally after `end`, with the first and the last utterance there
    # (the exact wording is the engine's business, checked elsewhere; this is about the balancer).
    def whole(s):
        text = normalise(" ".join(s["finals"]))
        return s["outcome"] == "close 1000" and "fellow americans" in text and text.endswith("your country")

    complete = [s for s in result["streams"] if whole(s)]
    cut = [s for s in result["streams"] if s not in complete]
    checks.check(len(complete) >= 1, f"streams on the survivor finish with all their finals ({len(complete)})")
    checks.check(len(cut) >= 1, f"streams on the killed replica are cut ({len(cut)}): {[s['outcome'] for s in cut]}")
    checks.check(all(s["seconds"] < 45 for s in result["streams"]), "no stream hangs")
    ok = [u for u in result["uploads"] if u["ok"]]
    failed = [u for u in result["uploads"] if not u["ok"]]
    checks.check(len(result["uploads"]) == UPLOADS, "every upload ended")
    checks.check(len(ok) >= UPLOADS - 5, f"{len(ok)} of {UPLOADS} uploads succeed")
    checks.check(all(u["seconds"] < 30 for u in result["uploads"]), "no upload hangs")
    checks.check(all(u["seconds"] < 10 for u in failed), f"failed uploads fail fast: {failed}")

    b_survivor, b_victim = result["before_kill"][survivor], result["before_kill"][victim]
    for name, m in (("survivor", b_survivor), ("victim", b_victim)):
        checks.check("steno_streams" in m and "steno_audio_seconds_total" in m, f"{name} /metrics has the gauges")
    checks.check(b_survivor["steno_streams"] + b_victim["steno_streams"] == STREAMS,
                 f"the streams are split across the replicas: {b_survivor['steno_streams']:.0f} + "
                 f"{b_victim['steno_streams']:.0f}")
    checks.check(b_survivor["steno_streams"] >= 1 and b_victim["steno_streams"] >= 1, "each replica has streams")
    served = result["survivor_after"].get('steno_decode_seconds_count{kind="batch_job"}', 0)
    checks.check(served >= 1, f"the survivor's /metrics counts the uploads it served ({served:.0f})")
    summary = {
        "streams_per_replica_before_kill": {"survivor": b_survivor["steno_streams"], "killed": b_victim["steno_streams"]},
        "uploads_served_by_survivor": served,
        "uploads_served_by_killed_before_kill": b_victim.get('steno_decode_seconds_count{kind="batch_job"}', 0),
        "uploads_ok": len(ok), "uploads_failed": [{k: u[k] for k in ("upload", "seconds", "error")} for u in failed],
        "streams": [{k: s[k] for k in ("stream", "outcome", "seconds")} | {"finals": len(s["finals"])}
                    for s in result["streams"]],
        "run_after_kill_s": result["run_after_kill_s"],
        "survivor_stream_texts": [" ".join(s["finals"]) for s in result["streams"] if s["finals"]],
    }
    print(json.dumps(summary, indent=1))
    checks.finish()


if __name__ == "__main__":
    main()
