//! # Latchkey's plugin ABI
//!
//! A function (a sync or an action) can be TypeScript, a WebAssembly module, or a native shared
//! library. The last two speak this ABI; TypeScript runs on a JavaScript engine that is itself
//! a WebAssembly module speaking it. Everything crosses as UTF-8 JSON.
//!
//! ## The conversation
//! The gateway calls the function's `run` once with the **context** (JSON):
//! `{connectionId, providerConfigKey, provider, scriptType: "sync"|"action", input, paginate,
//! syncName?, variant?, lastSyncDate?}`. The function then calls the host as often as it
//! likes: `call(op, arg) -> answer`, where `arg` and `answer` are JSON and the answer is
//! `{"ok": value}` or `{"error": {"message", "type", "response"?}}`. It ends by calling
//! `output` (an action's result) or `fail`, and returning 0.
//!
//! ## Operations
//! | op | argument | answer (`ok`) |
//! |---|---|---|
//! | `proxy` | `{method, endpoint, params?, data?, headers?, retries?, retryOn?, baseUrlOverride?}` | `{status, headers, data}`; 4xx/5xx are errors carrying `response` |
//! | `batchSave`, `batchUpdate`, `batchDelete` | `{model, records: [{id, …}]}` | `{added, updated, deleted}` |
//! | `trackDeletesStart`, `trackDeletesEnd` | `{model}` | `null`, `{deletedKeys}` |
//! | `getConnection` | `{}` | the connection, credentials included |
//! | `getMetadata`, `setMetadata`, `updateMetadata` | `{}`, `{metadata}`, `{metadata}` | the metadata, `null`, `null` |
//! | `getCheckpoint`, `saveCheckpoint`, `clearCheckpoint` | `{}`, `{checkpoint}`, `{}` | the checkpoint (flat object) or `null` |
//! | `getEnvironmentVariables` | `{}` | `[{name, value}]` (the gateway's `LATCHKEY_FN_ENV_*` variables) |
//! | `log` | `{level: debug|info|warn|error, message, payload?}` | `null` |
//! | `output` | the result | `null`; an error past the output limit (2 MB by default) |
//! | `fail` | `{message, type?, payload?}` | `null`; `type: "action_script_runtime_error"` with `payload` is Nango's ActionError |
//! | `context` | `null` | the context again |
//!
//! ## WebAssembly modules (`.wasm`, or `.wat` text)
//! Imports, from module `latchkey`:
//! - `call(op_ptr: i32, op_len: i32, arg_ptr: i32, arg_len: i32) -> i32`: performs `op`; the
//!   answer is kept by the host and its length returned;
//! - `response(dst: i32)`: copies the kept answer to `dst` (which must have room for it).
//!
//! Exports: `memory`; `alloc(len: i32) -> i32`, where the host places the context; and
//! `run(ptr: i32, len: i32) -> i32` (0 for success). A reactor's `_initialize` is called first
//! when exported. WASI is limited to a clock and `fd_write` to stdout/stderr (which go to the
//! gateway's debug log). Each run gets a fresh instance, a memory cap and a deadline.
//!
//! ## Native libraries (`.so`, `.dylib`, `.dll`)
//! Exports (C ABI): `latchkey_abi_version() -> u32` returning [`ABI_VERSION`], and
//! `latchkey_run(input: *const u8, len: usize, host: *const HostApi) -> i32`; the host calls go
//! through [`HostApi`]. Native code is trusted: it runs in the gateway's process, fastest and
//! without a sandbox (the time limit bounds only its host calls). A panic must not cross the
//! boundary; [`export_function!`] catches it. A library is loaded when the configuration is;
//! replacing the file at the same path needs a restart, since the loader keeps the first copy.

use std::ffi::c_void;

use serde_json::{json, Value};

/// The version of the native ABI; the gateway refuses a library reporting another.
pub const ABI_VERSION: u32 = 1;
/// The symbol of [`VersionFn`].
pub const VERSION_SYMBOL: &[u8] = b"latchkey_abi_version\0";
/// The symbol of [`RunFn`].
pub const RUN_SYMBOL: &[u8] = b"latchkey_run\0";

pub type VersionFn = unsafe extern "C" fn() -> u32;
pub type RunFn = unsafe extern "C" fn(input: *const u8, len: usize, host: *const HostApi) -> i32;

/// The host as a native library sees it.
#[repr(C)]
pub struct HostApi {
    pub ctx: *mut c_void,
    /// Performs `op` with the JSON `arg`; returns the answer, `*answer_len` bytes, which the
    /// caller gives back with `free`.
    pub call: unsafe extern "C" fn(
        ctx: *mut c_void,
        op: *const u8,
        op_len: usize,
        arg: *const u8,
        arg_len: usize,
        answer_len: *mut usize,
    ) -> *mut u8,
    pub free: unsafe extern "C" fn(ctx: *mut c_void, answer: *mut u8, len: usize),
}

/// A safe handle on [`HostApi`] for functions written in Rust.
pub struct Host<'a> {
    api: &'a HostApi,
}

impl<'a> Host<'a> {
    /// # Safety
    /// `api` must be the pointer the gateway passed to `latchkey_run`, used during that call.
    pub unsafe fn new(api: *const HostApi) -> Option<Host<'a>> {
        // SAFETY: the caller vouches for the pointer's validity during the call.
        unsafe { api.as_ref() }.map(|api| Host { api })
    }

    /// Calls `op`; `Err` carries the host's error message.
    pub fn call(&self, op: &str, arg: &Value) -> Result<Value, String> {
        let arg = arg.to_string();
        let mut len = 0usize;
        // SAFETY: the pointers and lengths describe live buffers; the answer is returned to the
        // host's `free` with its length, as the ABI requires.
        let answer = unsafe {
            let ptr = (self.api.call)(self.api.ctx, op.as_ptr(), op.len(), arg.as_ptr(), arg.len(), &mut len);
            if ptr.is_null() {
                return Err("the host returned no answer".into());
            }
            let text = std::slice::from_raw_parts(ptr, len).to_vec();
            (self.api.free)(self.api.ctx, ptr, len);
            text
        };
        let answer: Value =
            serde_json::from_slice(&answer).map_err(|e| format!("the host's answer is not JSON: {e}"))?;
        match answer.get("error") {
            Some(error) => Err(error["message"].as_str().unwrap_or("the host refused the call").to_string()),
            None => Ok(answer.get("ok").cloned().unwrap_or(Value::Null)),
        }
    }

    pub fn log(&self, level: &str, message: &str) {
        // A log line that cannot be written is not worth failing the function for.
        let _ = self.call("log", &json!({ "level": level, "message": message }));
    }
}

/// Exports `latchkey_abi_version` and `latchkey_run` for
/// `fn(&Host, context: Value) -> Result<Value, String>`: `Ok` is the output, `Err` the failure.
#[macro_export]
macro_rules! export_function {
    ($run:path) => {
        #[no_mangle]
        pub extern "C" fn latchkey_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        /// # Safety
        /// Called by the gateway with a valid input buffer and host.
        #[no_mangle]
        pub unsafe extern "C" fn latchkey_run(input: *const u8, len: usize, api: *const $crate::HostApi) -> i32 {
            // SAFETY: the gateway passes a live buffer of `len` bytes and a valid host.
            let Some(host) = (unsafe { $crate::Host::new(api) }) else { return 2 };
            let input = unsafe { std::slice::from_raw_parts(input, len) };
            let context = serde_json::from_slice(input).unwrap_or(serde_json::Value::Null);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| $run(&host, context)));
            let reported = match outcome {
                Ok(Ok(output)) => host.call("output", &output),
                Ok(Err(message)) => host.call("fail", &serde_json::json!({ "message": message })),
                Err(_) => host.call("fail", &serde_json::json!({ "message": "the function panicked" })),
            };
            i32::from(reported.is_err())
        }
    };
}
