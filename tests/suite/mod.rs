mod cli;
mod common;
mod engine;
mod mel;
mod outputs;
mod server;
mod stream;
