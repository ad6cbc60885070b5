//! Functions: syncs and actions written in TypeScript or JavaScript (run on QuickJS compiled to
//! WebAssembly) or compiled to WebAssembly themselves, all sandboxed by wasmtime and all seeing
//! the same host API ([`host`]): calls through the connection, records, metadata, checkpoints,
//! logs.

pub mod api;
pub mod catalog;
mod compile;
mod host;
pub mod run;
pub mod sandbox;
mod state;

pub use catalog::{Function, Functions, Kind};
pub use host::ENV_PREFIX;
pub use run::{invoke, Context, Finished, FunctionError, Limits, SyncRun};
pub use state::clear_or_save as save_checkpoint;
