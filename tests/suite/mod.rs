mod cli;
mod common;
mod engine;
mod faults;
mod mel;
mod outputs;
mod server;
mod stream;
