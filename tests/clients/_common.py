"""Shared helpers of the real-client checks in tests/clients/ (standard library only).

Each check script imports this module from its own folder (Python puts a script's folder first on
sys.path), so the scripts run as `python tests/clients/NAME.py --base-url http://127.0.0.1:PORT`.
"""

from __future__ import annotations

import argparse
import array
import re
import sys
import traceback
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JFK_WAV = REPO / "audio-samples" / "jfk.wav"
REALTIME_RATE = 24_000  # OpenAI Realtime pcm16
JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
# The key phrases of the JFK reference; a transcript passes when all are present (normalised).
JFK_KEY_PHRASES = (
    "fellow americans",
    "ask not what your country can do for you",
    "ask what you can do for your country",
)

_APOSTROPHES = re.compile(r"['\u2019]")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    """Word-level normalisation: lowercase, apostrophes dropped, other punctuation -> spaces,
    whitespace collapsed. "Americans, ask" -> "americans ask"."""
    text = _APOSTROPHES.sub("", text.lower())
    return " ".join(_NON_WORD.sub(" ", text).split())


def missing_phrases(text: str, phrases=JFK_KEY_PHRASES) -> list[str]:
    """The phrases not found (as whole words) in the normalised text."""
    padded = f" {normalise(text)} "
    return [p for p in phrases if f" {p} " not in padded]


def wav_info(path: Path) -> tuple[int, int, int, float]:
    """(channels, sample width in bytes, sample rate, duration in seconds) of a WAV file."""
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes() / w.getframerate()


def read_pcm16_mono(path: Path) -> tuple[bytes, int]:
    """The raw little-endian s16 mono samples of a WAV file and its sample rate; exits when the file
    is not 16-bit mono PCM."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getcomptype() != "NONE":
            sys.exit(f"{path}: needs a 16-bit mono PCM WAV (has {w.getnchannels()} channels, "
                     f"{8 * w.getsampwidth()}-bit, {w.getcomptype()})")
        return w.readframes(w.getnframes()), w.getframerate()


def read_24k(path: Path, seconds: float | None = None) -> bytes:
    """A 16-bit mono WAV as 24 kHz pcm16 (OpenAI Realtime's input), by linear interpolation."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            sys.exit(f"{path}: needs 16-bit mono PCM")
        rate = w.getframerate()
        frames = w.getnframes() if seconds is None else min(w.getnframes(), int(seconds * rate))
        src = array.array("h", w.readframes(frames))
    if sys.byteorder == "big":
        src.byteswap()
    if rate == REALTIME_RATE:
        out = src
    else:
        n = len(src) * REALTIME_RATE // rate
        out = array.array("h", bytes(2 * n))
        step = rate / REALTIME_RATE
        last = len(src) - 1
        for i in range(n):
            x = i * step
            j = int(x)
            frac = x - j
            a = src[j]
            b = src[j + 1] if j < last else a
            out[i] = int(round(a + (b - a) * frac))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--base-url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", default="unused",
                   help="bearer key (the server's --api-key; any value when it has none; default: unused)")
    return p


def ws_url(base_url: str, path: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + path
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + path
    return base + path


def preflight(base_url: str, prog: str, timeout: float = 10.0) -> dict:
    """GET /health once; exits with a clear message when the server is not there or not ready."""
    import json
    import urllib.error
    import urllib.request
    url = base_url.rstrip("/") + "/health"
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is local
        with opener.open(url, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"{prog}: GET {url} answered {e.code}: the server is not ready")
    except (OSError, ValueError) as e:
        sys.exit(f"{prog}: cannot reach the server at {url}: {e}")
    try:
        return json.loads(body)
    except ValueError:
        sys.exit(f"{prog}: GET {url} did not answer JSON: {body[:100]!r}")


class CheckFailed(Exception):
    """A mismatch between what the server did and what the check expects."""


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


class Checks:
    """Runs named checks, prints `ok:`/`FAIL:` per check, and exits non-zero at the end on any failure."""

    def __init__(self, prog: str):
        self.prog = prog
        self.failures: list[str] = []
        self.passed = 0

    def run(self, name: str, fn, *args, **kwargs):
        try:
            detail = fn(*args, **kwargs)
        except CheckFailed as e:
            self.failures.append(f"{name}: {e}")
            print(f"FAIL: {name}: {e}", flush=True)
            return None
        except Exception as e:  # an unexpected exception is a failure too, with its traceback
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
            print(f"FAIL: {name}: unexpected {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=4)
            return None
        self.passed += 1
        print(f"ok:   {name}" + (f": {detail}" if isinstance(detail, str) and detail else ""), flush=True)
        return detail

    def check(self, ok: bool, name: str) -> bool:
        """A check already evaluated: `ok` decides."""
        if ok:
            self.passed += 1
            print(f"ok:   {name}", flush=True)
        else:
            self.failures.append(name)
            print(f"FAIL: {name}", flush=True)
        return ok

    def finish(self) -> None:
        total = self.passed + len(self.failures)
        if self.failures:
            print(f"{self.prog}: {len(self.failures)} of {total} checks FAILED:", file=sys.stderr)
            for f in self.failures:
                print(f"  - {f}", file=sys.stderr)
            sys.exit(1)
        print(f"{self.prog}: all {total} checks passed")
