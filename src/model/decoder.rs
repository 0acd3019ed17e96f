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
//! | in `past_k_{i}`, `past_v_{i}` | f32 | `[N, H, offset, dh]`: `[N, H, 0, dh]` before the first call (exports before December 2026 read `[:offset]` of a longer one; exact lengths suit both) |
//! | in `cross_k_{i}`, `cross_v_{i}` | f32 | `[1 or N, H, T/2, dh]`: one row is shared by all `N` |
//! | out `logits` | f32 | `[N, n_logits, n_vocab]`: after each of the last `n_logits` tokens |
//! | out `present_k_{i}`, `present_v_{i}` | f32 | `[N, H, offset + n, dh]` |
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
//! The output cache of one call is the input of the next, passed as the same ONNX Runtime value
//! (no copy on our side). sherpa-onnx's graph applies a causal mask that is only right when a
//! multi-token call starts at offset 0, so for those models later multi-token feeds go one
//! token at a time. steno's graphs take a long feed in calls of at most 32 tokens (`FEED_CHUNK`),
//! which bounds the memory of the cross-attention scores.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef};

use super::token_rows::TokenRows;
use super::{CrossKv, Layout, ModelSpec, check_outlet};
use crate::error::{Error, Result};

/// Self-attention cache of one batch of hypotheses (steno: `[k_0, v_0, k_1, v_1, …]`;
/// sherpa-onnx: `[k, v]`).
pub struct KvCache {
    values: Vec<DynValue>,
    batch: usize,
    /// Tokens already fed (the next call's `offset`).
    len: usize,
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
}

/// Longest feed of one decoder call (steno layout; [`Decoder::forward_rows`] splits longer
/// ones). The graph's cross-attention scores are `[N, H, n, T/2]`: at n = 224 on a 30 s window
/// 8 MB per tensor, a few of them live at once, and ONNX Runtime's arena keeps that high-water
/// mark for the process's life (a 20-minute file, int8: the peak rose with the prompt's length,
/// 34 MB in the first windows).
const FEED_CHUNK: usize = 32;

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
    /// Runs go through this job's stop flag when set (`WhisperModel::set_stop`).
    pub(super) stop: Option<super::Stop>,
    /// Feed long token runs in one call ([`Decoder::set_whole_feeds`]).
    whole_feeds: bool,
    /// The rows of the last call (reused from step to step).
    rows_buf: Vec<f32>,
    past_names: Vec<String>,
    present_names: Vec<String>,
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
            stop: None,
            whole_feeds: false,
            rows_buf: Vec::new(),
            past_names,
            present_names,
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

    /// Forget all but the first `len` positions of `cache` (a rejected draft). steno's graphs
    /// take a cache of exactly the positions fed, so its tensors are cut to `len` (a copy, once
    /// per rejected draft); sherpa-onnx's read `[:offset]` of a fixed buffer, so there it is
    /// bookkeeping.
    pub fn rewind(&self, cache: &mut KvCache, len: usize) -> Result<()> {
        if len > cache.len {
            return Err(Error::config(
                "tokens",
                format!("cannot rewind {} positions to {len}", cache.len),
            ));
        }
        if self.layout == Layout::Steno && len < cache.len {
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
        // A steno graph takes exactly the positions fed so far: none yet.
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
            scratch: Vec::new(),
        })
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
        if n > 1 && cache.len > 0 && self.layout == Layout::Sherpa {
            for i in 0..n {
                let column: Vec<u32> = (0..batch).map(|b| tokens[b * n + i]).collect();
                self.run(&column, 1, cache, cross, false, 1, logits)?;
            }
            return Ok(None);
        }
        if self.layout == Layout::Steno && n > FEED_CHUNK && !self.whole_feeds {
            return self.run_in_pieces(tokens, n, cache, cross, want_qk, n_logits, logits);
        }
        self.run(tokens, n, cache, cross, want_qk, n_logits, logits)
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
            if let Some(qk) = self.run(&piece, len, cache, cross, want_qk, wanted, logits)? {
                pieces.push(qk);
            }
            start += len;
        }
        if !want_qk {
            return Ok(None);
        }
        let (heads, frames) = pieces.first().map_or((0, 0), |q| (q.heads, q.frames));
        let row = heads * frames;
        let mut data = Vec::with_capacity(batch * n * row);
        for b in 0..batch {
            for q in &pieces {
                data.extend_from_slice(&q.data[b * q.tokens * row..(b + 1) * q.tokens * row]);
            }
        }
        Ok(Some(CrossQk {
            data,
            tokens: n,
            heads,
            frames,
        }))
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
        let ids: Vec<i64>;
        let offset = [cache.len as i64];
        let wanted = [n_logits as i64];
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(3 + cache.values.len() + cross.values.len());
        if let Some(table) = self.token_rows.as_mut() {
            table.gather(tokens, &mut self.rows_buf)?;
            inputs.push((
                "token_rows".into(),
                TensorRef::from_array_view(([batch, n, table.width()], self.rows_buf.as_slice()))
                    .map_err(Error::ort("creating the token_rows tensor"))?
                    .into(),
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
            TensorRef::from_array_view(([1usize], &offset[..]))
                .map_err(Error::ort("creating the offset tensor"))?
                .into(),
        ));
        if self.has_n_logits {
            inputs.push((
                "n_logits".into(),
                TensorRef::from_array_view(([1usize], &wanted[..]))
                    .map_err(Error::ort("creating the n_logits tensor"))?
                    .into(),
            ));
        }
        for (name, value) in self.past_names.iter().zip(&cache.values) {
            inputs.push((name.as_str().into(), value.into()));
        }
        for (name, value) in self.cross_names.iter().zip(&cross.values) {
            inputs.push((name.as_str().into(), value.into()));
        }
        let out = match &self.stop {
            Some(stop) => self.session.run_with_options(inputs, stop.run_options()),
            None => self.session.run(inputs),
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
        for (slot, name) in cache.values.iter_mut().zip(&self.present_names) {
            *slot = out.remove(name.as_str()).ok_or_else(|| missing(name))?;
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
            if !read.is_empty() {
                for value in cache.values.iter_mut() {
                    permute_rows(value, axis, source, &read, &mut cache.scratch)?;
                }
            }
            return Ok(());
        }
        for value in cache.values.iter_mut() {
            *value = gather_rows(value, axis, source)?;
        }
        cache.batch = source.len();
        Ok(())
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
