//! Helpers shared by the fuzz targets.
//!
//! libfuzzer-sys installs a panic hook that aborts, so by default *every* panic is a crash,
//! even one that steno catches on purpose (`audio::no_panic` turns a panic inside a
//! third-party decoder into an error). [`report_caught_panics`] replaces that hook for
//! targets whose contract is "no panic escapes": a panic that escapes the call still aborts
//! (libfuzzer-sys's `catch_unwind` around the target does that), while one caught inside is
//! printed once per source location and its input saved as
//! `fuzz/artifacts/<target>/caught-panic-<hash>`, so it can be reported upstream.
//! `STENO_FUZZ_STRICT_PANICS=1` keeps libFuzzer's hook: every panic is then a crash.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Mutex;

thread_local! {
    /// Where the last panic on this thread happened (set by the hook).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Locations of caught panics already saved, and of panics already backtraced.
static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static TRACED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Install the reporting hook (call from the target's `init:`), unless strict mode is on.
pub fn report_caught_panics() {
    if std::env::var_os("STENO_FUZZ_STRICT_PANICS").is_some_and(|v| v != "0") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "<unknown>".into());
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        // Printed here because an escaping panic aborts right after unwinding (libfuzzer-sys's
        // catch_unwind), which loses the panic's stack; the backtrace once per location.
        let mut traced = TRACED.lock().unwrap_or_else(|e| e.into_inner());
        if traced.get_or_insert_with(HashSet::new).insert(location.clone()) {
            let trace = std::backtrace::Backtrace::force_capture();
            eprintln!("steno-fuzz: panic at {location}: {message}\n{trace}");
        } else {
            eprintln!("steno-fuzz: panic at {location}: {message}");
        }
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(location));
    }));
}

/// After the call under test returned normally: was a panic caught inside it? If so, and its
/// location is new, save `input` under the target's artifact folder and say so on stderr.
pub fn check_caught_panic(target: &str, input: &[u8]) {
    let Some(location) = LAST_PANIC.with(|p| p.borrow_mut().take()) else {
        return;
    };
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.get_or_insert_with(HashSet::new).insert(location.clone()) {
        return;
    }
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    let dir = artifact_dir(target);
    let path = dir.join(format!("caught-panic-{:016x}", h.finish()));
    let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    eprintln!(
        "steno-fuzz: CAUGHT PANIC (turned into an error inside steno) at {location}; input {}{}",
        path.display(),
        saved.err().map(|e| format!(" (not saved: {e})")).unwrap_or_default()
    );
}

/// `$STENO_FUZZ_ARTIFACTS/<target>`, default `fuzz/artifacts/<target>`.
fn artifact_dir(target: &str) -> PathBuf {
    std::env::var_os("STENO_FUZZ_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/artifacts")))
        .join(target)
}

/// Little-endian f32s of `bytes` (a trailing partial value is dropped).
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `STENO_FUZZ_VERBOSE=1`: targets print what each input gave (for checking seeds).
pub fn verbose() -> bool {
    static VERBOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("STENO_FUZZ_VERBOSE").is_some_and(|v| v != "0"))
}
