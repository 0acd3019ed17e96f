#!/usr/bin/env python3
"""Throw 200 malformed or aborted requests at `steno serve`, then check it is still healthy.

    tests/clients/.venv/bin/python tests/clients/abuse_check.py --base-url http://127.0.0.1:PORT \
        [--api-key KEY] [--count 200]

Standard library + websockets only. The requests cycle through these kinds, one after another:
  http_bad_multipart    POST /v1/audio/transcriptions, multipart with a broken body     -> 4xx + JSON error
  http_wrong_type       the same with Content-Type: application/json                    -> 4xx + JSON error
  http_no_file          multipart with a model but no file part                          -> 4xx + JSON error
  http_not_audio        multipart whose file is b"not audio"                             -> 4xx + JSON error
  http_bad_format       a real WAV with response_format=bogus                            -> 4xx + JSON error
  http_truncated        raw socket: Content-Length 100000, 1000 bytes sent, then closed  -> (no answer expected)
  ws_garbage_config     "{not json" as the config                                         -> error event + close
  ws_unknown_field      a config with an unknown field                                   -> error event + close
  ws_odd_bytes          a valid config, then a 3-byte binary frame for pcm_s16le         -> error event + close
  ws_bad_encoding       encoding "mp3"                                                   -> error event + close
  ws_zero_rate          sample_rate 0                                                    -> error event + close
  ws_audio_first        a binary frame before any config                                 -> error event + close
  ws_drop               a valid config, 0.5 s of audio, then the TCP connection dropped  -> (no answer expected)
  auth_missing          (only with --api-key) POST with no Authorization header          -> 401 + JSON error
A WebSocket refused as busy (HTTP 503 or close 1013, e.g. while dropped streams are still being
reaped) is retried for up to 5 s and counted as busy_retries. After all of them: GET /health must
answer 200 within 100 ms, and when its JSON has "streams", that must reach 0 within 5 s.
Prints one JSON summary line; exits 1 on any mismatch.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import socket
import sys
import time
import urllib.parse
import uuid
import wave

from _common import JFK_WAV, base_parser, preflight, read_pcm16_mono, ws_url

try:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus
except ImportError:
    sys.exit("abuse_check.py: the websockets package is missing; run tests/clients/provision and use "
             "tests/clients/.venv/bin/python")

TRANSCRIBE = "/v1/audio/transcriptions"
WS_TIMEOUT = 10.0
BUSY_RETRY_S = 5.0


class Mismatch(Exception):
    pass


class Busy(Exception):
    pass


def small_wav(seconds: float = 0.5) -> bytes:
    pcm, rate = read_pcm16_mono(JFK_WAV)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm[: int(seconds * rate) * 2])
    return buf.getvalue()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "abuse" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, ctype) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class Abuser:
    def __init__(self, args):
        self.args = args
        u = urllib.parse.urlsplit(args.base_url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.auth = {"Authorization": f"Bearer {args.api_key}"}
        self.wav = small_wav()
        pcm, self.rate = read_pcm16_mono(JFK_WAV)
        self.pcm = pcm[: int(0.5 * self.rate) * 2]
        self.busy_retries = 0

    # ---- HTTP ----
    def post(self, body: bytes, ctype: str, headers: dict | None = None) -> tuple[int, bytes, str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            h = {"Content-Type": ctype, "Content-Length": str(len(body)), **(self.auth if headers is None else headers)}
            conn.request("POST", TRANSCRIBE, body=body, headers=h)
            r = conn.getresponse()
            return r.status, r.read(), r.getheader("Content-Type", "")
        finally:
            conn.close()

    def expect_4xx(self, status: int, body: bytes, ctype: str, want: int | None = None) -> str:
        if not 400 <= status < 500 or (want is not None and status != want):
            raise Mismatch(f"status {status} (expected {want or '4xx'}): {body[:200]!r}")
        try:
            err = json.loads(body)["error"]
            assert isinstance(err["message"], str) and err["message"]
            for key in ("type", "param", "code"):
                assert key in err, key
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            raise Mismatch(f"status {status} but the body is not {{\"error\":{{message,type,param,code}}}} "
                           f"({type(e).__name__} {e}; Content-Type {ctype!r}): {body[:200]!r}")
        return f"{status}"

    def http_bad_multipart(self) -> str:
        boundary = "abuse" + uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ntiny.en\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                f"Content-Type: audio/wav\r\n\r\n").encode() + self.wav[:300] + b"\r\n--not-the-boundary--garbage"
        return self.expect_4xx(*self.post(body, f"multipart/form-data; boundary={boundary}"))

    def http_wrong_type(self) -> str:
        body = json.dumps({"model": "tiny.en", "file": "jfk.wav"}).encode()
        return self.expect_4xx(*self.post(body, "application/json"))

    def http_no_file(self) -> str:
        return self.expect_4xx(*self.post(*multipart({"model": "tiny.en", "response_format": "json"}, {})))

    def http_not_audio(self) -> str:
        return self.expect_4xx(*self.post(*multipart({"model": "tiny.en"},
                                                      {"file": ("x.wav", b"not audio", "audio/wav")})))

    def http_bad_format(self) -> str:
        return self.expect_4xx(*self.post(*multipart({"model": "tiny.en", "response_format": "bogus"},
                                                      {"file": ("a.wav", self.wav, "audio/wav")})))

    def auth_missing(self) -> str:
        body, ctype = multipart({"model": "tiny.en"}, {"file": ("a.wav", self.wav, "audio/wav")})
        return self.expect_4xx(*self.post(body, ctype, headers={}), want=401)

    def http_truncated(self) -> str:
        body, ctype = multipart({"model": "tiny.en"}, {"file": ("a.wav", self.wav * 10, "audio/wav")})
        head = (f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {self.args.api_key}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: 100000\r\n\r\n").encode()
        with socket.create_connection((self.host, self.port), timeout=10) as s:
            s.sendall(head + body[:1000])
        return "sent 1000 of 100000 bytes, closed"

    # ---- WebSocket ----
    async def ws_open(self):
        url = ws_url(self.args.base_url, "/v1/stream")
        deadline = time.monotonic() + BUSY_RETRY_S
        while True:
            try:
                ws = await connect(url, additional_headers=self.auth, proxy=None, open_timeout=WS_TIMEOUT,
                                   compression=None)
                return ws
            except InvalidStatus as e:
                if e.response.status_code != 503 or time.monotonic() > deadline:
                    raise Mismatch(f"WebSocket upgrade refused: HTTP {e.response.status_code}")
            self.busy_retries += 1
            await asyncio.sleep(0.2)

    async def ws_expect_error(self, *messages) -> str:
        """Sends the messages (str: a text frame, bytes: a binary frame, dict: a valid config, whose
        ready event is awaited), then expects an error event and the close."""
        deadline = time.monotonic() + BUSY_RETRY_S
        while True:
            ws = await self.ws_open()
            got_error, others = None, []
            try:
                try:
                    for m in messages:
                        if isinstance(m, dict):
                            await ws.send(json.dumps(m))
                            ready = json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT))
                            if ready.get("type") != "ready":
                                raise Mismatch(f"a valid config got {ready}, expected ready")
                        else:
                            await ws.send(m)
                except ConnectionClosed:
                    pass  # closed while sending: read what came before the close
                while True:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), WS_TIMEOUT)
                    except ConnectionClosed:
                        break
                    ev = json.loads(raw) if isinstance(raw, str) else {"type": "<binary>"}
                    if ev.get("type") == "error" and got_error is None:
                        got_error = ev
                    else:
                        others.append(ev.get("type"))
            except asyncio.TimeoutError:
                raise Mismatch(f"no close within {WS_TIMEOUT:.0f} s (error event {got_error}, other events {others})")
            finally:
                await ws.close()
            if ws.close_code == 1013 and time.monotonic() < deadline:
                self.busy_retries += 1
                await asyncio.sleep(0.2)
                continue
            if got_error is None:
                raise Mismatch(f"closed ({ws.close_code} {ws.close_reason!r}) without an error event; "
                               f"other events {others}")
            if not isinstance(got_error.get("message"), str) or not got_error["message"]:
                raise Mismatch(f"error event without a message: {got_error}")
            return f"error {got_error['message']!r}, close {ws.close_code}"

    def config(self, **over) -> dict:
        return {"type": "config", "sample_rate": self.rate, "encoding": "pcm_s16le", **over}

    async def ws_garbage_config(self):
        return await self.ws_expect_error("{not json")

    async def ws_unknown_field(self):
        return await self.ws_expect_error(json.dumps(self.config(bogus_field=1)))

    async def ws_odd_bytes(self):
        return await self.ws_expect_error(self.config(), b"\x01\x02\x03")

    async def ws_bad_encoding(self):
        return await self.ws_expect_error(json.dumps(self.config(encoding="mp3")))

    async def ws_zero_rate(self):
        return await self.ws_expect_error(json.dumps(self.config(sample_rate=0)))

    async def ws_audio_first(self):
        return await self.ws_expect_error(self.pcm[:3200])

    async def ws_drop(self):
        deadline = time.monotonic() + BUSY_RETRY_S
        while True:
            ws = await self.ws_open()
            try:
                await ws.send(json.dumps(self.config()))
                ready = json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT))
                break
            except ConnectionClosed:
                if ws.close_code != 1013 or time.monotonic() > deadline:
                    raise
                self.busy_retries += 1
                await asyncio.sleep(0.2)
        if ready.get("type") != "ready":
            ws.transport.abort()
            raise Mismatch(f"a valid config got {ready}, expected ready")
        for i in range(0, len(self.pcm), 3200):
            await ws.send(self.pcm[i:i + 3200])
        ws.transport.abort()  # drop the TCP connection: no close frame
        return "config + 0.5 s audio, connection dropped"


def health(abuser: Abuser) -> tuple[int | None, dict | None, float]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection(abuser.host, abuser.port, timeout=10)
    try:
        conn.request("GET", "/health")
        r = conn.getresponse()
        status, body = r.status, r.read()
    except (OSError, http.client.HTTPException) as e:
        status, body = None, str(e).encode()
    finally:
        conn.close()
    ms = (time.perf_counter() - t) * 1000
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    return status, doc, ms


def main() -> None:
    p = base_parser(__doc__.strip().splitlines()[0])
    p.add_argument("--count", type=int, default=200, help="number of malformed/aborted requests (default 200)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every request's outcome")
    args = p.parse_args()
    preflight(args.base_url, "abuse_check")

    a = Abuser(args)
    kinds = ["http_bad_multipart", "ws_garbage_config", "http_wrong_type", "ws_unknown_field", "http_truncated",
             "ws_odd_bytes", "http_no_file", "ws_drop", "ws_bad_encoding", "http_not_audio", "ws_zero_rate",
             "http_bad_format", "ws_audio_first"]
    if args.api_key != "unused":
        kinds.append("auth_missing")
    by_kind = {k: {"n": 0, "ok": 0} for k in kinds}
    failures: list[str] = []
    loop = asyncio.new_event_loop()
    t0 = time.monotonic()
    try:
        for i in range(args.count):
            kind = kinds[i % len(kinds)]
            fn = getattr(a, kind)
            by_kind[kind]["n"] += 1
            try:
                outcome = loop.run_until_complete(fn()) if asyncio.iscoroutinefunction(fn) else fn()
                by_kind[kind]["ok"] += 1
                if args.verbose:
                    print(f"  {i:3d} {kind}: {outcome}", flush=True)
            except (Mismatch, OSError, ConnectionClosed, asyncio.TimeoutError, http.client.HTTPException) as e:
                failures.append(f"#{i} {kind}: {type(e).__name__}: {e}")
                print(f"FAIL: #{i} {kind}: {type(e).__name__}: {e}", flush=True)
    finally:
        loop.close()
    abuse_s = time.monotonic() - t0

    status, doc, ms = health(a)
    health_ok = status == 200 and ms <= 100.0
    if not health_ok:
        failures.append(f"GET /health after the abuse: status {status} in {ms:.1f} ms (want 200 within 100 ms)")
    streams = doc.get("streams") if isinstance(doc, dict) else None
    streams_ms = None
    if isinstance(doc, dict) and "streams" in doc:
        t = time.monotonic()
        while streams != 0 and time.monotonic() - t < 5.0:
            time.sleep(0.1)
            _, d, _ = health(a)
            streams = d.get("streams") if isinstance(d, dict) else None
        streams_ms = round((time.monotonic() - t) * 1000)
        if streams != 0:
            failures.append(f"GET /health still reports streams={streams} 5 s after the abuse")
    summary = {
        "check": "abuse", "requests": args.count, "abuse_s": round(abuse_s, 2), "by_kind": by_kind,
        "busy_retries": a.busy_retries, "health_status": status, "health_ms": round(ms, 1),
        "health_streams": streams if isinstance(doc, dict) and "streams" in doc else "not reported",
        "streams_zero_after_ms": streams_ms, "failures": len(failures), "first_failures": failures[:10],
        "ok": not failures,
    }
    print(json.dumps(summary))
    if failures:
        print(f"abuse_check: {len(failures)} failures", file=sys.stderr)
        sys.exit(1)
    print(f"abuse_check: all {args.count} requests answered as expected; /health 200 in {ms:.1f} ms")


if __name__ == "__main__":
    main()
