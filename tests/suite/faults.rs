//! Faults a user or a machine causes, each asserted to end in a clear one-line error that names
//! the file or path at fault and a non-zero exit (or, for a closed stdout, a quiet success),
//! never a panic. Model folders are symlinked copies in temporary folders (a damaged file is a
//! new file there); `models/` itself is never written.
//!
//! | test | asserts |
//! |---|---|
//! | `model_folder_missing_a_file` | no encoder, decoder, token table, or int8 variant: exit 2, one line naming the folder and the missing file |
//! | `truncated_or_corrupt_onnx_names_the_file` | encoder or decoder cut short, empty, or random bytes: exit 2, one line naming that `.onnx` file |
//! | `truncated_token_table_names_the_file` | token table cut mid-line or at a line end: exit 2, naming `tokens.txt` |
//! | `layouts_swapped_between_folders` | steno and sherpa-onnx files mixed (either way): exit 2, naming the decoder and the tensor it lacks |
//! | `onnx_runtime_missing_or_wrong` | `ORT_DYLIB_PATH`/`--ort-library` at nothing, a text file, another library (libz, libc), an older ONNX Runtime (a stub built with `cc` that reports 1.16.3: no old release is available offline): exit 2, one line naming the path and why |
//! | `cuda_is_an_error_naming_cuda` | `steno transcribe --device cuda` without a CUDA runtime: exit 2, one line naming cuda and the missing provider, no transcript |
//! | `runtime_per_configuration` | (own process) engines with 1, 3, then 1 threads: each runs exactly its own intra-op threads (counted in `/proc`), both transcribe |
//! | `cuda_after_a_cpu_engine_is_an_error` | (own process) after a CPU engine: `--device cuda` is `DeviceUnavailable` naming cuda, never a CPU runtime; `auto` says it runs on the CPU; the CPU engine still works |
//! | `output_dir_that_is_a_file` | `--output-dir` names a regular file: exit 2, naming it |
//! | `read_only_output_dir` | `--output-dir` on a read-only filesystem (or mode 0555 when not root): exit 1, one line per file naming the output, nothing left there |
//! | `full_disk_leaves_no_partial_output` | a full tmpfs: exit 1, one line naming the output and "No space left", no output or temporary file left |
//! | `closed_stdout_is_a_quiet_exit` | `steno transcribe … \| head -1`: exit 0 and nothing on stderr |
//! | `sigint_keeps_finished_outputs_whole` | SIGINT once the first output exists: exit 130, every output there equals a full run's, no temporary file |
//!
//! The read-only and full-disk tests mount a tmpfs (CI runs as root). Where mounting is refused
//! they fail, saying why; `STENO_TESTS_NO_MOUNT=1` turns them into a printed `SKIPPED` for
//! machines that cannot mount (an explicit choice: nothing skips by itself).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steno::runtime::Runtime;
use steno::{Device, Engine, EngineConfig, Error, ModelConfig, ModelVariant, RuntimeConfig};

use super::common::*;

/// A folder of symlinks to every file of `models/whisper-<model>` (damage = replace a link).
fn model_copy(model: &str, parent: &Path, name: &str) -> PathBuf {
    let src = model_dir(model);
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// Replace the link `dir/name` by a real file holding `bytes`.
fn replace(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, bytes).unwrap();
}

/// The first `fraction` of the provisioned file `model/name`.
fn prefix_of(model: &str, name: &str, fraction: f64) -> Vec<u8> {
    let bytes = std::fs::read(model_dir(model).join(name)).unwrap();
    bytes[..(bytes.len() as f64 * fraction) as usize].to_vec()
}

/// `steno transcribe audio-samples/jfk.wav --model <dir>` plus `extra`.
fn transcribe_with_model(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "transcribe",
        "audio-samples/jfk.wav",
        "--model",
        dir.to_str().unwrap(),
        "--threads",
        "1",
        "--beam-size",
        "1",
    ];
    args.extend_from_slice(extra);
    steno(&args)
}

/// Exit `code`, nothing on stdout, exactly one stderr line `steno: error: …` containing every
/// needle (the common runner already refuses "panicked").
fn assert_one_line(run: &Run, code: i32, needles: &[&str]) {
    assert_eq!(run.code, Some(code), "exit code; stderr: {}", run.stderr);
    assert_eq!(run.stdout, "", "no transcript");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", run.stderr);
    assert!(lines[0].starts_with("steno: error: "), "{}", lines[0]);
    for needle in needles {
        assert!(lines[0].contains(needle), "`{needle}` not in: {}", lines[0]);
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn model_folder_missing_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (file, expect) in [
        ("tiny.en-encoder.onnx", "no `*-encoder.onnx` file"),
        ("tiny.en-decoder.onnx", "tiny.en-decoder.onnx is missing"),
        ("tiny.en-tokens.txt", "tiny.en-tokens.txt is missing"),
        // The weights, external data beside each graph.
        ("tiny.en-decoder.onnx.data", "tiny.en-decoder.onnx.data is missing"),
        ("tiny.en-encoder.onnx.data", "tiny.en-encoder.onnx.data is missing"),
    ] {
        let dir = model_copy("tiny.en", tmp.path(), file);
        std::fs::remove_file(dir.join(file)).unwrap();
        let run = transcribe_with_model(&dir, &[]);
        assert_one_line(&run, 2, &[dir.to_str().unwrap(), expect]);
    }
    // The sherpa-onnx folder has no int8 weights.
    let dir = model_copy("tiny.en-sherpa", tmp.path(), "sherpa");
    let run = transcribe_with_model(&dir, &["--model-variant", "int8"]);
    assert_one_line(&run, 2, &[dir.to_str().unwrap(), "no `*-encoder.int8.onnx` file"]);
}

#[test]
fn truncated_or_corrupt_onnx_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let random: Vec<u8> = white_noise(0.5, 4096).iter().map(|x| (x * 1e4) as u8).collect();
    for (case, file, bytes) in [
        (
            "enc-half",
            "tiny.en-encoder.onnx",
            prefix_of("tiny.en", "tiny.en-encoder.onnx", 0.5),
        ),
        ("enc-empty", "tiny.en-encoder.onnx", Vec::new()),
        ("enc-random", "tiny.en-encoder.onnx", random),
        (
            "dec-half",
            "tiny.en-decoder.onnx",
            prefix_of("tiny.en", "tiny.en-decoder.onnx", 0.5),
        ),
        (
            "dec-head",
            "tiny.en-decoder.onnx",
            prefix_of("tiny.en", "tiny.en-decoder.onnx", 0.001),
        ),
    ] {
        let dir = model_copy("tiny.en", tmp.path(), case);
        replace(&dir, file, &bytes);
        let run = transcribe_with_model(&dir, &[]);
        assert_one_line(&run, 2, &[dir.join(file).to_str().unwrap()]);
    }
    // A truncated weights file is reported against the graph that reads it.
    for (case, graph) in [
        ("enc-data-half", "tiny.en-encoder.onnx"),
        ("dec-data-half", "tiny.en-decoder.onnx"),
    ] {
        let dir = model_copy("tiny.en", tmp.path(), case);
        let data = format!("{graph}.data");
        replace(&dir, &data, &prefix_of("tiny.en", &data, 0.5));
        let run = transcribe_with_model(&dir, &[]);
        assert_one_line(&run, 2, &[dir.join(graph).to_str().unwrap()]);
    }
}

#[test]
fn truncated_token_table_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let table = prefix_of("tiny.en", "tiny.en-tokens.txt", 0.5);
    let at_line_end = table.len() - table.iter().rev().position(|&b| b == b'\n').unwrap();
    for (case, bytes) in [("mid-line", &table[..]), ("line-end", &table[..at_line_end])] {
        let dir = model_copy("tiny.en", tmp.path(), case);
        replace(&dir, "tiny.en-tokens.txt", bytes);
        let run = transcribe_with_model(&dir, &[]);
        assert_one_line(&run, 2, &[dir.join("tiny.en-tokens.txt").to_str().unwrap()]);
    }
}

#[test]
fn layouts_swapped_between_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let steno_dir = model_dir("tiny.en");
    let sherpa_dir = model_dir("tiny.en-sherpa");
    // (folder copied, file replaced, taken from, tensor the decoder lacks)
    for (case, base, file, from, tensor) in [
        (
            "steno-with-sherpa-decoder",
            "tiny.en",
            "tiny.en-decoder.onnx",
            &sherpa_dir,
            "past_k_0",
        ),
        (
            "sherpa-with-steno-decoder",
            "tiny.en-sherpa",
            "tiny.en-decoder.onnx",
            &steno_dir,
            "in_n_layer_self_k_cache",
        ),
        (
            "steno-with-sherpa-encoder",
            "tiny.en",
            "tiny.en-encoder.onnx",
            &sherpa_dir,
            "in_n_layer_self_k_cache",
        ),
    ] {
        let dir = model_copy(base, tmp.path(), case);
        // The graph and, where it has one, its weights file.
        for name in [file.to_string(), format!("{file}.data")] {
            let _ = std::fs::remove_file(dir.join(&name));
            if from.join(&name).exists() {
                std::os::unix::fs::symlink(from.join(&name), dir.join(&name)).unwrap();
            }
        }
        let run = transcribe_with_model(&dir, &[]);
        let decoder = dir.join("tiny.en-decoder.onnx");
        assert_one_line(
            &run,
            2,
            &[decoder.to_str().unwrap(), &format!("tensor `{tensor}`: missing")],
        );
    }
}

/// A shared library that looks like ONNX Runtime 1.16.3 to a loader: `OrtGetApiBase` whose
/// version string is 1.16.3 and whose `GetApi` knows no newer API (what a real 1.16 does).
fn old_onnxruntime_stub(dir: &Path) -> PathBuf {
    let source = dir.join("old_ort.c");
    std::fs::write(
        &source,
        r#"#include <stddef.h>
typedef struct { const void *(*GetApi)(unsigned); const char *(*GetVersionString)(void); } OrtApiBase;
static const void *get_api(unsigned version) { return version <= 16 ? (const void *)1 : NULL; }
static const char *version(void) { return "1.16.3"; }
static const OrtApiBase base = { get_api, version };
const OrtApiBase *OrtGetApiBase(void) { return &base; }
"#,
    )
    .unwrap();
    let lib = dir.join("libonnxruntime.so.1.16.3");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .output()
        .expect("`cc` runs (it links every Rust test binary, so it is installed)");
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
    lib
}

/// A shared library that is not ONNX Runtime: libz where it is installed, and always this
/// process's own libc (from /proc/self/maps).
fn other_libraries() -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/libz.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.is_file())
    .take(1)
    .collect();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
        .expect("libc in /proc/self/maps");
    libs.push(PathBuf::from(libc));
    libs
}

#[test]
fn onnx_runtime_missing_or_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("libonnxruntime.so");
    std::fs::write(&text, "not a library\n").unwrap();
    let mut cases: Vec<(PathBuf, &str)> = vec![
        (tmp.path().join("nothing/libonnxruntime.so"), "not found"),
        (tmp.path().to_path_buf(), "not found"),
        (text, "not a loadable shared library"),
        (
            old_onnxruntime_stub(tmp.path()),
            "it is ONNX Runtime 1.16.3; steno needs 1.31.x or newer",
        ),
    ];
    for lib in other_libraries() {
        cases.push((lib, "not an ONNX Runtime library"));
    }
    for (lib, why) in &cases {
        let path = lib.to_str().unwrap();
        let run = steno_with_env(
            &["transcribe", "audio-samples/jfk.wav", "--threads", "1"],
            &[("ORT_DYLIB_PATH", path)],
        );
        assert_one_line(&run, 2, &[path, why]);
        // The explicit flag takes the same road.
        let run = steno(&["transcribe", "audio-samples/jfk.wav", "--ort-library", path]);
        assert_one_line(&run, 2, &[path, why]);
    }
}

#[test]
fn cuda_is_an_error_naming_cuda() {
    let gpu = root().join("models/runtime-gpu/libonnxruntime_providers_cuda.so");
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "--device",
        "cuda",
        "--threads",
        "1",
    ]);
    if gpu.is_file() {
        // A CUDA runtime is provisioned: it runs on CUDA, or says why not; never a CPU transcript
        // (`Runtime::session` has no fallback for `cuda`: see `cuda_after_a_cpu_engine_is_an_error`).
        if run.code != Some(0) {
            assert_one_line(&run, 2, &["device cuda"]);
        }
        return;
    }
    assert_one_line(
        &run,
        2,
        &["device cuda", "no CUDA provider", "libonnxruntime_providers_cuda.so"],
    );
}

/// Run the `#[ignore]`d test `name` of this binary alone in a new process (ONNX Runtime and
/// thread counts are per process; the other tests share this one).
fn in_own_process(name: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("suite::faults::{name}"),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STENO_FAULTS_CHILD", "1")
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("child ran: ") && stdout.contains("1 passed"),
        "{name} did not run:\n{stdout}\n{stderr}"
    );
}

/// Only meaningful in its own process: the parent test sets the variable.
fn is_child() -> bool {
    std::env::var_os("STENO_FAULTS_CHILD").is_some()
}

fn tiny_config(runtime: RuntimeConfig) -> EngineConfig {
    EngineConfig {
        model: ModelConfig {
            dir: model_dir("tiny.en"),
            variant: ModelVariant::Fp32,
            provision_hint: "models/provision --model tiny.en".into(),
        },
        runtime,
        options: greedy(),
    }
}

/// Threads of this process that ONNX Runtime or an engine started: the engine's worker is
/// `steno-inference`, and the intra-op threads its sessions create inherit the name.
fn inference_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "steno-inference")
        .count()
}

#[test]
fn runtime_per_configuration() {
    in_own_process("runtime_per_configuration_child");
}

#[test]
#[ignore = "run by runtime_per_configuration in a process of its own"]
fn runtime_per_configuration_child() {
    if !is_child() {
        return;
    }
    let start = |threads: usize| {
        let before = inference_threads();
        let engine = Engine::start(tiny_config(RuntimeConfig {
            threads,
            ..RuntimeConfig::default()
        }))
        .expect("engine starts");
        assert_eq!(engine.runtime_config().threads, threads);
        (engine, inference_threads() - before)
    };
    // Each engine: its worker, plus threads - 1 pool threads for each of its two sessions.
    let (one, one_threads) = start(1);
    let (three, three_threads) = start(3);
    let (one_again, one_again_threads) = start(1);
    assert_eq!(
        (one_threads, three_threads, one_again_threads),
        (1, 1 + 2 * 2, 1),
        "threads started by engines asking for 1, 3 and 1 intra-op threads"
    );
    for engine in [&one, &three, &one_again] {
        let transcript = engine.transcribe_file(&sample("jfk.wav")).unwrap();
        assert_eq!(normalizer().normalize(&transcript.text()), JFK_NORMALIZED);
    }
    println!("child ran: {one_threads} / {three_threads} / {one_again_threads} threads");
}

#[test]
fn cuda_after_a_cpu_engine_is_an_error() {
    in_own_process("cuda_after_a_cpu_engine_is_an_error_child");
}

#[test]
#[ignore = "run by cuda_after_a_cpu_engine_is_an_error in a process of its own"]
fn cuda_after_a_cpu_engine_is_an_error_child() {
    if !is_child() {
        return;
    }
    // The CPU library explicitly, and a models folder without runtime-gpu/: the same on a
    // machine with a GPU runtime provisioned.
    let empty_models = tempfile::tempdir().unwrap();
    let cpu_library = root().join("models/runtime/libonnxruntime.so");
    let config = |device| RuntimeConfig {
        device,
        threads: 1,
        library: Some(cpu_library.clone()),
        models_dir: empty_models.path().to_path_buf(),
        ..RuntimeConfig::default()
    };
    let cpu = Engine::start(tiny_config(config(Device::Cpu))).expect("CPU engine");

    match Runtime::get(&config(Device::Cuda)) {
        Err(Error::DeviceUnavailable { device, reason }) => {
            assert_eq!(device, "cuda");
            assert!(reason.contains("no CUDA provider"), "{reason}");
        }
        Err(other) => panic!("cuda: expected DeviceUnavailable, got {other}"),
        Ok(runtime) => panic!("cuda: got a runtime ({runtime:?}) from a library without CUDA"),
    }
    let err = Engine::start(tiny_config(config(Device::Cuda))).expect_err("no CUDA here");
    let message = err.to_string();
    assert!(
        message.starts_with("device cuda: ") && message.contains("no CUDA provider"),
        "{message}"
    );

    // `auto` may run on the CPU, and says so.
    let auto = Runtime::get(&config(Device::Auto)).expect("auto");
    assert!(!auto.uses_cuda(), "{auto:?}");

    // The CPU engine is untouched by the refused requests.
    let transcript = cpu.transcribe_file(&sample("jfk.wav")).unwrap();
    assert_eq!(normalizer().normalize(&transcript.text()), JFK_NORMALIZED);
    println!("child ran: {message}");
}

#[test]
fn output_dir_that_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("out");
    std::fs::write(&file, "x").unwrap();
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "--output-dir",
        file.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert_one_line(&run, 2, &[file.to_str().unwrap(), "cannot create output folder"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

/// A tmpfs mounted at a new temporary folder, unmounted on drop; `None` when the machine does
/// not allow mounting and `STENO_TESTS_NO_MOUNT=1` says that is expected (else the test fails,
/// naming the reason).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str, test: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output();
        let refused = match out {
            Ok(out) if out.status.success() => return Some(Tmpfs { dir }),
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        if std::env::var("STENO_TESTS_NO_MOUNT").as_deref() == Ok("1") {
            println!("SKIPPED {test}: mount -t tmpfs refused ({refused}); STENO_TESTS_NO_MOUNT=1");
            return None;
        }
        panic!(
            "{test} needs a tmpfs mount (as root, or with CAP_SYS_ADMIN) and it was refused: {refused}. \
             On a machine that cannot mount, set STENO_TESTS_NO_MOUNT=1 to skip it explicitly."
        );
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn read_only_output_dir() {
    // As root, mode bits do not stop a write: a read-only filesystem does.
    let probe = tempfile::tempdir().unwrap();
    let ro = probe.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let mounted;
    let dir = if std::fs::write(ro.join("probe"), "").is_err() {
        ro.clone()
    } else {
        mounted = match Tmpfs::mount("ro,size=64k", "read_only_output_dir") {
            Some(m) => m,
            None => return,
        };
        mounted.path().to_path_buf()
    };
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "audio-samples/jfk.wav",
        "--output-dir",
        dir.to_str().unwrap(),
        "--threads",
        "1",
        "--beam-size",
        "1",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let target = dir.join("jfk.txt");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "two files, one line each, then the count: {}",
        run.stderr
    );
    for line in &lines[..2] {
        assert!(
            line.starts_with(&format!("steno: error: {}: cannot create", target.display())),
            "{line}"
        );
    }
    assert_eq!(lines[2], "steno: 2 of 2 files failed");
    assert!(names_in(&dir).iter().all(|n| n == "probe"), "{:?}", names_in(&dir));
}

#[test]
fn full_disk_leaves_no_partial_output() {
    let Some(disk) = Tmpfs::mount("size=64k", "full_disk_leaves_no_partial_output") else {
        return;
    };
    // Fill it: what is left is less than a transcript.
    let filler = disk.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "-f",
        "json",
        "--output-dir",
        disk.path().to_str().unwrap(),
        "--threads",
        "1",
        "--beam-size",
        "1",
    ]);
    let target = disk.path().join("jfk.json");
    assert_one_line(
        &run,
        1,
        &[
            &format!("{}: cannot write", target.display()),
            "No space left on device",
        ],
    );
    assert_eq!(
        names_in(disk.path()),
        ["filler"],
        "no partial output, no temporary file"
    );
}

#[test]
fn closed_stdout_is_a_quiet_exit() {
    let jfk = sample("jfk.wav");
    let mut child = Command::new(env!("CARGO_BIN_EXE_steno"))
        .arg("transcribe")
        .args([&jfk, &jfk, &jfk, &jfk])
        .args(["--threads", "1", "--beam-size", "1"])
        .env_remove("STENO_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: read one line, close the pipe.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.starts_with("==> "), "{first}");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "quiet");
}

#[test]
fn sigint_keeps_finished_outputs_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, out) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir(&inputs).unwrap();
    const COPIES: usize = 8;
    for i in 0..COPIES {
        std::fs::copy(sample("jfk.wav"), inputs.join(format!("jfk-{i}.wav"))).unwrap();
    }
    let args = ["--threads", "1", "--beam-size", "5"];
    let full = steno(&[&["transcribe", "audio-samples/jfk.wav"][..], &args].concat());
    assert_eq!(full.code, Some(0), "{}", full.stderr);

    let mut child = Command::new(env!("CARGO_BIN_EXE_steno"))
        .arg("transcribe")
        .arg(&inputs)
        .arg("--output-dir")
        .arg(&out)
        .args(args)
        .env_remove("STENO_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !out.is_dir() || !names_in(&out).iter().any(|n| n.ends_with(".txt")) {
        assert!(Instant::now() < deadline, "no output within 2 minutes");
        assert!(
            child.try_wait().unwrap().is_none(),
            "steno ended before its first output"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out_run = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out_run.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out_run.status.code(),
        Some(130),
        "exit code after SIGINT; stderr: {stderr}"
    );
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("steno: interrupted: ") && l.ends_with(&format!(" of {COPIES} files done"))),
        "{stderr}"
    );

    let names = names_in(&out);
    assert!(!names.is_empty() && names.len() < COPIES, "stopped part-way: {names:?}");
    for name in &names {
        assert!(
            name.starts_with("jfk-") && name.ends_with(".txt"),
            "only whole outputs: {names:?}"
        );
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        assert_eq!(text, full.stdout, "{name} equals a full run's output");
    }
}
