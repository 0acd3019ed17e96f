#!/usr/bin/env python3
"""Check `steno serve`'s live web page in a real browser: headless Chromium (Debian's
/usr/bin/chromium) driven by Playwright, with a fake microphone that plays a WAV file.

    tests/clients/.venv/bin/python tests/clients/browser_check.py --base-url http://127.0.0.1:PORT \
        [--api-key KEY] [--wav audio-samples/jfk.wav] [--timeout 60] [--screenshot out.png]

Opens BASE/?autostart=1 (plus &api_key=KEY when a key is given), which starts the microphone on
load; Chromium's fake capture device plays the WAV (looping it). Waits until the finals in
window.stenoState.finals, joined and normalised, contain "ask not what your country can do for
you", prints them, and checks the #finals element's text holds the phrase too. On a timeout prints
window.stenoState and the page's console messages, and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from _common import JFK_WAV, base_parser, normalise, preflight

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:
    sys.exit("browser_check.py: the playwright package is missing; run tests/clients/provision and use "
             "tests/clients/.venv/bin/python")

PHRASE = "ask not what your country can do for you"
CHROMIUM = "/usr/bin/chromium"

# The page-side twin of _common.normalise (lowercase, apostrophes dropped, punctuation -> spaces).
NORMALISE_JS = """
(t) => ' ' + String(t).toLowerCase().replace(/['\\u2019]/g, '').replace(/[^a-z0-9]+/g, ' ').trim() + ' '
"""
WAIT_JS = """
(phrase) => {
  const s = window.stenoState;
  if (!s || !Array.isArray(s.finals)) return false;
  const norm = %s;
  return norm(s.finals.join(' ')).includes(' ' + phrase + ' ');
}
""" % NORMALISE_JS.strip()


def chromium_args(wav: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream",          # grant the microphone without a prompt
        "--use-fake-device-for-media-stream",      # a fake capture device ...
        f"--use-file-for-fake-audio-capture={wav}",  # ... that plays this WAV (looped)
        "--autoplay-policy=no-user-gesture-required",  # let ?autostart=1 run an AudioContext
        # the sandbox has no network: keep Chromium from trying to reach one
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
        "--metrics-recording-only", "--disable-domain-reliability", "--no-proxy-server",
    ]


def main() -> None:
    p = base_parser(__doc__.strip().splitlines()[0])
    p.add_argument("--wav", type=Path, default=JFK_WAV,
                   help="16-bit WAV played by the fake microphone (default: audio-samples/jfk.wav)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help=f"seconds to wait for a final holding {PHRASE!r} (default 60)")
    p.add_argument("--chromium", default=CHROMIUM, help=f"browser executable (default {CHROMIUM})")
    p.add_argument("--screenshot", type=Path, default=None, help="write a PNG of the page at the end")
    p.add_argument("--headed", action="store_true", help="show the browser (needs a display)")
    args = p.parse_args()
    preflight(args.base_url, "browser_check")

    if not os.access(args.chromium, os.X_OK):
        sys.exit(f"browser_check.py: no browser at {args.chromium}; install Debian's with "
                 "`apt-get update && apt-get install chromium` (tests/clients/provision says how)")
    wav = args.wav.resolve()
    if not wav.is_file():
        sys.exit(f"browser_check.py: no WAV at {wav}")
    url = args.base_url.rstrip("/") + "/?autostart=1"
    if args.api_key != "unused":
        url += f"&api_key={args.api_key}"

    console: list[str] = []
    t_start = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, headless=not args.headed,
                                     args=chromium_args(wav))
        print(f"browser_check: Chromium {browser.version}, fake microphone {wav}, opening {url}", flush=True)
        try:
            context = browser.new_context()
            origin = args.base_url.rstrip("/")
            try:
                context.grant_permissions(["microphone"], origin=origin)
            except PlaywrightError:
                pass  # the fake-UI flag grants it anyway
            page = context.new_page()
            page.on("console", lambda m: console.append(f"[{time.monotonic() - t_start:6.2f}s] "
                                                        f"console.{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"[{time.monotonic() - t_start:6.2f}s] "
                                                          f"pageerror: {e}"))
            page.on("requestfailed", lambda r: console.append(
                f"[{time.monotonic() - t_start:6.2f}s] request failed: {r.url} {r.failure}"))
            page.on("response", lambda r: r.status >= 400 and console.append(
                f"[{time.monotonic() - t_start:6.2f}s] HTTP {r.status} for {r.url}"))
            page.on("websocket", lambda ws: console.append(
                f"[{time.monotonic() - t_start:6.2f}s] websocket opened: {ws.url}"))
            response = page.goto(url, wait_until="load", timeout=30_000)
            status = response.status if response else None
            if status != 200:
                fail(page, console, args, f"GET {url} answered {status}")
            try:
                page.wait_for_function(WAIT_JS, arg=PHRASE, timeout=args.timeout * 1000, polling=250)
            except PlaywrightTimeout:
                fail(page, console, args,
                     f"no final holding {PHRASE!r} within {args.timeout:.0f} s of loading the page")
            elapsed = time.monotonic() - t_start
            state = page.evaluate("() => window.stenoState")
            finals = state.get("finals") or []
            print(f"ok:   a final holds {PHRASE!r} after {elapsed:.1f} s; finals so far:")
            for f in finals:
                print(f"        {f!r}")
            finals_text = page.inner_text("#finals")
            if f" {PHRASE} " not in f" {normalise(finals_text)} ":
                fail(page, console, args, f"#finals does not show {PHRASE!r}: {finals_text!r}")
            print(f"ok:   #finals shows it ({len(finals_text.splitlines())} lines)")
            if args.screenshot:
                page.screenshot(path=str(args.screenshot), full_page=True)
                print(f"browser_check: screenshot -> {args.screenshot}")
        finally:
            browser.close()
    print("browser_check: all 2 checks passed")


def fail(page, console: list[str], args, message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    try:
        state = page.evaluate("() => window.stenoState === undefined ? 'undefined' : window.stenoState")
        print(f"window.stenoState = {json.dumps(state, indent=2)}", file=sys.stderr)
    except PlaywrightError as e:
        print(f"window.stenoState could not be read: {e}", file=sys.stderr)
    print(f"page console ({len(console)} messages):", file=sys.stderr)
    for line in console[-200:]:
        print(f"  {line}", file=sys.stderr)
    if args.screenshot:
        try:
            page.screenshot(path=str(args.screenshot), full_page=True)
            print(f"screenshot -> {args.screenshot}", file=sys.stderr)
        except PlaywrightError:
            pass
    sys.exit(1)


if __name__ == "__main__":
    main()
