//! ONNX Runtime: where its shared library is, loading it once per process, and building
//! sessions on the chosen execution provider.
//!
//! `ort` is built with `load-dynamic`, so nothing links against ONNX Runtime at build time; the
//! library is `dlopen`ed here. Search order (first hit wins):
//! 1. [`RuntimeConfig::library`] (the CLI's `--ort-library`),
//! 2. the `ORT_DYLIB_PATH` environment variable,
//! 3. `<models dir>/runtime-gpu/libonnxruntime.so` when the device is `cuda` or `auto`,
//! 4. `<models dir>/runtime/libonnxruntime.so` (what `models/provision` installs),
//! 5. `libonnxruntime.so` next to the executable.
//!
//! A process can hold only one ONNX Runtime library, so the first [`Runtime::get`] decides
//! which. Every call gets a [`Runtime`] of its own over that library's one environment, built
//! as it asked (device, threads, arena: two engines in one process can differ), or an error:
//! a different library, or a device the library cannot run. `cuda` never falls back to the
//! CPU; only `auto` does, and logs it. A library that fails to load is an error naming it
//! (not a shared library, not ONNX Runtime, or older than the API `ort` is built for).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::error::{Error, Result};

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// NVIDIA CUDA; an error (never a silent CPU fallback) when it cannot run.
    Cuda,
    /// CUDA when the CUDA provider loads, else CPU (logged).
    Auto,
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "auto" => Ok(Device::Auto),
            other => Err(Error::config(
                "device",
                format!("`{other}` is not one of cpu, cuda, auto"),
            )),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Auto => "auto",
        })
    }
}

/// How ONNX Runtime is loaded and how sessions run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Execution provider. Default: CPU.
    pub device: Device,
    /// Intra-op threads per session; 0 = one per available core. Default: 0.
    pub threads: usize,
    /// Explicit path to `libonnxruntime.so`; `None` = search (see the module doc).
    pub library: Option<PathBuf>,
    /// Directory holding `runtime/` and the model folders. Default: [`default_models_dir`].
    pub models_dir: PathBuf,
    /// ONNX Runtime's CPU memory arena, one for all CPU sessions of the process (see
    /// `shared_arena` in this module's source): faster (a longform file: 10.2–10.9 s against
    /// 11.7–11.8 s without), but it keeps its high-water mark for the process's life (`steno
    /// serve --no-memory-arena` trades the speed for memory that returns to its baseline).
    /// Default: true.
    pub memory_arena: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            device: Device::Cpu,
            threads: 0,
            library: None,
            models_dir: default_models_dir(),
            memory_arena: true,
        }
    }
}

impl RuntimeConfig {
    /// Check values that do not need the library.
    pub fn validate(&self) -> Result<()> {
        if self.threads > 1024 {
            return Err(Error::config(
                "threads",
                format!("{} is not a sensible thread count", self.threads),
            ));
        }
        Ok(())
    }

    /// Threads each session uses.
    pub fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

/// `$STENO_MODELS_DIR`, else the `models/` folder of the source tree steno was built from.
pub fn default_models_dir() -> PathBuf {
    match std::env::var_os("STENO_MODELS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models")),
    }
}

/// The loaded ONNX Runtime: its environment and the provider sessions get.
pub struct Runtime {
    env: Environment,
    library: PathBuf,
    device: Device,
    /// Sessions try the CUDA provider (cleared for `auto` once it fails to start).
    cuda: AtomicBool,
    threads: usize,
    memory_arena: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.library)
            .field("device", &self.device)
            .field("cuda", &self.uses_cuda())
            .field("threads", &self.threads)
            .field("memory_arena", &self.memory_arena)
            .finish()
    }
}

/// The library loaded in this process and its environment (ONNX Runtime loads once).
static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Reserved for the shared CPU arena's first region ([`shared_arena`]). Only the pages a run
/// touches become resident, so a size above the largest window's needs costs address space, not
/// memory: tiny.en's 30 s window uses about 40 MiB of it.
const SHARED_ARENA_FIRST_REGION_BYTES: usize = 64 << 20;

/// Whether [`shared_arena`] has registered the process's CPU arena (once per environment, and
/// the process has one).
static SHARED_ARENA: Mutex<bool> = Mutex::new(false);

/// Register one CPU memory arena on the environment for every CPU session that keeps an arena
/// (`session.use_env_allocators`), instead of one arena per session.
///
/// Why: each arena keeps its own high-water mark for the process's life, so with one per
/// session the encoder's 30 s activations (freed when the encoder returns) and the decoder's
/// buffers added up instead of sharing pages. A first region large enough for a whole window
/// also keeps the arena from growing in doubling steps whose regions stay partly used. Peak RSS
/// of `steno transcribe` (`benches/rss_vs_length.py --minutes 1,20 --variant V -- --beam-size
/// 1`, tiny.en, a 2-core AVX2 EPYC, 2026-12-02), before → after: int8 150.6 / 157.3 MiB →
/// 134.7 / 138.5 MiB at 1 / 20 minutes, fp32 239.9 / 243.6 → 221.5 / 222.9 MiB. Transcripts are
/// the same (LibriSpeech int8 greedy: 77 of 77), and so is the speed.
fn shared_arena(env: &Environment) -> Result<()> {
    use ort::AsPointer;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};

    let mut registered = SHARED_ARENA.lock().unwrap_or_else(|p| p.into_inner());
    if *registered {
        return Ok(());
    }
    let context = "registering the shared CPU memory arena";
    let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)
        .map_err(Error::ort(context))?;
    let api = ort::api();
    let keys = [c"arena_extend_strategy".as_ptr(), c"initial_chunk_size_bytes".as_ptr()];
    // Extend strategy 0: the next power of two (ONNX Runtime's default) past the first region.
    let values: [usize; 2] = [0, SHARED_ARENA_FIRST_REGION_BYTES];
    let mut config: *mut ort::sys::OrtArenaCfg = std::ptr::null_mut();
    // SAFETY: `keys` and `values` hold `keys.len()` entries and outlive the call; `config` is
    // released below whatever registration does, which copies what it needs.
    unsafe {
        ort::Error::result_from_status((api.CreateArenaCfgV2)(
            keys.as_ptr(),
            values.as_ptr(),
            keys.len(),
            &mut config,
        ))
        .map_err(Error::ort(context))?;
        let status = (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), config);
        (api.ReleaseArenaCfg)(config);
        ort::Error::result_from_status(status).map_err(Error::ort(context))?;
    }
    *registered = true;
    Ok(())
}

impl Runtime {
    /// Load ONNX Runtime (once per process) and return it with `config`'s device, threads and
    /// arena: each caller gets sessions built as it asked, whatever earlier callers asked.
    pub fn get(config: &RuntimeConfig) -> Result<Arc<Runtime>> {
        config.validate()?;
        let library = find_library(config)?;
        let env = {
            // A poisoned lock only means another thread panicked while loading; the Option is
            // intact.
            let mut slot = LOADED.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some((loaded, _)) if !same_file(loaded, &library) => {
                    return Err(Error::config(
                        "ort_library",
                        format!(
                            "ONNX Runtime is already loaded from {} in this process; cannot switch to {}",
                            loaded.display(),
                            library.display()
                        ),
                    ));
                }
                Some((_, env)) => env.clone(),
                None => {
                    tracing::debug!(library = %library.display(), "loading ONNX Runtime");
                    let env = ort::init_from(&library)
                        .map_err(|e| Error::RuntimeLoad {
                            path: library.clone(),
                            reason: load_error_reason(&e),
                        })?
                        .with_name("steno")
                        .build()
                        .map_err(|e| Error::RuntimeLoad {
                            path: library.clone(),
                            reason: e.to_string(),
                        })?;
                    *slot = Some((library.clone(), env.clone()));
                    env
                }
            }
        };
        let cuda = match config.device {
            Device::Cpu => false,
            Device::Cuda => {
                check_cuda(&library).map_err(|reason| Error::DeviceUnavailable {
                    device: "cuda".into(),
                    reason,
                })?;
                true
            }
            Device::Auto => match check_cuda(&library) {
                Ok(()) => true,
                Err(reason) => {
                    tracing::info!(%reason, "device auto: using the CPU");
                    false
                }
            },
        };
        Ok(Arc::new(Runtime {
            env,
            library,
            device: config.device,
            cuda: AtomicBool::new(cuda),
            threads: config.effective_threads(),
            memory_arena: config.memory_arena,
        }))
    }

    /// The library this process loaded.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Whether sessions run on CUDA.
    pub fn uses_cuda(&self) -> bool {
        self.cuda.load(Ordering::Relaxed)
    }

    /// Build a session for the graph at `path`.
    pub(crate) fn session(&self, path: &Path) -> Result<Session> {
        if self.uses_cuda() {
            match self.build_session(path, true, self.threads) {
                Ok(session) => return Ok(session),
                // `auto` means CUDA when it runs: the provider loads only now (its CUDA/cuDNN
                // libraries may be missing), so this is where auto falls back.
                Err(Error::DeviceUnavailable { reason, .. }) if self.device == Device::Auto => {
                    tracing::warn!(%reason, "device auto: using the CPU");
                    self.cuda.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        self.build_session(path, false, self.threads)
    }

    /// Build a session for the graph at `path` on the CPU provider with `threads` intra-op
    /// threads, whatever the device: for small graphs run once per few milliseconds of audio (the
    /// VAD), where a GPU's per-call launches and copies cost more than the compute.
    pub(crate) fn cpu_session(&self, path: &Path, threads: usize) -> Result<Session> {
        self.build_session(path, false, threads)
    }

    fn build_session(&self, path: &Path, cuda: bool, threads: usize) -> Result<Session> {
        let context = || format!("loading {}", path.display());
        let mut builder = Session::builder(&self.env)
            .map_err(Error::ort(context()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| Error::ort(context())(e.into()))?
            .with_intra_threads(threads)
            .map_err(|e| Error::ort(context())(e.into()))?
            // Window lengths vary from call to call (dynamic encoder, growing token counts):
            // a memory pattern planned per input shape is never reused and only grows memory.
            .with_memory_pattern(false)
            .map_err(|e| Error::ort(context())(e.into()))?
            // Intra-op threads spin while a run lasts and sleep as soon as it returns
            // (`force_spinning_stop`). A run is a chain of small operators (a decoder step is
            // ~200 of them in about 2 ms), and a sleeping thread woken for each costs a futex
            // wake-up and a cold start per operator; spinning between runs too takes cores from
            // the process's other threads (short clips got slower, live streams starved).
            // tiny.en int8 greedy, 2 threads, `steno eval` wall seconds on a 2-core Xeon
            // (2026-12-03), asleep / spin always / spin during runs: long-form 7.2–9.4 /
            // 6.6–8.8 / 6.6–7.4, LibriSpeech 15.7–17.6 / 20.6–20.9 / 14.8–18.2, hifitts
            // 14.0–16.5 / 18.9–20.7 / 13.0–14.4 (one int8 decoder step, asleep / spinning: 2.28
            // / 1.80 ms); fp32 beam 5, asleep / during runs: long-form 14.6–19.1 / 13.6–17.6,
            // LibriSpeech 33.7–39.8 / 31.0–33.8. 8 server streams (`benches/serve_load.py`),
            // end-of-speech → final p50 / p95: asleep 0.58–0.62 / 1.12–1.27 s, during runs
            // 0.44–0.58 / 0.88–1.07 s. (Spinning was off from 2026-12-01: always-spinning
            // threads had starved 4 server streams, end-of-speech → final p95 0.98 → 1.74 s.)
            .with_intra_op_spinning(true)
            .map_err(|e| Error::ort(context())(e.into()))?
            .with_config_entry("session.force_spinning_stop", "1")
            .map_err(|e| Error::ort(context())(e.into()))?;
        if !cuda && !self.memory_arena {
            builder = builder
                .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
                .map_err(|e| Error::ort(context())(e.into()))?;
        }
        if !cuda && self.memory_arena {
            shared_arena(&self.env)?;
            builder = builder
                .with_config_entry("session.use_env_allocators", "1")
                .map_err(|e| Error::ort(context())(e.into()))?;
        }
        if cuda {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| Error::DeviceUnavailable {
                    device: "cuda".into(),
                    // ONNX Runtime's message spans lines; its first line names the missing piece.
                    reason: format!(
                        "the CUDA execution provider failed to start: {}",
                        e.to_string().lines().next().unwrap_or_default().trim()
                    ),
                })?;
        }
        builder.commit_from_file(path).map_err(|e| {
            // A graph whose weights are external data (`<file>.data`, steno's exports) fails
            // without them with a message about paths; say which file is missing.
            let mut data = path.as_os_str().to_owned();
            data.push(".data");
            let data = PathBuf::from(data);
            let message = e.to_string();
            if message.contains("xternal data") && !data.is_file() {
                Error::ModelMissing {
                    dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    problem: format!(
                        "{} is missing ({} keeps its weights there)",
                        data.display(),
                        path.display()
                    ),
                    fix: "run `models/provision`, or copy every file of the model folder".into(),
                }
            } else {
                Error::ort(context())(e)
            }
        })
    }
}

/// Why `ort` refused a library, in words. (Never through `ort::Error`: making one calls into
/// ONNX Runtime, which is just what failed to load, and `ort` then panics.)
fn load_error_reason(e: &ort::LoadDynamicError) -> String {
    use ort::LoadDynamicError as E;
    match e {
        // libloading says only "dlopen failed"; dlerror's text is its source.
        E::Dlopen { error, .. } => match std::error::Error::source(error) {
            Some(why) => format!("not a loadable shared library ({why})"),
            None => format!("not a loadable shared library ({error})"),
        },
        E::MissingApi { .. } => "not an ONNX Runtime library (it does not export `OrtGetApiBase`)".into(),
        E::BadVersion { version_str, .. } => format!(
            "it is ONNX Runtime {version_str}; steno needs 1.{}.x or newer (run `models/provision`)",
            ort::MINOR_VERSION
        ),
        other => other.to_string(),
    }
}

/// Can this library run the CUDA provider? The CPU wheel's library has no CUDA provider and the
/// GPU wheel's needs `libonnxruntime_providers_cuda.so` beside it plus CUDA/cuDNN on the loader path.
fn check_cuda(library: &Path) -> std::result::Result<(), String> {
    let dir = library.parent().unwrap_or(Path::new("."));
    let provider = dir.join("libonnxruntime_providers_cuda.so");
    if !provider.exists() {
        return Err(format!(
            "{} has no CUDA provider ({} is missing); run `models/provision --gpu` (needs an NVIDIA driver with CUDA 13 and cuDNN 9 libraries on the loader path) or use --device cpu",
            library.display(),
            provider.display()
        ));
    }
    match <ort::ep::CUDA as ort::ep::ExecutionProvider>::is_available() {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{} reports the CUDA provider as unavailable",
            library.display()
        )),
        Err(e) => Err(format!("cannot query the CUDA provider: {e}")),
    }
}

/// Whether two paths name the same file (a relative path or a symlink to the loaded library
/// is that library, not a request to switch).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

/// Find `libonnxruntime.so` (see the module doc for the order).
fn find_library(config: &RuntimeConfig) -> Result<PathBuf> {
    if let Some(explicit) = &config.library {
        return if explicit.is_file() {
            Ok(explicit.clone())
        } else {
            Err(Error::RuntimeMissing {
                searched: vec![explicit.clone()],
            })
        };
    }
    if let Some(env) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(env);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::RuntimeMissing { searched: vec![path] })
        };
    }
    let mut candidates = Vec::new();
    if config.device != Device::Cpu {
        candidates.push(config.models_dir.join("runtime-gpu/libonnxruntime.so"));
    }
    candidates.push(config.models_dir.join("runtime/libonnxruntime.so"));
    if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        candidates.push(dir.join("libonnxruntime.so"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(Error::RuntimeMissing { searched: candidates })
}
