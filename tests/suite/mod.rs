mod cli;
mod common;
mod engine;
mod mel;
mod outputs;
mod stream;
