//! The library's one error type. Every variant names what failed (a file, a tensor, a config
//! field) and keeps its source, so the CLI can print one line that a user can act on. The
//! library never prints and never exits; `main` decides what an error means for the process.

use std::path::PathBuf;

use crate::audio::AudioError;

/// What the library returns on failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The audio could not be read or decoded (the message names the file).
    #[error(transparent)]
    Audio(#[from] AudioError),

    /// No ONNX Runtime shared library was found in any place steno looks.
    #[error(
        "ONNX Runtime shared library not found (looked at: {}); run `models/provision` to install it, or set ORT_DYLIB_PATH",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    RuntimeMissing { searched: Vec<PathBuf> },

    /// The ONNX Runtime library exists but could not be loaded: not a shared library, not
    /// ONNX Runtime, or a version older than the API steno is built against.
    #[error("{}: cannot load ONNX Runtime: {reason}", path.display())]
    RuntimeLoad { path: PathBuf, reason: String },

    /// The requested execution provider cannot run here.
    #[error("device {device}: {reason}")]
    DeviceUnavailable { device: String, reason: String },

    /// A model directory lacks the files a Whisper export needs.
    #[error("{}: {problem}; {fix}", dir.display())]
    ModelMissing { dir: PathBuf, problem: String, fix: String },

    /// A model's graphs do not follow the tensor contract (names, dtypes, ranks).
    #[error("{}: tensor `{tensor}`: {problem}", path.display())]
    Contract {
        path: PathBuf,
        tensor: String,
        problem: String,
    },

    /// A model's metadata is missing a key or has a value that cannot be used.
    #[error("{}: metadata `{key}`: {problem}", path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        problem: String,
    },

    /// A data file (the token table `*-tokens.txt`, a `refs.tsv`) is malformed or incomplete;
    /// `line` 0 means the file as a whole.
    #[error("{}:{line}: {problem}", path.display())]
    Format {
        path: PathBuf,
        line: usize,
        problem: String,
    },

    /// ONNX Runtime failed while loading or running a graph.
    #[error("ONNX Runtime: {context}: {source}")]
    Ort {
        context: String,
        #[source]
        source: ort::Error,
    },

    /// A configuration value is out of range or inconsistent with the model.
    #[error("invalid setting `{field}`: {problem}")]
    Config { field: &'static str, problem: String },

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The inference worker thread stopped (it panicked or its channel closed).
    #[error("inference worker stopped: {0}")]
    Worker(String),
}

/// Short for `std::result::Result<T, steno::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an ONNX Runtime error with what we were doing.
    pub(crate) fn ort(context: impl Into<String>) -> impl FnOnce(ort::Error) -> Error {
        let context = context.into();
        move |source| Error::Ort { context, source }
    }

    /// A config error for `field`.
    pub(crate) fn config(field: &'static str, problem: impl Into<String>) -> Error {
        Error::Config {
            field,
            problem: problem.into(),
        }
    }
}
