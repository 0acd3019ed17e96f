//! The one entry to transcription. [`Engine::start`] loads the model on an inference worker
//! thread that owns the ONNX Runtime sessions (no lock around the model); callers send it
//! log-mel spectrograms over a channel and get transcripts and progress back.
//!
//! ```text
//! caller thread(s): audio → 16 kHz → log-mel (Engine::prepare)
//!      └─ bounded(1) channel of jobs ─▶ worker thread: encoder + decoder (owns the sessions)
//!      ◀─ per-job channel of updates (progress, then the transcript) ─┘
//! ```
//!
//! The caller prepares the next clip while the worker decodes the current one, so reading and
//! feature extraction overlap inference ([`Engine::transcribe_files`] does this for a batch).
//! The engine holds the weights; each job's state (caches, mel, transcript) lives and dies
//! with the job.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::audio::{self, Audio};
use crate::error::{Error, Result};
use crate::features::{LogMel, Mel};
use crate::model::{Layout, ModelFiles, ModelSpec, ModelVariant, WhisperModel};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::transcribe::{TranscribeOptions, Transcript, transcribe};

/// Which model to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Folder of the export (`models/whisper-tiny.en`).
    pub dir: PathBuf,
    pub variant: ModelVariant,
    /// The command that provisions this model, for "model missing" errors.
    pub provision_hint: String,
}

impl ModelConfig {
    /// `name` is a folder path, or a model name provisioned under `models_dir`
    /// (`tiny.en` → `<models_dir>/whisper-tiny.en`).
    pub fn resolve(name: &str, models_dir: &Path, variant: ModelVariant) -> ModelConfig {
        let as_path = Path::new(name);
        if name.contains('/') || as_path.is_dir() {
            return ModelConfig {
                dir: as_path.to_path_buf(),
                variant,
                provision_hint: "models/provision --model tiny.en|base (or point --model at a Whisper export folder)"
                    .into(),
            };
        }
        ModelConfig {
            dir: models_dir.join(format!("whisper-{name}")),
            variant,
            provision_hint: format!("models/provision --model {name}"),
        }
    }
}

/// Everything the engine needs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model: ModelConfig,
    pub runtime: RuntimeConfig,
    pub options: TranscribeOptions,
}

/// What the caller hears about a job.
#[derive(Debug)]
pub enum Update {
    /// Seconds of audio done so far.
    Progress(f64),
    /// The job is over.
    Done(Result<Transcript>),
}

struct Job {
    mel: Mel,
    updates: Sender<Update>,
}

/// A model loaded on its worker thread.
pub struct Engine {
    jobs: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    spec: ModelSpec,
    files: ModelFiles,
    layout: Layout,
    log_mel: LogMel,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Load ONNX Runtime and the model, and start the worker. Fails (with the provisioning
    /// command in the message) when the model or runtime is missing, or the options do not fit
    /// the model (e.g. `--language de` on an English-only model).
    pub fn start(config: EngineConfig) -> Result<Engine> {
        config.options.validate()?;
        let files = ModelFiles::discover(&config.model.dir, config.model.variant, &config.model.provision_hint)?;
        let runtime = Runtime::get(&config.runtime)?;
        let (jobs_tx, jobs_rx) = bounded::<Job>(1);
        let (ready_tx, ready_rx) = bounded::<Result<(ModelSpec, ModelFiles, Layout)>>(1);
        let options = config.options;
        let worker = std::thread::Builder::new()
            .name("steno-inference".into())
            .spawn(move || {
                let model = WhisperModel::load(&runtime, files).and_then(|m| {
                    options.check_model(&m)?;
                    Ok(m)
                });
                let mut model = match model {
                    Ok(m) => {
                        let _ = ready_tx.send(Ok((m.spec.clone(), m.files.clone(), m.layout)));
                        m
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in jobs_rx {
                    let updates = job.updates;
                    let result = transcribe(&mut model, &job.mel, &options, &mut |s| {
                        let _ = updates.send(Update::Progress(s));
                    });
                    let _ = updates.send(Update::Done(result));
                }
            })
            .map_err(|e| Error::Worker(format!("cannot start the inference thread: {e}")))?;
        let (spec, files, layout) = match ready_rx.recv() {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            Err(_) => {
                let reason = match worker.join() {
                    Err(_) => "it panicked while loading the model".to_owned(),
                    Ok(()) => "it exited while loading the model".to_owned(),
                };
                return Err(Error::Worker(reason));
            }
        };
        let log_mel = LogMel::new(spec.n_mels).map_err(|e| Error::config("n_mels", e.to_string()))?;
        Ok(Engine {
            jobs: Some(jobs_tx),
            worker: Some(worker),
            spec,
            files,
            layout,
            log_mel,
        })
    }

    /// The loaded model's dimensions.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The loaded model's tensor contract.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The loaded model's files.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// 16 kHz mono samples → normalised log-mel, on the calling thread.
    pub fn prepare(&self, samples: &[f32]) -> Mel {
        let mut mel = self.log_mel.log10_mel(samples);
        mel.normalize_whisper();
        mel
    }

    /// Queue a job; updates arrive on the returned channel. Blocks while the worker is busy
    /// with an earlier job and one more is already queued.
    pub fn submit(&self, mel: Mel) -> Result<Receiver<Update>> {
        let (tx, rx) = unbounded();
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Worker("engine is shut down".into()))?;
        jobs.send(Job { mel, updates: tx })
            .map_err(|_| Error::Worker("the inference thread has stopped".into()))?;
        Ok(rx)
    }

    /// Transcribe samples, blocking; `progress` hears the seconds done.
    pub fn transcribe_samples(&self, samples: &[f32], progress: &mut dyn FnMut(f64)) -> Result<Transcript> {
        let rx = self.submit(self.prepare(samples))?;
        wait(&rx, progress)
    }

    /// Read a file and transcribe it.
    pub fn transcribe_file(&self, path: &Path) -> Result<Transcript> {
        let audio = audio::read_audio(path)?;
        self.transcribe_samples(&audio.samples, &mut |_| {})
    }

    /// Transcribe many files in order, reading and preparing the next file on another thread
    /// while the worker decodes the current one. `sink` hears every event; a file that cannot
    /// be read or decoded is reported and the batch goes on.
    pub fn transcribe_files(&self, paths: &[PathBuf], sink: &mut dyn FnMut(FileEvent)) {
        let (prepared_tx, prepared_rx) = bounded::<(usize, Result<(Audio, Mel)>)>(1);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for (i, path) in paths.iter().enumerate() {
                    let prepared = audio::read_audio(path).map_err(Error::from).map(|audio| {
                        let mel = self.prepare(&audio.samples);
                        (audio, mel)
                    });
                    if prepared_tx.send((i, prepared)).is_err() {
                        return;
                    }
                }
            });
            for (index, prepared) in prepared_rx {
                let path = &paths[index];
                let (audio, mel) = match prepared {
                    Ok(p) => p,
                    Err(error) => {
                        sink(FileEvent::Finished {
                            index,
                            path,
                            result: Err(error),
                        });
                        continue;
                    }
                };
                sink(FileEvent::Started {
                    index,
                    path,
                    duration: audio.duration_s(),
                });
                let result = self
                    .submit(mel)
                    .and_then(|rx| wait(&rx, &mut |s| sink(FileEvent::Progress { index, seconds: s })));
                sink(FileEvent::Finished { index, path, result });
            }
        });
    }
}

/// Transcribe `paths` on several engines at once (each its own model copy and worker), one
/// file per engine at a time; `sink` hears every event on the calling thread, in the order
/// they happen. With one engine this is [`Engine::transcribe_files`] (which also overlaps
/// reading the next file with decoding).
pub fn transcribe_files_parallel(engines: &[Engine], paths: &[PathBuf], sink: &mut dyn FnMut(FileEvent)) {
    if engines.len() <= 1 {
        if let Some(engine) = engines.first() {
            engine.transcribe_files(paths, sink);
        }
        return;
    }
    enum Owned {
        Started(usize, f64),
        Progress(usize, f64),
        Finished(usize, Result<Transcript>),
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = unbounded::<Owned>();
    std::thread::scope(|scope| {
        for engine in engines {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(index) else { break };
                    let prepared = audio::read_audio(path).map_err(Error::from);
                    let result = prepared.and_then(|audio| {
                        let _ = tx.send(Owned::Started(index, audio.duration_s()));
                        let rx = engine.submit(engine.prepare(&audio.samples))?;
                        wait(&rx, &mut |s| {
                            let _ = tx.send(Owned::Progress(index, s));
                        })
                    });
                    if tx.send(Owned::Finished(index, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for event in rx {
            sink(match event {
                Owned::Started(index, duration) => FileEvent::Started {
                    index,
                    path: &paths[index],
                    duration,
                },
                Owned::Progress(index, seconds) => FileEvent::Progress { index, seconds },
                Owned::Finished(index, result) => FileEvent::Finished {
                    index,
                    path: &paths[index],
                    result,
                },
            });
        }
    });
}

/// Events of a batch ([`Engine::transcribe_files`]).
#[derive(Debug)]
pub enum FileEvent<'a> {
    /// The file was read; decoding starts.
    Started {
        index: usize,
        path: &'a Path,
        duration: f64,
    },
    /// Seconds of this file done.
    Progress { index: usize, seconds: f64 },
    /// The file is done (or failed).
    Finished {
        index: usize,
        path: &'a Path,
        result: Result<Transcript>,
    },
}

fn wait(rx: &Receiver<Update>, progress: &mut dyn FnMut(f64)) -> Result<Transcript> {
    for update in rx {
        match update {
            Update::Progress(s) => progress(s),
            Update::Done(result) => return result,
        }
    }
    Err(Error::Worker("the inference thread stopped during a job".into()))
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the job channel ends the worker's loop.
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
