//! The text decoder: tokens in, next-token logits out, with a self-attention KV cache so each
//! step only feeds new tokens.
//!
//! Tensor contracts (`L` = n_text_layer, `H` = n_text_head, `dh` = head_dim, `D` = n_text_state):
//!
//! steno (`models/export_whisper.py`, default):
//! | tensor | dtype | shape |
//! |---|---|---|
//! | in `token_rows` | f32 | `[N, n, D]`: the tokens' embedding rows, which steno reads from the graph's own logits table (`model/token_rows.rs`; exports before December 2026 take `tokens` `[N, n]` i64 instead, and steno feeds whichever the graph declares) |
//! | in `offset` | i64 | `[1]`: tokens already in the cache |
//! | in `n_logits` | i64 | `[1]`: logits wanted for the last `n_logits` fed positions (optional: older exports lack it and give 1) |
//! | in `prefix_k_{i}`, `prefix_v_{i}` | f32 | `[1, H, P, dh]`: the first `P` positions, shared by every row (`P` may be 0; graphs of December 2026 on) |
//! | in `past_k_{i}`, `past_v_{i}` | f32 | `[N, H, C, dh]`: each row's own positions from `P` on, in a buffer of `C ≥ offset + n − P` whose first `offset − P` are filled (graphs whose metadata say `self_cache=shared_buffer`); older exports take exactly `[N, H, offset, dh]` and no prefix |
//! | in `cross_k_{i}`, `cross_v_{i}` | f32 | `[1 or N, H, T/2, dh]`: one row is shared by all `N` |
//! | out `logits` | f32 | `[N, n_logits, n_vocab]`: after each of the last `n_logits` tokens |
//! | out `present_k_{i}`, `present_v_{i}` | f32 | the same buffer with positions `offset..offset + n` written (older exports: a new `[N, H, offset + n, dh]`) |
//! | out `cross_qk` | f32 | `[N, n, n_alignment_heads, T/2]`: pre-softmax scores of the alignment heads |
//!
//! sherpa-onnx (`scripts/whisper/export-onnx.py`):
//! | tensor | dtype | shape |
//! |---|---|---|
//! | in `tokens` | i64 | `[N, n]` |
//! | in `in_n_layer_self_k_cache`, `in_n_layer_self_v_cache` | f32 | `[L, N, 448, D]` |
//! | in `n_layer_cross_k`, `n_layer_cross_v` | f32 | `[L, N, T/2, D]` |
//! | in `offset` | i64 | `[1]` |
//! | out `logits` | f32 | `[N, n, n_vocab]` |
//! | out `out_n_layer_self_k_cache`, `out_n_layer_self_v_cache` | f32 | `[L, N, 448, D]` |
//!
//! A `shared_buffer` graph's cache buffers are bound as both the past input and the present
//! output (I/O binding): the graph writes the new positions in place, so a step neither copies
//! the cache nor holds two of it. The buffers start at `FIRST_CACHE_POSITIONS` (64) positions
//! and double as the rows' tokens come; only the filled positions are copied when they grow or
//! when beam rows move. Graphs with a prefix input also keep what all rows share once: when a
//! one-row cache becomes several rows ([`Decoder::reorder`] after a window's prompt), its
//! positions move to the prefix and the rows' buffers start empty, so five beams hold the
//! prompt (up to 227 of a window's 448 positions) once instead of five times, and a beam
//! reorder copies only the rows' own positions. With older steno exports and sherpa-onnx's, the
//! output cache of one call is the input of the next, passed as the same ONNX Runtime value (no
//! copy on our side).
//!
//! Multi-token feeds after a filled cache go one token per call where the graph cannot take
//! them at once: sherpa-onnx's causal mask is only right when such a call starts at offset 0,
//! and the GroupQueryAttention graphs of early December 2026 take them for one row only.
//! steno's graphs take a long feed in calls of at most 32 tokens (`FEED_CHUNK`), which bounds
//! the memory of the cross-attention scores.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef};

use super::token_rows::TokenRows;
use super::{CrossKv, Layout, ModelSpec, check_outlet};
use crate::error::{Error, Result};

/// Self-attention cache of one batch of hypotheses (steno: `[k_0, v_0, k_1, v_1, …]`;
/// sherpa-onnx: `[k, v]`).
pub struct KvCache {
    values: Vec<DynValue>,
    batch: usize,
    /// Tokens already fed (the next call's `offset`): the shared prefix's, then each row's.
    len: usize,
    /// Positions each buffer holds (axis 2) for a shared-buffer graph, at least `len -
    /// prefix_len`; 0 for the others, whose tensors hold exactly `len`.
    capacity: usize,
    /// The positions every row shares (`prefix_k_i`, `prefix_v_i`: `[1, H, prefix_len, dh]`,
    /// in `values`' order), for graphs that take a prefix; empty otherwise.
    prefix: Vec<DynValue>,
    /// Positions in `prefix`; the rows' buffers hold positions `prefix_len..len`.
    prefix_len: usize,
    /// Rows saved while [`Decoder::reorder`] permutes in place, kept between steps so a beam
    /// step allocates nothing.
    scratch: Vec<f32>,
}

impl KvCache {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first call.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows (hypotheses).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Positions filled in each row's own buffer (after the shared prefix).
    fn filled(&self) -> usize {
        self.len - self.prefix_len
    }
}

/// Longest feed of one decoder call (steno layout; [`Decoder::forward_rows`] splits longer
/// ones). The graph's cross-attention scores are `[N, H, n, T/2]`: at n = 224 on a 30 s window
/// 8 MB per tensor, a few of them live at once, and ONNX Runtime's arena keeps that high-water
/// mark for the process's life (a 20-minute file, int8: the peak rose with the prompt's length,
/// 34 MB in the first windows).
const FEED_CHUNK: usize = 32;

/// First size (positions) of a shared-buffer cache; it doubles when a call needs more, up to
/// `n_text_ctx`. Five beam rows of tiny.en at 64 positions are 3.9 MB (8 tensors); a 30 s
/// window's prompt of up to 224 tokens grows a one-row cache twice. Growing by 64 positions at a
/// time instead (less unused room at the end of a window) measured 3 MiB more, not less: peak
/// RSS of a 20-minute file at beam 5, int8 155.7 → 158.7 MiB, fp32 246.4 → 249.2 MiB, one run
/// each (more buffer sizes for ONNX Runtime's arena to fit).
const FIRST_CACHE_POSITIONS: usize = 64;

/// Cross-attention scores of the alignment heads, `[batch, tokens, heads, frames]` row-major.
#[derive(Debug, Clone)]
pub struct CrossQk {
    pub data: Vec<f32>,
    pub tokens: usize,
    pub heads: usize,
    pub frames: usize,
}

/// The decoder session and its checked contract.
pub struct Decoder {
    session: Session,
    path: PathBuf,
    layout: Layout,
    n_layer: usize,
    n_head: usize,
    d: usize,
    n_vocab: usize,
    n_text_ctx: usize,
    /// `Some(C)`: the cache input is always `C` positions (sherpa-onnx).
    fixed_cache: Option<usize>,
    has_cross_qk: bool,
    /// The graph takes `n_logits` (logits of several positions: draft verification).
    has_n_logits: bool,
    /// The graph takes `token_rows`, looked up here, instead of `tokens`.
    token_rows: Option<TokenRows>,
    /// Set for `self_cache=shared_buffer` graphs: where their cache buffers come from (the
    /// session's CPU arena when it has one, so the buffers reuse the pages the encoder's
    /// activations left; else ONNX Runtime's plain CPU allocator).
    shared: Option<Allocator>,
    /// Runs go through this job's stop flag when set (`WhisperModel::set_stop`).
    pub(super) stop: Option<super::Stop>,
    /// Feed long token runs in one call ([`Decoder::set_whole_feeds`]).
    whole_feeds: bool,
    /// The rows of the last call (reused from step to step).
    rows_buf: Vec<f32>,
    past_names: Vec<String>,
    present_names: Vec<String>,
    /// `prefix_k_i`, `prefix_v_i` in `past_names`' order, for graphs that take a shared
    /// prefix; empty for the others.
    prefix_names: Vec<String>,
    cross_names: Vec<String>,
}

impl Decoder {
    pub(crate) fn new(session: Session, path: &Path, spec: &ModelSpec, layout: Layout) -> Result<Decoder> {
        use TensorElementType::{Float32, Int64};
        let (n_layer, d, n_head) = (spec.n_text_layer, spec.n_text_state, spec.n_text_head);
        let contract = |tensor: &str, problem: String| Error::Contract {
            path: path.to_path_buf(),
            tensor: tensor.into(),
            problem,
        };
        let token_rows = if session.inputs().iter().any(|o| o.name() == "token_rows") {
            let dims = check_outlet(path, session.inputs(), "token_rows", Float32, 3)?;
            if dims[2] >= 0 && dims[2] as usize != d {
                return Err(contract(
                    "token_rows",
                    format!("width {}, metadata says n_text_state {d}", dims[2]),
                ));
            }
            let metadata = super::custom_metadata(&session, path)?;
            Some(TokenRows::open(path, &metadata, d, spec.n_vocab)?)
        } else {
            check_outlet(path, session.inputs(), "tokens", Int64, 2)?;
            None
        };
        check_outlet(path, session.inputs(), "offset", Int64, 1)?;
        let logits = check_outlet(path, session.outputs(), "logits", Float32, 3)?;
        if logits[2] >= 0 && logits[2] as usize != spec.n_vocab {
            return Err(contract(
                "logits",
                format!("{} classes, metadata says n_vocab {}", logits[2], spec.n_vocab),
            ));
        }
        let (past_names, present_names) = match layout {
            Layout::Steno => {
                let names = |prefix: &str| -> Vec<String> {
                    (0..n_layer)
                        .flat_map(|i| [format!("{prefix}_k_{i}"), format!("{prefix}_v_{i}")])
                        .collect()
                };
                (names("past"), names("present"))
            }
            Layout::Sherpa => (
                vec!["in_n_layer_self_k_cache".into(), "in_n_layer_self_v_cache".into()],
                vec!["out_n_layer_self_k_cache".into(), "out_n_layer_self_v_cache".into()],
            ),
        };
        let mut fixed_cache = None;
        for name in &past_names {
            let dims = check_outlet(path, session.inputs(), name, Float32, 4)?;
            // Both layouts: positions on axis 2, width (head_dim or D) on axis 3.
            let (width, positions) = (dims[3], dims[2]);
            let expect_width = match layout {
                Layout::Steno => spec.head_dim(),
                Layout::Sherpa => d,
            };
            if width >= 0 && width as usize != expect_width {
                return Err(contract(
                    name,
                    format!("width {width}, metadata implies {expect_width}"),
                ));
            }
            if layout == Layout::Steno && dims[1] >= 0 && dims[1] as usize != n_head {
                return Err(contract(name, format!("{} heads, metadata says {n_head}", dims[1])));
            }
            if layout == Layout::Sherpa && dims[0] >= 0 && dims[0] as usize != n_layer {
                return Err(contract(name, format!("{} layers, metadata says {n_layer}", dims[0])));
            }
            if positions > 0 {
                fixed_cache = Some(positions as usize);
            }
        }
        for name in &present_names {
            check_outlet(path, session.outputs(), name, Float32, 4)?;
        }
        let cross_names = layout.cross_names(n_layer);
        for name in &cross_names {
            check_outlet(path, session.inputs(), name, Float32, 4)?;
        }
        let shared = match layout {
            Layout::Steno => super::custom_metadata(&session, path)?
                .get("self_cache")
                .is_some_and(|v| v == "shared_buffer")
                .then(|| cache_allocator(&session)),
            Layout::Sherpa => None,
        };
        // Steno graphs since December 2026 take the positions all rows share apart from each
        // row's own (the module doc); the earlier shared-buffer graphs do not.
        let prefix_names: Vec<String> =
            if layout == Layout::Steno && shared.is_some() && session.inputs().iter().any(|o| o.name() == "prefix_k_0")
            {
                past_names
                    .iter()
                    .map(|name| name.replacen("past", "prefix", 1))
                    .collect()
            } else {
                Vec::new()
            };
        for name in &prefix_names {
            check_outlet(path, session.inputs(), name, Float32, 4)?;
        }
        let has_cross_qk = session.outputs().iter().any(|o| o.name() == "cross_qk");
        let has_n_logits = session.inputs().iter().any(|o| o.name() == "n_logits");
        if has_n_logits {
            check_outlet(path, session.inputs(), "n_logits", Int64, 1)?;
        }
        if has_cross_qk {
            check_outlet(path, session.outputs(), "cross_qk", Float32, 4)?;
        }
        Ok(Decoder {
            session,
            path: path.to_path_buf(),
            layout,
            n_layer,
            n_head,
            d,
            n_vocab: spec.n_vocab,
            n_text_ctx: spec.n_text_ctx,
            fixed_cache,
            has_cross_qk,
            has_n_logits,
            token_rows,
            shared,
            stop: None,
            whole_feeds: false,
            rows_buf: Vec::new(),
            past_names,
            present_names,
            prefix_names,
            cross_names,
        })
    }

    /// Vocabulary size (length of a logits row).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Longest token sequence (prompt + output) one window can hold.
    pub fn n_text_ctx(&self) -> usize {
        self.n_text_ctx
    }

    /// Whether this graph reports alignment-head attention (word timestamps).
    pub fn has_cross_qk(&self) -> bool {
        self.has_cross_qk
    }

    /// Whether several positions' logits come out of one call ([`Decoder::forward_rows`]).
    pub fn verifies_drafts(&self) -> bool {
        self.has_n_logits
    }

    /// Forget all but the first `len` positions of `cache` (a rejected draft). Shared-buffer
    /// graphs and sherpa-onnx's read `[:offset]` of a buffer, so there it is bookkeeping; older
    /// steno graphs take a cache of exactly the positions fed, so its tensors are cut to `len`
    /// (a copy, once per rejected draft). Positions shared by several rows (the prefix) cannot
    /// be forgotten: asking to is an error.
    pub fn rewind(&self, cache: &mut KvCache, len: usize) -> Result<()> {
        if len > cache.len || len < cache.prefix_len {
            return Err(Error::config(
                "tokens",
                format!(
                    "cannot rewind {} positions to {len} ({} of them shared by every row)",
                    cache.len, cache.prefix_len
                ),
            ));
        }
        if self.layout == Layout::Steno && self.shared.is_none() && len < cache.len {
            // Positions are axis 2 of `[N, H, positions, dh]`.
            let kept: Vec<usize> = (0..len).collect();
            for value in cache.values.iter_mut() {
                *value = gather_rows(value, 2, &kept)?;
            }
        }
        cache.len = len;
        Ok(())
    }

    /// Whether one row of cross K/V serves any number of hypotheses (else it must be tiled).
    pub fn broadcasts_cross(&self) -> bool {
        self.layout == Layout::Steno
    }

    /// Row (hypothesis) axis of the cache and cross K/V tensors.
    pub fn row_axis(&self) -> usize {
        match self.layout {
            Layout::Steno => 0,
            Layout::Sherpa => 1,
        }
    }

    /// An empty cache for `batch` hypotheses.
    pub fn new_cache(&self, batch: usize) -> Result<KvCache> {
        if let Some(allocator) = &self.shared {
            let capacity = FIRST_CACHE_POSITIONS.min(self.n_text_ctx);
            return Ok(KvCache {
                values: (0..self.past_names.len())
                    .map(|_| self.cache_buffer(allocator, batch, capacity))
                    .collect::<Result<_>>()?,
                batch,
                len: 0,
                capacity,
                prefix: (0..self.prefix_names.len())
                    .map(|_| self.cache_buffer(allocator, 1, 0))
                    .collect::<Result<_>>()?,
                prefix_len: 0,
                scratch: Vec::new(),
            });
        }
        // An older steno graph takes exactly the positions fed so far: none yet.
        let shape = match self.layout {
            Layout::Steno => [batch, self.n_head, 0, self.d / self.n_head],
            Layout::Sherpa => [self.n_layer, batch, self.fixed_cache.unwrap_or(1), self.d],
        };
        let values = self
            .past_names
            .iter()
            .map(|_| {
                Tensor::from_array((shape, vec![0f32; shape.iter().product()]))
                    .map(|t| t.into_dyn())
                    .map_err(Error::ort("creating the self-attention cache"))
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            values,
            batch,
            len: 0,
            capacity: 0,
            prefix: Vec::new(),
            prefix_len: 0,
            scratch: Vec::new(),
        })
    }

    /// A zeroed buffer `[batch, H, positions, dh]` (shared-buffer graphs: one per past/present
    /// pair).
    fn cache_buffer(&self, allocator: &Allocator, batch: usize, positions: usize) -> Result<DynValue> {
        let shape = [batch, self.n_head, positions, self.d / self.n_head];
        Tensor::<f32>::new(allocator, shape)
            .map(|t| t.into_dyn())
            .map_err(Error::ort("creating the self-attention cache"))
    }

    /// Move a shared-buffer cache into new buffers of `positions` positions whose row `i`
    /// holds the filled positions of the old row `source[i]` (the cache grows, or beam rows
    /// change in number). One tensor at a time, each old one freed as soon as it is copied:
    /// the new cache and one old tensor are resident at once, not both caches (five beam rows
    /// growing from 256 to 448 positions: 29 MB instead of 43 MB for tiny.en).
    fn rebuffer(&self, cache: &mut KvCache, source: &[usize], positions: usize) -> Result<()> {
        let Some(allocator) = &self.shared else {
            return Err(Error::config("decoder", "rebuffer on a graph without shared buffers"));
        };
        let dh = self.d / self.n_head;
        let (used, old_head, new_head) = (cache.filled() * dh, cache.capacity * dh, positions * dh);
        for value in cache.values.iter_mut() {
            let mut new = self.cache_buffer(allocator, source.len(), positions)?;
            {
                let (_, from) = value
                    .try_extract_tensor::<f32>()
                    .map_err(Error::ort("reading the cache"))?;
                let (_, to) = new
                    .try_extract_tensor_mut::<f32>()
                    .map_err(Error::ort("writing the cache"))?;
                for (i, &s) in source.iter().enumerate() {
                    for h in 0..self.n_head {
                        let (src, dst) = ((s * self.n_head + h) * old_head, (i * self.n_head + h) * new_head);
                        to[dst..dst + used].copy_from_slice(&from[src..src + used]);
                    }
                }
            }
            *value = new;
        }
        cache.batch = source.len();
        cache.capacity = positions;
        Ok(())
    }

    /// Move the filled positions of a one-row cache's buffers (its caller, [`Decoder::reorder`],
    /// checks the one row) to the end of its shared prefix (new prefix tensors, one at a time);
    /// the row's buffer is then empty.
    fn seal_prefix(&self, cache: &mut KvCache) -> Result<()> {
        let Some(allocator) = &self.shared else {
            return Err(Error::config(
                "decoder",
                "a shared prefix on a graph without shared buffers",
            ));
        };
        let dh = self.d / self.n_head;
        let (old, added) = (cache.prefix_len, cache.filled());
        for (prefix, row) in cache.prefix.iter_mut().zip(&cache.values) {
            let mut new = self.cache_buffer(allocator, 1, old + added)?;
            {
                let (_, before) = prefix
                    .try_extract_tensor::<f32>()
                    .map_err(Error::ort("reading the shared prefix"))?;
                let (_, row) = row
                    .try_extract_tensor::<f32>()
                    .map_err(Error::ort("reading the cache"))?;
                let (_, to) = new
                    .try_extract_tensor_mut::<f32>()
                    .map_err(Error::ort("writing the shared prefix"))?;
                let heads = PrefixHeads {
                    count: self.n_head,
                    prefix: old * dh,
                    row_stride: cache.capacity * dh,
                    added: added * dh,
                };
                append_heads(before, row, heads, to);
            }
            *prefix = new;
        }
        cache.prefix_len = old + added;
        Ok(())
    }

    /// Feed `tokens` (`batch` rows of `n`, row-major) after what `cache` holds and return the
    /// logits that follow the last token of each row (`batch × n_vocab`). With `want_qk`, also
    /// the alignment heads' attention for the fed tokens (steno graphs only).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        n: usize,
        cache: &mut KvCache,
        cross: &CrossKv,
        want_qk: bool,
    ) -> Result<(Vec<f32>, Option<CrossQk>)> {
        let mut logits = Vec::new();
        let qk = self.forward_rows(tokens, n, cache, cross, want_qk, 1, &mut logits)?;
        Ok((logits, qk))
    }

    /// [`Decoder::forward`] writing the logits after each of the last `n_logits` fed tokens
    /// (`batch × n_logits × n_vocab`) into `logits`, whose allocation is reused from step to
    /// step; `n_logits > 1` needs [`Decoder::verifies_drafts`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rows(
        &mut self,
        tokens: &[u32],
        n: usize,
        cache: &mut KvCache,
        cross: &CrossKv,
        want_qk: bool,
        n_logits: usize,
        logits: &mut Vec<f32>,
    ) -> Result<Option<CrossQk>> {
        if n_logits == 0 || n_logits > n || (n_logits > 1 && !self.has_n_logits) {
            return Err(Error::config(
                "tokens",
                format!("{n_logits} logits rows for {n} tokens (draft verification needs an n_logits input)"),
            ));
        }
        let batch = cache.batch;
        let cross_ok = cross.batch == batch || (cross.batch == 1 && self.broadcasts_cross());
        if n == 0 || tokens.len() != batch * n || !cross_ok {
            return Err(Error::config(
                "tokens",
                format!(
                    "{} tokens for {batch} rows of {n}; cross K/V has {} rows",
                    tokens.len(),
                    cross.batch
                ),
            ));
        }
        if cache.len + n > self.n_text_ctx {
            return Err(Error::config(
                "tokens",
                format!(
                    "{} tokens exceed the decoder context of {}",
                    cache.len + n,
                    self.n_text_ctx
                ),
            ));
        }
        if want_qk && !self.has_cross_qk {
            return Err(Error::config(
                "word_timestamps",
                format!(
                    "{} does not report cross attention (a sherpa-onnx export?)",
                    self.path.display()
                ),
            ));
        }
        if self.layout == Layout::Steno && n > FEED_CHUNK && !self.whole_feeds {
            return self.run_in_pieces(tokens, n, cache, cross, want_qk, n_logits, logits);
        }
        self.run_or_columns(tokens, n, cache, cross, want_qk, n_logits, logits)
    }

    /// One call, or one call per token where the graph cannot take several new positions
    /// after a filled cache: sherpa-onnx's causal mask, and the GroupQueryAttention graphs of
    /// early December 2026 with more than one row (that operator's rule).
    #[allow(clippy::too_many_arguments)]
    fn run_or_columns(
        &mut self,
        tokens: &[u32],
        n: usize,
        cache: &mut KvCache,
        cross: &CrossKv,
        want_qk: bool,
        n_logits: usize,
        logits: &mut Vec<f32>,
    ) -> Result<Option<CrossQk>> {
        let batch = cache.batch;
        let per_token =
            self.layout == Layout::Sherpa || (self.shared.is_some() && self.prefix_names.is_empty() && batch > 1);
        if n == 1 || cache.len == 0 || !per_token {
            return self.run(tokens, n, cache, cross, want_qk, n_logits, logits);
        }
        let v = self.n_vocab;
        let mut step = Vec::new();
        let mut kept: Vec<Vec<f32>> = Vec::with_capacity(n_logits);
        let mut pieces = Vec::new();
        for i in 0..n {
            let column: Vec<u32> = (0..batch).map(|b| tokens[b * n + i]).collect();
            if let Some(qk) = self.run(&column, 1, cache, cross, want_qk, 1, &mut step)? {
                pieces.push(qk);
            }
            if i + n_logits >= n {
                kept.push(step.clone());
            }
        }
        logits.clear();
        for b in 0..batch {
            for column in &kept {
                logits.extend_from_slice(&column[b * v..(b + 1) * v]);
            }
        }
        Ok(want_qk.then(|| join_qk(&pieces, batch, n)))
    }

    /// Feed long token runs in one call (`true`) or in pieces of at most 32 tokens (`false`,
    /// the default; see `FEED_CHUNK`). Live windows take one call: each piece is one more
    /// pass over the decoder's layers and logits, and with 8 server streams (tiny.en int8)
    /// pieces made the median partial's decoding 37 → 51 ms and the worst stream's
    /// end-of-speech → final p95 0.87–0.92 → 1.19 s. A live worker's arena is sized by its
    /// largest window at the start anyway (`stream::window::presize`).
    pub fn set_whole_feeds(&mut self, whole: bool) {
        self.whole_feeds = whole;
    }

    /// A long feed (a window's prompt, up to 224 tokens; a final's alignment pass) as calls of
    /// at most [`FEED_CHUNK`] tokens each, the last one also holding the `n_logits` positions.
    /// Same positions and the same arithmetic per position (each attends to the cache and to
    /// the tokens before it); fp32 transcripts of the eval sets are unchanged, int8 ones move
    /// slightly where ONNX Runtime's int8 kernels round differently for another row count.
    #[allow(clippy::too_many_arguments)]
    fn run_in_pieces(
        &mut self,
        tokens: &[u32],
        n: usize,
        cache: &mut KvCache,
        cross: &CrossKv,
        want_qk: bool,
        n_logits: usize,
        logits: &mut Vec<f32>,
    ) -> Result<Option<CrossQk>> {
        let batch = cache.batch;
        let mut pieces: Vec<CrossQk> = Vec::new();
        let mut start = 0;
        while start < n {
            let left = n - start;
            // The last piece keeps at least the positions whose logits are wanted.
            let len = if left > FEED_CHUNK && left - FEED_CHUNK >= n_logits {
                FEED_CHUNK
            } else {
                left
            };
            let last = start + len == n;
            let piece: Vec<u32> = (0..batch)
                .flat_map(|b| tokens[b * n + start..b * n + start + len].iter().copied())
                .collect();
            let wanted = if last { n_logits } else { 1 };
            if let Some(qk) = self.run_or_columns(&piece, len, cache, cross, want_qk, wanted, logits)? {
                pieces.push(qk);
            }
            start += len;
        }
        Ok(want_qk.then(|| join_qk(&pieces, batch, n)))
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        tokens: &[u32],
        n: usize,
        cache: &mut KvCache,
        cross: &CrossKv,
        want_qk: bool,
        n_logits: usize,
        rows: &mut Vec<f32>,
    ) -> Result<Option<CrossQk>> {
        let batch = cache.batch;
        if self.shared.is_some() && cache.filled() + n > cache.capacity {
            let room = self.n_text_ctx - cache.prefix_len;
            let positions = (cache.filled() + n).max(2 * cache.capacity).min(room);
            let every_row: Vec<usize> = (0..batch).collect();
            self.rebuffer(cache, &every_row, positions)?;
        }
        let shared = self.shared.is_some();
        let ids: Vec<i64>;
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(3 + cache.values.len() + cache.prefix.len() + cross.values.len());
        if let Some(table) = self.token_rows.as_mut() {
            table.gather(tokens, &mut self.rows_buf)?;
            let shape = [batch, n, table.width()];
            let context = "creating the token_rows tensor";
            // An I/O binding takes owned values only: with a borrowed one, ort 2.0.0-rc.15 copies
            // it through a session of its own, which deadlocks inside the binding.
            inputs.push((
                "token_rows".into(),
                if shared {
                    Tensor::from_array((shape, self.rows_buf.clone()))
                        .map_err(Error::ort(context))?
                        .into()
                } else {
                    TensorRef::from_array_view((shape, self.rows_buf.as_slice()))
                        .map_err(Error::ort(context))?
                        .into()
                },
            ));
        } else {
            ids = tokens.iter().map(|&t| i64::from(t)).collect();
            inputs.push((
                "tokens".into(),
                TensorRef::from_array_view(([batch, n], ids.as_slice()))
                    .map_err(Error::ort("creating the tokens tensor"))?
                    .into(),
            ));
        }
        inputs.push((
            "offset".into(),
            Tensor::from_array(([1usize], vec![cache.len as i64]))
                .map_err(Error::ort("creating the offset tensor"))?
                .into(),
        ));
        if self.has_n_logits {
            inputs.push((
                "n_logits".into(),
                Tensor::from_array(([1usize], vec![n_logits as i64]))
                    .map_err(Error::ort("creating the n_logits tensor"))?
                    .into(),
            ));
        }
        for (name, value) in self.past_names.iter().zip(&cache.values) {
            inputs.push((name.as_str().into(), value.into()));
        }
        for (name, value) in self.prefix_names.iter().zip(&cache.prefix) {
            inputs.push((name.as_str().into(), value.into()));
        }
        for (name, value) in self.cross_names.iter().zip(&cross.values) {
            inputs.push((name.as_str().into(), value.into()));
        }
        let mut binding: IoBinding;
        let out = if shared {
            // Each cache tensor is bound as its past input and its present output, so the graph
            // writes the new positions into it (the module doc).
            binding = bind_inputs(&self.session, &self.path, inputs)?;
            bind_outputs(
                &mut binding,
                &self.path,
                &self.present_names,
                &mut cache.values,
                want_qk,
            )?;
            match &self.stop {
                Some(stop) => self.session.run_binding_with_options(&binding, stop.run_options()),
                None => self.session.run_binding(&binding),
            }
        } else {
            match &self.stop {
                Some(stop) => self.session.run_with_options(inputs, stop.run_options()),
                None => self.session.run(inputs),
            }
        };
        let mut out = out.map_err(Error::ort(format!("running {}", self.path.display())))?;
        let missing = |name: &str| Error::Contract {
            path: self.path.clone(),
            tensor: name.into(),
            problem: "not produced".into(),
        };
        {
            let value = out.get("logits").ok_or_else(|| missing("logits"))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(Error::ort("reading logits"))?;
            let positions = shape.get(1).copied().unwrap_or(0) as usize;
            if shape.len() != 3
                || shape[0] as usize != batch
                || positions < n_logits
                || shape[2] as usize != self.n_vocab
            {
                return Err(Error::Contract {
                    path: self.path.clone(),
                    tensor: "logits".into(),
                    problem: format!("shape {:?} for {batch} rows of {n} tokens", &shape[..]),
                });
            }
            rows.clear();
            for b in 0..batch {
                let start = (b * positions + positions - n_logits) * self.n_vocab;
                rows.extend_from_slice(&data[start..start + n_logits * self.n_vocab]);
            }
        }
        let qk = if want_qk {
            let value = out.get("cross_qk").ok_or_else(|| missing("cross_qk"))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(Error::ort("reading cross_qk"))?;
            Some(CrossQk {
                data: data.to_vec(),
                tokens: shape[1] as usize,
                heads: shape[2] as usize,
                frames: shape[3] as usize,
            })
        } else {
            None
        };
        if !shared {
            for (slot, name) in cache.values.iter_mut().zip(&self.present_names) {
                *slot = out.remove(name.as_str()).ok_or_else(|| missing(name))?;
            }
        }
        cache.len += n;
        Ok(qk)
    }

    /// Reorder the cache's rows: new row `i` is old row `source[i]` (beam search); `source`
    /// may repeat rows and change the row count.
    pub fn reorder(&self, cache: &mut KvCache, source: &[usize]) -> Result<()> {
        if source.iter().any(|&s| s >= cache.batch) {
            return Err(Error::config(
                "beam",
                format!("row index out of range 0..{}", cache.batch),
            ));
        }
        let axis = self.row_axis();
        if source.len() == cache.batch {
            // The usual beam step: same row count, most rows staying put. Permuting in place
            // copies only the rows that move, through a scratch buffer kept in the cache; a
            // fresh tensor per step (as below) cost as much time as the decoder call itself on
            // long prompts. `read`: the rows some other row copies, saved before any is written.
            let mut read: Vec<usize> = source
                .iter()
                .enumerate()
                .filter(|&(i, &s)| i != s)
                .map(|(_, &s)| s)
                .collect();
            read.sort_unstable();
            read.dedup();
            if read.is_empty() {
                return Ok(());
            }
            let dh = self.d / self.n_head;
            let heads = Heads {
                count: self.n_head,
                stride: cache.capacity * dh,
                filled: cache.filled() * dh,
            };
            for value in cache.values.iter_mut() {
                if self.shared.is_some() {
                    permute_filled(value, source, &read, heads, &mut cache.scratch)?;
                } else {
                    permute_rows(value, axis, source, &read, &mut cache.scratch)?;
                }
            }
            return Ok(());
        }
        if self.shared.is_some() {
            if !self.prefix_names.is_empty() && cache.batch == 1 {
                // One row becomes several (a beam search or best-of after its prompt): what the
                // row holds becomes the prefix they share, and their own buffers start empty.
                self.seal_prefix(cache)?;
                let capacity = FIRST_CACHE_POSITIONS.min(self.n_text_ctx);
                return self.rebuffer(cache, source, capacity);
            }
            return self.rebuffer(cache, source, cache.capacity);
        }
        for value in cache.values.iter_mut() {
            *value = gather_rows(value, axis, source)?;
        }
        cache.batch = source.len();
        Ok(())
    }
}

/// The sizes [`append_heads`] works with, in values: `count` heads, `prefix` values per head
/// in the old prefix, `added` values per head taken from a row buffer whose heads lie
/// `row_stride` values apart.
#[derive(Debug, Clone, Copy)]
struct PrefixHeads {
    count: usize,
    prefix: usize,
    row_stride: usize,
    added: usize,
}

/// Write into `to` (`[1, H, prefix + added]` per head, head-major) each head's old prefix
/// followed by the first `added` values of the same head of `row` (one row of a buffer).
fn append_heads(prefix: &[f32], row: &[f32], heads: PrefixHeads, to: &mut [f32]) {
    let PrefixHeads {
        count,
        prefix: old,
        row_stride,
        added,
    } = heads;
    for h in 0..count {
        let out = h * (old + added);
        to[out..out + old].copy_from_slice(&prefix[h * old..(h + 1) * old]);
        to[out + old..out + old + added].copy_from_slice(&row[h * row_stride..h * row_stride + added]);
    }
}

/// In place: rows along `axis` become `value`'s rows `source[0]`, `source[1]`, … (`source` has
/// one entry per row and may repeat rows). `read` (sorted, distinct) lists the rows that some
/// other row takes; they are saved in `scratch` first, so nothing is overwritten before it is
/// read.
fn permute_rows(
    value: &mut DynValue,
    axis: usize,
    source: &[usize],
    read: &[usize],
    scratch: &mut Vec<f32>,
) -> Result<()> {
    let (shape, data) = value
        .try_extract_tensor_mut::<f32>()
        .map_err(Error::ort("reading the cache"))?;
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let (outer, rows, inner) = around_axis(&dims, axis);
    if rows != source.len() {
        return Err(Error::config(
            "beam",
            format!("{} row indices for a cache of {rows} rows", source.len()),
        ));
    }
    scratch.clear();
    append_rows(data, &dims, axis, read, scratch);
    for o in 0..outer {
        for (i, &s) in source.iter().enumerate().filter(|&(i, &s)| i != s) {
            let k = read.binary_search(&s).unwrap_or_default();
            let from = (o * read.len() + k) * inner;
            let to = (o * rows + i) * inner;
            data[to..to + inner].copy_from_slice(&scratch[from..from + inner]);
        }
    }
    Ok(())
}

/// The alignment-head scores of consecutive calls over the same `batch` rows as one feed of
/// `n` tokens.
fn join_qk(pieces: &[CrossQk], batch: usize, n: usize) -> CrossQk {
    let (heads, frames) = pieces.first().map_or((0, 0), |q| (q.heads, q.frames));
    let row = heads * frames;
    let mut data = Vec::with_capacity(batch * n * row);
    for b in 0..batch {
        for q in pieces {
            data.extend_from_slice(&q.data[b * q.tokens * row..(b + 1) * q.tokens * row]);
        }
    }
    CrossQk {
        data,
        tokens: n,
        heads,
        frames,
    }
}

/// An I/O binding of `inputs`, which must all be owned values (see `run`): bound as they are,
/// so the graph reads the cache buffers themselves.
fn bind_inputs(
    session: &Session,
    path: &Path,
    inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)>,
) -> Result<IoBinding> {
    let context = || format!("binding the inputs of {}", path.display());
    let mut binding = session.create_binding().map_err(Error::ort(context()))?;
    for (name, value) in &inputs {
        binding
            .bind_input(name.as_ref(), &**value)
            .map_err(Error::ort(context()))?;
    }
    Ok(binding)
}

/// Bind each cache tensor in `cache` as its present output too (the graph writes into the
/// buffer it reads), and the logits (and `cross_qk` with `want_qk`) to new CPU tensors.
fn bind_outputs(
    binding: &mut IoBinding,
    path: &Path,
    present_names: &[String],
    cache: &mut [DynValue],
    want_qk: bool,
) -> Result<()> {
    let context = || format!("binding the outputs of {}", path.display());
    for (name, value) in present_names.iter().zip(cache.iter_mut()) {
        binding
            .bind_output(name.as_str(), value)
            .map_err(Error::ort(context()))?;
    }
    let cpu = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::CPUOutput)
        .map_err(Error::ort(context()))?;
    let outputs: &[&str] = if want_qk { &["logits", "cross_qk"] } else { &["logits"] };
    for name in outputs {
        binding
            .bind_output_to_device(*name, &cpu)
            .map_err(Error::ort(context()))?;
    }
    Ok(())
}

/// The heads of one row of a shared-buffer cache `[N, H, C, dh]`: `count` blocks `stride`
/// values apart, the first `filled` values of each in use.
#[derive(Debug, Clone, Copy)]
struct Heads {
    count: usize,
    stride: usize,
    filled: usize,
}

/// [`permute_rows`] for a shared-buffer cache (rows on axis 0): only the filled positions of
/// each head move, so a beam step copies what a tensor of exactly those positions would.
fn permute_filled(
    value: &mut DynValue,
    source: &[usize],
    read: &[usize],
    heads: Heads,
    scratch: &mut Vec<f32>,
) -> Result<()> {
    let (shape, data) = value
        .try_extract_tensor_mut::<f32>()
        .map_err(Error::ort("reading the cache"))?;
    let rows = shape.first().map_or(0, |&rows| rows as usize);
    permute_filled_data(data, rows, source, read, heads, scratch)
}

/// [`permute_filled`] on the data of a cache of `rows` rows.
fn permute_filled_data(
    data: &mut [f32],
    rows: usize,
    source: &[usize],
    read: &[usize],
    heads: Heads,
    scratch: &mut Vec<f32>,
) -> Result<()> {
    if rows != source.len() {
        return Err(Error::config(
            "beam",
            format!("{} row indices for a cache of {rows} rows", source.len()),
        ));
    }
    let Heads { count, stride, filled } = heads;
    scratch.clear();
    for &r in read {
        for h in 0..count {
            let start = (r * count + h) * stride;
            scratch.extend_from_slice(&data[start..start + filled]);
        }
    }
    for (i, &s) in source.iter().enumerate().filter(|&(i, &s)| i != s) {
        let k = read.binary_search(&s).unwrap_or_default();
        for h in 0..count {
            let from = (k * count + h) * filled;
            let to = (i * count + h) * stride;
            data[to..to + filled].copy_from_slice(&scratch[from..from + filled]);
        }
    }
    Ok(())
}

/// The allocator of a shared-buffer graph's cache: the session's CPU arena (with
/// `session.use_env_allocators`, the process's one: `runtime.rs`), whose pages the encoder's
/// activations leave free while the decoder runs; ONNX Runtime's plain CPU allocator where the
/// session has no arena (`--no-memory-arena`, CUDA).
fn cache_allocator(session: &Session) -> Allocator {
    MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)
        .and_then(|info| Allocator::new(session, info))
        .unwrap_or_default()
}

/// A new tensor whose rows along `axis` are `value`'s rows `source[0]`, `source[1]`, ….
fn gather_rows(value: &DynValue, axis: usize, source: &[usize]) -> Result<DynValue> {
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(Error::ort("reading the cache"))?;
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let (outer, _, inner) = around_axis(&dims, axis);
    let mut out = Vec::with_capacity(outer * source.len() * inner);
    append_rows(data, &dims, axis, source, &mut out);
    let mut new_dims = dims;
    new_dims[axis] = source.len();
    Tensor::from_array((new_dims, out))
        .map(|t| t.into_dyn())
        .map_err(Error::ort("copying the cache"))
}

/// (elements before `axis`, rows along it, elements of one row) of a row-major tensor.
fn around_axis(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        dims[..axis].iter().product(),
        dims[axis],
        dims[axis + 1..].iter().product(),
    )
}

/// Append rows `picks` along `axis` of `data` (shape `dims`) to `out`, for every outer index.
fn append_rows(data: &[f32], dims: &[usize], axis: usize, picks: &[usize], out: &mut Vec<f32>) {
    let (outer, rows, inner) = around_axis(dims, axis);
    for o in 0..outer {
        for &s in picks {
            let start = (o * rows + s) * inner;
            out.extend_from_slice(&data[start..start + inner]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data of a `[rows, heads, capacity, 1]` cache whose value at (row, head, position)
    /// is `100 row + 10 head + position`.
    fn numbered(rows: usize, heads: usize, capacity: usize) -> Vec<f32> {
        (0..rows * heads * capacity)
            .map(|i| {
                let (r, h, p) = (i / (heads * capacity), i / capacity % heads, i % capacity);
                (100 * r + 10 * h + p) as f32
            })
            .collect()
    }

    #[test]
    fn permute_filled_moves_the_filled_positions_of_every_head_and_nothing_else() {
        let (heads, capacity, filled) = (2, 4, 3);
        let mut data = numbered(3, heads, capacity);
        // Row 0 <- 2, row 1 stays, row 2 <- 0; rows 0 and 2 are read.
        let (source, read) = ([2, 1, 0], [0, 2]);
        let shape = Heads {
            count: heads,
            stride: capacity,
            filled,
        };
        permute_filled_data(&mut data, 3, &source, &read, shape, &mut Vec::new()).unwrap();
        for (row, &from) in source.iter().enumerate() {
            for h in 0..heads {
                for p in 0..capacity {
                    // Unfilled positions keep the row's own old values.
                    let owner = if p < filled { from } else { row };
                    let want = (100 * owner + 10 * h + p) as f32;
                    assert_eq!(
                        data[(row * heads + h) * capacity + p],
                        want,
                        "row {row} head {h} position {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn append_heads_puts_each_heads_new_positions_after_its_old_prefix() {
        // Two heads; an old prefix of 2 positions a head (values 10 h + p) and a row buffer of
        // capacity 4 (values 100 + 10 h + p) whose first 3 positions are appended.
        let (heads, old, capacity, added) = (2, 2, 4, 3);
        let prefix: Vec<f32> = (0..heads * old).map(|i| (10 * (i / old) + i % old) as f32).collect();
        let row = numbered(1, heads, capacity)
            .iter()
            .map(|v| v + 100.0)
            .collect::<Vec<_>>();
        let mut to = vec![f32::NAN; heads * (old + added)];
        let sizes = PrefixHeads {
            count: heads,
            prefix: old,
            row_stride: capacity,
            added,
        };
        append_heads(&prefix, &row, sizes, &mut to);
        let want: Vec<f32> = [0, 1, 100, 101, 102, 10, 11, 110, 111, 112].map(|x| x as f32).to_vec();
        assert_eq!(to, want);
    }

    #[test]
    fn permute_filled_refuses_a_source_of_another_row_count() {
        let mut data = numbered(3, 1, 2);
        let shape = Heads {
            count: 1,
            stride: 2,
            filled: 1,
        };
        let error = permute_filled_data(&mut data, 3, &[1, 0], &[0, 1], shape, &mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains("row indices"), "{error}");
    }

    #[test]
    fn join_qk_puts_each_rows_calls_in_order() {
        // Two rows, calls of 1 and 2 tokens, one head over two frames: values say (row, token).
        let call = |tokens: usize, first: usize| CrossQk {
            data: (0..2)
                .flat_map(|r| (0..tokens).flat_map(move |t| [(10 * r + first + t) as f32; 2]))
                .collect(),
            tokens,
            heads: 1,
            frames: 2,
        };
        let joined = join_qk(&[call(1, 0), call(2, 1)], 2, 3);
        assert_eq!(joined.tokens, 3);
        let want: Vec<f32> = [0, 0, 1, 1, 2, 2, 10, 10, 11, 11, 12, 12].map(|x| x as f32).to_vec();
        assert_eq!(joined.data, want);
    }
}
