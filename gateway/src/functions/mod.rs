//! Functions: syncs and actions written in TypeScript or JavaScript (run on QuickJS compiled to
//! WebAssembly) or compiled to WebAssembly themselves, all sandboxed by wasmtime and all seeing
//! the same host API ([`host`]): calls through the connection, records, metadata, checkpoints,
//! logs.

pub mod api;
pub mod catalog;
pub mod cli;
mod compile;
mod host;
mod native;
pub mod run;
pub mod sandbox;
mod snapshot;
mod state;
pub mod tasks;

pub use catalog::{Function, Functions, Kind};
pub use host::ENV_PREFIX;
pub use run::{invoke, Context, Finished, FunctionError, Limits, SyncRun};
pub use state::clear_or_save as save_checkpoint;

/// Starts what functions need in the background: the scheduler, and the JavaScript engine,
/// compiled ahead of the first run when the configuration has functions (it takes a while).
pub fn start(app: &std::sync::Arc<crate::app::App>) {
    crate::scheduler::spawn(std::sync::Arc::clone(app));
    if app.config.current().functions.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(|| {
        if let Err(e) = sandbox::Sandbox::get().and_then(|s| s.js_engine()) {
            tracing::error!("functions cannot run: {e}");
        }
    });
}
