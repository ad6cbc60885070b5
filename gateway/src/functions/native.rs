//! Native functions: shared libraries speaking the plugin ABI (see `latchkey-plugin-sdk`),
//! loaded with libloading. They are trusted code in the gateway's process: fastest, and
//! unsandboxed.

use std::ffi::c_void;
use std::path::Path;

use latchkey_plugin_sdk::{HostApi, RunFn, VersionFn, ABI_VERSION, RUN_SYMBOL, VERSION_SYMBOL};

use super::sandbox::Host;

pub struct NativeFunction {
    run: RunFn,
    /// Keeps the code of `run` mapped.
    _library: libloading::Library,
}

impl NativeFunction {
    pub fn load(path: &Path) -> Result<NativeFunction, String> {
        // SAFETY: loading runs the library's initialisers; native functions are trusted code,
        // named by whoever writes the configuration.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot load the library: {e}"))?;
        // SAFETY: the symbols' types are the ABI's; the version check guards against a library
        // built for another one.
        let (version, run) = unsafe {
            let version = library.get::<VersionFn>(VERSION_SYMBOL).map_err(|_| {
                "the library exports no `latchkey_abi_version`; build it with latchkey-plugin-sdk".to_string()
            })?;
            let run = library
                .get::<RunFn>(RUN_SYMBOL)
                .map_err(|_| "the library exports no `latchkey_run`; build it with latchkey-plugin-sdk".to_string())?;
            (version(), *run)
        };
        if version != ABI_VERSION {
            return Err(format!("the library speaks plugin ABI {version}; this gateway speaks {ABI_VERSION}"));
        }
        Ok(NativeFunction { run, _library: library })
    }

    /// Calls `latchkey_run` with the context and a host; returns the function's status.
    pub fn run(&self, input: &[u8], host: &mut dyn Host) -> i32 {
        let mut host: &mut dyn Host = host;
        let api = HostApi { ctx: (&mut host as *mut &mut dyn Host).cast::<c_void>(), call, free };
        // SAFETY: `api` and `input` outlive the call; `run` has the ABI's signature.
        unsafe { (self.run)(input.as_ptr(), input.len(), &api) }
    }
}

unsafe extern "C" fn call(
    ctx: *mut c_void,
    op: *const u8,
    op_len: usize,
    arg: *const u8,
    arg_len: usize,
    answer_len: *mut usize,
) -> *mut u8 {
    // SAFETY: `ctx` is the `&mut dyn Host` of `run`, alive during the call; the buffers are the
    // library's, described by their lengths.
    let (host, op, arg) = unsafe {
        (
            &mut *ctx.cast::<&mut dyn Host>(),
            std::slice::from_raw_parts(op, op_len),
            std::slice::from_raw_parts(arg, arg_len),
        )
    };
    let answer = host.call(&String::from_utf8_lossy(op), arg).into_boxed_slice();
    // SAFETY: the library passed a valid place for the length.
    unsafe { *answer_len = answer.len() };
    Box::into_raw(answer).cast::<u8>()
}

unsafe extern "C" fn free(_ctx: *mut c_void, answer: *mut u8, len: usize) {
    // SAFETY: `answer` and `len` come from `call`, which leaked a boxed slice of that length.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(answer, len)) });
}
