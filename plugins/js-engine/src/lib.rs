//! The JavaScript engine Latchkey runs TypeScript and JavaScript functions on: QuickJS compiled
//! to wasm32-wasi by this crate's build script (see `guest/engine.c` for the guest's ABI).

/// The engine module, a wasm32-wasi reactor.
pub const ENGINE_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/engine.wasm"));
