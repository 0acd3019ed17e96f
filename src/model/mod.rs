//! The model boundary: which files make a Whisper export, what its metadata says, and the
//! encoder/decoder graphs behind ONNX Runtime sessions.
//!
//! Two layouts load (see [`encoder`] and [`decoder`] for the exact tensor contracts):
//! - steno's own export (`models/export_whisper.py`): per-layer head-major caches and cross K/V
//!   (no copies per decoding step; one row of cross K/V serves every beam), dynamic mel and
//!   cache lengths, last-position logits, and a `cross_qk` output for word timestamps; weights
//!   in `<graph>.onnx.data` beside each graph, and a decoder that takes the tokens' embedding
//!   rows, which `token_rows.rs` reads from that file (one resident copy of the embedding);
//! - sherpa-onnx's export (`scripts/whisper/export-onnx.py`), unchanged: stacked `[L, N, T, D]`
//!   tensors, 3000 mel frames, a 448-position cache, logits for every position.
//!
//! The layout is read off the graphs' tensor names at load, never guessed from file names.
//! Dimensions and special token ids come from the encoder's `metadata_props`.
//! [`WhisperModel`] is the weights (sessions, read-only data); everything that changes while
//! transcribing (caches, mel, transcript) lives with the caller.

pub mod decoder;
pub mod encoder;
mod token_rows;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::runtime::Runtime;
use crate::tokenizer::Tokenizer;
pub use decoder::{Decoder, KvCache};
pub use encoder::{CrossKv, Encoder};

/// The tensor contract of an export (see [`encoder`] and [`decoder`] for the tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// steno's export: per-layer, head-major caches and cross K/V; dynamic lengths.
    Steno,
    /// sherpa-onnx's export: stacked `[L, N, T, D]` tensors, 30 s windows, 448-position cache.
    Sherpa,
}

impl Layout {
    /// Decide from the encoder's outputs.
    fn detect(path: &Path, outputs: &[ort::value::Outlet]) -> Result<Layout> {
        let has = |name: &str| outputs.iter().any(|o| o.name() == name);
        if has("cross_k_0") {
            Ok(Layout::Steno)
        } else if has("n_layer_cross_k") {
            Ok(Layout::Sherpa)
        } else {
            let names: Vec<&str> = outputs.iter().map(|o| o.name()).collect();
            Err(Error::Contract {
                path: path.to_path_buf(),
                tensor: "cross_k_0".into(),
                problem: format!(
                    "missing, and so is `n_layer_cross_k`: not a Whisper encoder export (outputs: {})",
                    names.join(", ")
                ),
            })
        }
    }

    /// Names of the cross-attention K/V tensors (encoder outputs = decoder inputs), keys first.
    pub(crate) fn cross_names(self, n_layer: usize) -> Vec<String> {
        match self {
            Layout::Steno => (0..n_layer)
                .map(|i| format!("cross_k_{i}"))
                .chain((0..n_layer).map(|i| format!("cross_v_{i}")))
                .collect(),
            Layout::Sherpa => vec!["n_layer_cross_k".into(), "n_layer_cross_v".into()],
        }
    }
}

/// Which weights of an export to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelVariant {
    /// `*-encoder.onnx`, `*-decoder.onnx`.
    #[default]
    Fp32,
    /// `*-encoder.int8.onnx`, `*-decoder.int8.onnx` (int8 weights; steno's export: MatMulNBits
    /// blocks of 32).
    Int8,
}

impl std::str::FromStr for ModelVariant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" | "float32" => Ok(ModelVariant::Fp32),
            "int8" => Ok(ModelVariant::Int8),
            other => Err(Error::config(
                "model_variant",
                format!("`{other}` is not one of fp32, int8"),
            )),
        }
    }
}

impl std::fmt::Display for ModelVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelVariant::Fp32 => "fp32",
            ModelVariant::Int8 => "int8",
        })
    }
}

/// The three files of a Whisper export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub encoder: PathBuf,
    pub decoder: PathBuf,
    pub tokens: PathBuf,
    pub variant: ModelVariant,
}

impl ModelFiles {
    /// Find `<prefix>-encoder[.int8].onnx`, `<prefix>-decoder[.int8].onnx` and `<prefix>-tokens.txt`
    /// in `dir`. `provision_hint` is the command that creates the folder, for the error message.
    pub fn discover(dir: &Path, variant: ModelVariant, provision_hint: &str) -> Result<ModelFiles> {
        let missing = |problem: String| Error::ModelMissing {
            dir: dir.to_path_buf(),
            problem,
            fix: format!("run `{provision_hint}`"),
        };
        let entries = std::fs::read_dir(dir).map_err(|e| missing(format!("cannot read the model folder ({e})")))?;
        let suffix = match variant {
            ModelVariant::Fp32 => "-encoder.onnx",
            ModelVariant::Int8 => "-encoder.int8.onnx",
        };
        let mut prefixes: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(suffix))
                    .map(str::to_owned)
            })
            .collect();
        prefixes.sort();
        let prefix = match prefixes.as_slice() {
            [one] => one.clone(),
            [] => return Err(missing(format!("no `*{suffix}` file"))),
            many => {
                return Err(missing(format!(
                    "several exports ({}); keep one per folder",
                    many.join(", ")
                )));
            }
        };
        let (enc, dec) = match variant {
            ModelVariant::Fp32 => ("encoder.onnx", "decoder.onnx"),
            ModelVariant::Int8 => ("encoder.int8.onnx", "decoder.int8.onnx"),
        };
        let files = ModelFiles {
            dir: dir.to_path_buf(),
            encoder: dir.join(format!("{prefix}-{enc}")),
            decoder: dir.join(format!("{prefix}-{dec}")),
            tokens: dir.join(format!("{prefix}-tokens.txt")),
            variant,
        };
        for f in [&files.decoder, &files.tokens] {
            if !f.is_file() {
                return Err(missing(format!("{} is missing", f.display())));
            }
        }
        Ok(files)
    }
}

/// A language the model knows: its code (`en`) and token id (`<|en|>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Language {
    pub code: String,
    pub token: u32,
}

/// Special token ids, from the model's metadata (never hard-coded per model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub eot: u32,
    pub sot: u32,
    pub transcribe: u32,
    pub translate: u32,
    pub sot_prev: u32,
    pub sot_lm: u32,
    pub no_speech: u32,
    pub no_timestamps: u32,
    /// `<|0.00|>`; every later id is 0.02 s more.
    pub timestamp_begin: u32,
    /// The token of " " (suppressed as a first token).
    pub blank: u32,
    pub languages: Vec<Language>,
    /// Symbols Whisper never lets the model emit (its default `suppress_tokens`).
    pub non_speech: Vec<u32>,
}

impl SpecialTokens {
    /// The token of a language code, if the model has it.
    pub fn language(&self, code: &str) -> Option<u32> {
        self.languages.iter().find(|l| l.code == code).map(|l| l.token)
    }

    /// Is `token` a timestamp?
    pub fn is_timestamp(&self, token: u32) -> bool {
        token >= self.timestamp_begin
    }
}

/// tiny.en's special tokens (shared/facts: end-of-text 50256 … first timestamp 50363), for
/// unit tests of the decoding rules.
#[cfg(test)]
pub(crate) fn tiny_en_tokens() -> SpecialTokens {
    SpecialTokens {
        eot: 50256,
        sot: 50257,
        translate: 50357,
        transcribe: 50358,
        sot_lm: 50359,
        sot_prev: 50360,
        no_speech: 50361,
        no_timestamps: 50362,
        timestamp_begin: 50363,
        blank: 220,
        languages: vec![Language {
            code: "en".into(),
            token: 50258,
        }],
        // The first of Whisper's non-speech symbols.
        non_speech: vec![1, 2, 7, 8, 9, 10, 14, 25],
    }
}

/// Dimensions of the network, from the model's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// e.g. `whisper-tiny.en`.
    pub model_type: String,
    pub n_mels: usize,
    /// Encoder positions for 30 s (1500): the longest window, in encoder frames.
    pub n_audio_ctx: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_vocab: usize,
    pub multilingual: bool,
    /// (decoder layer, head) pairs whose cross attention follows the audio (word timestamps).
    pub alignment_heads: Vec<(usize, usize)>,
}

impl ModelSpec {
    /// Mel frames in the longest window (3000 = 30 s).
    pub fn max_mel_frames(&self) -> usize {
        self.n_audio_ctx * 2
    }

    /// Width of one decoder attention head.
    pub fn head_dim(&self) -> usize {
        self.n_text_state / self.n_text_head.max(1)
    }
}

/// Typed access to `metadata_props`, with errors naming the file and key.
struct Metadata<'a> {
    path: &'a Path,
    map: HashMap<String, String>,
}

impl Metadata<'_> {
    fn raw(&self, key: &str) -> Result<&str> {
        self.map.get(key).map(String::as_str).ok_or_else(|| Error::Metadata {
            path: self.path.to_path_buf(),
            key: key.into(),
            problem: "missing".into(),
        })
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let raw = self.raw(key)?;
        raw.trim().parse().map_err(|_| Error::Metadata {
            path: self.path.to_path_buf(),
            key: key.into(),
            problem: format!("`{raw}` is not a number"),
        })
    }

    fn list<T: std::str::FromStr>(&self, key: &str) -> Result<Vec<T>> {
        let raw = self.raw(key)?;
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|_| Error::Metadata {
                    path: self.path.to_path_buf(),
                    key: key.into(),
                    problem: format!("`{s}` is not a number"),
                })
            })
            .collect()
    }
}

/// Reads and range-checks a Whisper export's `metadata_props` (the encoder's): every size,
/// token id and alignment head is checked against the others, so a corrupt or hand-edited
/// file is refused here, naming `path` and the key, instead of looping or overflowing later.
/// (Consistency with the graphs' own tensor shapes is checked when the sessions are bound.)
pub fn parse_metadata(path: &Path, map: HashMap<String, String>) -> Result<(ModelSpec, SpecialTokens)> {
    let md = Metadata { path, map };
    let multilingual = md.num::<u32>("is_multilingual")? != 0;
    let n_vocab: usize = md.num("n_vocab")?;
    let no_timestamps: u32 = md.num("no_timestamps")?;
    // sherpa-onnx does not store <|0.00|>; in every Whisper vocabulary it follows <|notimestamps|>.
    let timestamp_begin = match md.map.get("timestamp_begin") {
        Some(_) => md.num("timestamp_begin")?,
        None => no_timestamps.checked_add(1).ok_or_else(|| Error::Metadata {
            path: path.to_path_buf(),
            key: "no_timestamps".into(),
            problem: format!("{no_timestamps} leaves no id for <|0.00|> after it"),
        })?,
    };
    let lang_tokens: Vec<u32> = md.list("all_language_tokens")?;
    let lang_codes: Vec<String> = md
        .raw("all_language_codes")?
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if lang_tokens.len() != lang_codes.len() {
        return Err(Error::Metadata {
            path: path.to_path_buf(),
            key: "all_language_codes".into(),
            problem: format!("{} codes for {} language tokens", lang_codes.len(), lang_tokens.len()),
        });
    }
    let alignment_heads = match md.map.get("alignment_heads") {
        None => Vec::new(),
        Some(raw) => raw
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|pair| {
                let (l, h) = pair.trim().split_once(':').unwrap_or(("", ""));
                match (l.parse(), h.parse()) {
                    (Ok(l), Ok(h)) => Ok((l, h)),
                    _ => Err(Error::Metadata {
                        path: path.to_path_buf(),
                        key: "alignment_heads".into(),
                        problem: format!("`{pair}` is not `layer:head`"),
                    }),
                }
            })
            .collect::<Result<_>>()?,
    };
    let spec = ModelSpec {
        model_type: md.raw("model_type").unwrap_or("whisper").to_owned(),
        n_mels: md.num("n_mels")?,
        n_audio_ctx: md.num("n_audio_ctx")?,
        n_text_ctx: md.num("n_text_ctx")?,
        n_text_state: md.num("n_text_state")?,
        n_text_head: md.num("n_text_head")?,
        n_text_layer: md.num("n_text_layer")?,
        n_vocab,
        multilingual,
        alignment_heads,
    };
    let tokens = SpecialTokens {
        eot: md.num("eot")?,
        sot: md.num("sot")?,
        transcribe: md.num("transcribe")?,
        translate: md.num("translate")?,
        sot_prev: md.num("sot_prev")?,
        sot_lm: md.num("sot_lm")?,
        no_speech: md.num("no_speech")?,
        no_timestamps,
        timestamp_begin,
        blank: md.num("blank_id")?,
        languages: lang_codes
            .into_iter()
            .zip(lang_tokens)
            .map(|(code, token)| Language { code, token })
            .collect(),
        non_speech: md.list("non_speech_tokens")?,
    };
    let check = |key: &str, id: u32| -> Result<()> {
        if (id as usize) < n_vocab {
            Ok(())
        } else {
            Err(Error::Metadata {
                path: path.to_path_buf(),
                key: key.into(),
                problem: format!("token id {id} is outside the vocabulary ({n_vocab})"),
            })
        }
    };
    for (key, id) in [
        ("eot", tokens.eot),
        ("sot", tokens.sot),
        ("transcribe", tokens.transcribe),
        ("translate", tokens.translate),
        ("no_speech", tokens.no_speech),
        ("no_timestamps", tokens.no_timestamps),
        ("timestamp_begin", tokens.timestamp_begin),
        ("sot_prev", tokens.sot_prev),
        ("sot_lm", tokens.sot_lm),
        ("blank_id", tokens.blank),
    ] {
        check(key, id)?;
    }
    for l in &tokens.languages {
        check("all_language_tokens", l.token)?;
    }
    for &t in &tokens.non_speech {
        check("non_speech_tokens", t)?;
    }
    if spec.n_text_head == 0 || !spec.n_text_state.is_multiple_of(spec.n_text_head) {
        return Err(Error::Metadata {
            path: path.to_path_buf(),
            key: "n_text_head".into(),
            problem: format!(
                "{} heads do not divide n_text_state {}",
                spec.n_text_head, spec.n_text_state
            ),
        });
    }
    // Sizes: what Whisper's dimensions can be. n_text_ctx needs room for <|sot|> and one
    // token; the upper bounds only keep arithmetic and allocations sane on absurd values
    // (large-v3 has 1500 / 448 / 1280 / 20 / 32 / 51866).
    for (key, value, min, max) in [
        ("n_audio_ctx", spec.n_audio_ctx, 1, 1 << 16),
        ("n_text_ctx", spec.n_text_ctx, 2, 1 << 16),
        ("n_text_state", spec.n_text_state, 1, 1 << 16),
        ("n_text_head", spec.n_text_head, 1, 1 << 10),
        ("n_text_layer", spec.n_text_layer, 1, 1 << 10),
        ("n_vocab", spec.n_vocab, 1, 1 << 24),
    ] {
        if !(min..=max).contains(&value) {
            return Err(Error::Metadata {
                path: path.to_path_buf(),
                key: key.into(),
                problem: format!("{value} is outside {min}..={max}"),
            });
        }
    }
    for &(layer, head) in &spec.alignment_heads {
        if layer >= spec.n_text_layer || head >= spec.n_text_head {
            return Err(Error::Metadata {
                path: path.to_path_buf(),
                key: "alignment_heads".into(),
                problem: format!(
                    "`{layer}:{head}` is outside the decoder ({} layers of {} heads)",
                    spec.n_text_layer, spec.n_text_head
                ),
            });
        }
    }
    if tokens.timestamp_begin <= tokens.no_timestamps || tokens.eot == tokens.sot {
        return Err(Error::Metadata {
            path: path.to_path_buf(),
            key: "timestamp_begin".into(),
            problem: format!(
                "special tokens out of Whisper's order (eot {}, sot {}, no_timestamps {}, timestamp_begin {})",
                tokens.eot, tokens.sot, tokens.no_timestamps, tokens.timestamp_begin
            ),
        });
    }
    if spec.n_mels != 80 && spec.n_mels != 128 {
        return Err(Error::Metadata {
            path: path.to_path_buf(),
            key: "n_mels".into(),
            problem: format!("{} mel bins; Whisper uses 80 or 128", spec.n_mels),
        });
    }
    Ok((spec, tokens))
}

/// A loaded Whisper model: both graphs, dimensions, special tokens and the token table.
/// Owned by the inference worker (ONNX Runtime sessions run with `&mut`).
pub struct WhisperModel {
    pub files: ModelFiles,
    pub layout: Layout,
    pub spec: ModelSpec,
    pub tokens: SpecialTokens,
    pub tokenizer: Arc<Tokenizer>,
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl std::fmt::Debug for WhisperModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperModel")
            .field("files", &self.files)
            .field("spec", &self.spec)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl WhisperModel {
    /// Load and check both graphs and the token table.
    pub fn load(runtime: &Runtime, files: ModelFiles) -> Result<WhisperModel> {
        let _span = tracing::info_span!("load_model", dir = %files.dir.display(), variant = %files.variant).entered();
        // The decoder first: building its session briefly holds its largest weight twice (the
        // logits table and ONNX Runtime's prepacked copy), and that peak is lower before the
        // encoder's weights are resident (tiny.en fp32: 237 against 269 MB in one process).
        let decoder_session = runtime.session(&files.decoder)?;
        let encoder_session = runtime.session(&files.encoder)?;
        let (spec, tokens) = parse_metadata(&files.encoder, custom_metadata(&encoder_session, &files.encoder)?)?;
        let layout = Layout::detect(&files.encoder, encoder_session.outputs())?;
        let encoder = Encoder::new(encoder_session, &files.encoder, &spec, layout)?;
        let decoder = Decoder::new(decoder_session, &files.decoder, &spec, layout)?;
        let tokenizer = Tokenizer::load(&files.tokens, tokens.eot)?;
        tracing::debug!(?spec, "model loaded");
        Ok(WhisperModel {
            files,
            layout,
            spec,
            tokens,
            tokenizer: Arc::new(tokenizer),
            encoder,
            decoder,
        })
    }
}

impl WhisperModel {
    /// Make the following model calls stoppable by `stop` (`None`: not stoppable, the default).
    pub(crate) fn set_stop(&mut self, stop: Option<Stop>) {
        self.encoder.stop = stop.clone();
        self.decoder.stop = stop;
    }
}

/// Stops the model calls of one job from another thread: a live partial that a final
/// overtakes (see `engine::Running`). ONNX Runtime checks the flag between graph nodes, so the
/// running call ends within one node, and every later call of the job fails at once; the job
/// ends with an ONNX Runtime error that the worker recognises by [`Stop::fired`].
#[derive(Clone)]
pub(crate) struct Stop(Arc<(ort::session::RunOptions, std::sync::atomic::AtomicBool)>);

impl Stop {
    pub(crate) fn new() -> Result<Stop> {
        let options = ort::session::RunOptions::new().map_err(Error::ort("creating run options"))?;
        Ok(Stop(Arc::new((options, std::sync::atomic::AtomicBool::new(false)))))
    }

    /// Ask the calls to stop (no effect after the job has ended).
    pub(crate) fn fire(&self) {
        self.0.1.store(true, std::sync::atomic::Ordering::Release);
        if let Err(e) = self.0.0.terminate() {
            tracing::warn!(error = %e, "could not stop a model call");
        }
    }

    pub(crate) fn fired(&self) -> bool {
        self.0.1.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn run_options(&self) -> &ort::session::RunOptions {
        &self.0.0
    }
}

/// A session's `metadata_props`.
pub(crate) fn custom_metadata(session: &ort::session::Session, path: &Path) -> Result<HashMap<String, String>> {
    let context = || format!("reading metadata of {}", path.display());
    let md = session.metadata().map_err(Error::ort(context()))?;
    let keys = md.custom_keys().map_err(Error::ort(context()))?;
    Ok(keys.into_iter().filter_map(|k| md.custom(&k).map(|v| (k, v))).collect())
}

/// Check one declared input/output of a session: present, element type, rank.
pub(crate) fn check_outlet(
    path: &Path,
    outlets: &[ort::value::Outlet],
    name: &str,
    ty: ort::value::TensorElementType,
    rank: usize,
) -> Result<Vec<i64>> {
    let contract = |problem: String| Error::Contract {
        path: path.to_path_buf(),
        tensor: name.into(),
        problem,
    };
    let outlet = outlets.iter().find(|o| o.name() == name).ok_or_else(|| {
        let have: Vec<&str> = outlets.iter().map(|o| o.name()).collect();
        contract(format!("missing (the graph has: {})", have.join(", ")))
    })?;
    match outlet.dtype() {
        ort::value::ValueType::Tensor { ty: actual, shape, .. } => {
            if *actual != ty {
                return Err(contract(format!("element type {actual:?}, expected {ty:?}")));
            }
            if shape.len() != rank {
                return Err(contract(format!("rank {}, expected {rank}", shape.len())));
            }
            Ok(shape.to_vec())
        }
        other => Err(contract(format!("is a {other:?}, expected a tensor"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sherpa_tiny_en() -> HashMap<String, String> {
        // The metadata sherpa-onnx's export-onnx.py writes for tiny.en (values from its tokenizer).
        [
            ("model_type", "whisper-tiny.en"),
            ("n_mels", "80"),
            ("n_audio_ctx", "1500"),
            ("n_audio_state", "384"),
            ("n_text_ctx", "448"),
            ("n_text_state", "384"),
            ("n_text_head", "6"),
            ("n_text_layer", "4"),
            ("n_vocab", "51864"),
            ("is_multilingual", "0"),
            ("eot", "50256"),
            ("sot", "50257"),
            ("transcribe", "50358"),
            ("translate", "50357"),
            ("sot_prev", "50360"),
            ("sot_lm", "50359"),
            ("no_speech", "50361"),
            ("no_timestamps", "50362"),
            ("blank_id", "220"),
            ("all_language_tokens", "50258,50259"),
            ("all_language_codes", "en,zh"),
            ("non_speech_tokens", "1,2,7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn sherpa_metadata_parses_and_derives_timestamp_begin() {
        let (spec, tokens) = parse_metadata(Path::new("m.onnx"), sherpa_tiny_en()).unwrap();
        assert_eq!(spec.n_text_layer, 4);
        assert!(!spec.multilingual);
        assert_eq!(tokens.timestamp_begin, 50363);
        assert_eq!(tokens.language("en"), Some(50258));
        assert!(spec.alignment_heads.is_empty());
    }

    #[test]
    fn missing_key_names_the_key_and_file() {
        let mut md = sherpa_tiny_en();
        md.remove("eot");
        let err = parse_metadata(Path::new("x/enc.onnx"), md).unwrap_err().to_string();
        assert_eq!(err, "x/enc.onnx: metadata `eot`: missing");
    }

    #[test]
    fn out_of_vocabulary_token_is_rejected() {
        let mut md = sherpa_tiny_en();
        md.insert("no_speech".into(), "99999".into());
        let err = parse_metadata(Path::new("enc.onnx"), md).unwrap_err().to_string();
        assert!(
            err.contains("`no_speech`") && err.contains("outside the vocabulary"),
            "{err}"
        );
    }

    #[test]
    fn language_token_outside_the_vocabulary_is_rejected() {
        let mut md = sherpa_tiny_en();
        md.insert("all_language_tokens".into(), "50258,60000".into());
        let err = parse_metadata(Path::new("enc.onnx"), md).unwrap_err().to_string();
        assert!(err.contains("`all_language_tokens`"), "{err}");
    }

    #[test]
    fn alignment_heads_parse() {
        let mut md = sherpa_tiny_en();
        md.insert("alignment_heads".into(), "1:0,2:5".into());
        let (spec, _) = parse_metadata(Path::new("enc.onnx"), md).unwrap();
        assert_eq!(spec.alignment_heads, vec![(1, 0), (2, 5)]);
    }

    #[test]
    fn out_of_range_metadata_is_refused_naming_the_key() {
        for (key, value, expect) in [
            ("n_audio_ctx", "0", "metadata `n_audio_ctx`: 0 is outside 1..=65536"),
            ("n_text_ctx", "1", "metadata `n_text_ctx`: 1 is outside 2..=65536"),
            ("n_text_layer", "0", "metadata `n_text_layer`: 0 is outside"),
            ("n_vocab", "99999999999", "metadata `n_vocab`: 99999999999 is outside"),
            (
                "sot_prev",
                "51864",
                "metadata `sot_prev`: token id 51864 is outside the vocabulary",
            ),
            (
                "alignment_heads",
                "4:0",
                "metadata `alignment_heads`: `4:0` is outside the decoder (4 layers of 6 heads)",
            ),
            ("alignment_heads", "3:6", "`3:6` is outside the decoder"),
            (
                "no_timestamps",
                "50363",
                "metadata `timestamp_begin`: special tokens out of Whisper's order",
            ),
        ] {
            let mut md = sherpa_tiny_en();
            md.insert(key.into(), value.into());
            if key == "no_timestamps" {
                md.insert("timestamp_begin".into(), "50363".into());
            }
            let err = parse_metadata(Path::new("m/enc.onnx"), md).unwrap_err().to_string();
            assert!(err.starts_with("m/enc.onnx: "), "{key}={value}: {err}");
            assert!(err.contains(expect), "{key}={value}: {err}");
        }
    }
}
