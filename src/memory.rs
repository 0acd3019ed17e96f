//! Giving freed heap memory back to the operating system: large blocks mapped on their own
//! ([`map_large_blocks`], batch memory that does not grow with a file's length) and free pages
//! trimmed after bursts of work ([`release_free_heap`], the server).
//!
//! glibc's malloc keeps what a process frees: it trims an arena only at its top and past a
//! threshold, and each thread that allocated keeps an arena of its own. After a burst of work
//! on many threads (a server's streams and uploads) most of that memory is free but still
//! resident. [`release_free_heap`] asks glibc to return every free page (`malloc_trim(0)`
//! releases free pages inside the heap too, not only at its top).
//!
//! Measured: `steno serve`, 8 streams then idle, ONNX Runtime's arena off: 576 MiB without
//! it, 262 MiB with it (fresh: 161 MiB). Not used between batch windows: there, with ONNX
//! Runtime's arena on, it measured no difference (tiny.en int8, 10-minute file: 389 MiB peak
//! with it, 384 without), since the windows' buffers live in ONNX Runtime's arena.

/// Blocks of at least this many bytes get pages of their own ([`map_large_blocks`]).
pub const LARGE_BLOCK_BYTES: usize = 64 * 1024;

/// Serve every allocation of [`LARGE_BLOCK_BYTES`] or more from pages of its own (`mmap`),
/// returned to the OS when freed (glibc only; elsewhere a no-op; skipped when the user set
/// `MALLOC_MMAP_THRESHOLD_`, which glibc reads itself). Process-wide, so the binary calls it
/// once at start; a program embedding the library decides for itself.
///
/// Why: glibc's threshold starts at 128 KiB and rises to the size of each mapped block freed
/// (up to 32 MiB), so after the first windows the large per-window buffers (log-mel, audio
/// chunks, tensors copied out of ONNX Runtime) come from the heap, and freed between windows of
/// other sizes they fragment it: peak RSS grew with the file. Measured (tiny.en int8 greedy,
/// `benches/rss_vs_length.py --minutes 1,20 --variant int8 -- --beam-size 1`): 177 / 242 MiB
/// for 1 / 20 minutes without, 161 / 187 with 64 KiB (194 MiB at 20 minutes with 256 KiB, no
/// change with 1 MiB); long-form eval RTFx 51–53 either way.
pub fn map_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets a glibc tunable; it is called before any other thread runs.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES as libc::c_int);
        }
    }
}

/// Returns the free pages of the heap to the OS (glibc only; elsewhere a no-op).
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
