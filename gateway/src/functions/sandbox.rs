//! The WebAssembly sandbox: wasmtime running a guest that speaks Latchkey's plugin ABI (see the
//! `latchkey-plugin-sdk` crate): the QuickJS engine for TypeScript and JavaScript functions, or
//! a function compiled to WebAssembly. Each run gets a fresh instance, a memory cap and a
//! deadline enforced by epoch interruption, so an endless loop or an allocation bomb ends that
//! run with an error and nothing else.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::{Caller, Engine, Extern, Instance, InstancePre, Linker, Memory, Module, ResourceLimiter, Store, Trap};

use super::{run, snapshot};

/// How often the deadline clock ticks; deadlines are rounded up to it.
const TICK: Duration = Duration::from_millis(5);

/// How much of an instance's memory stays mapped between the instances of a slot: more than
/// the JavaScript engine's started memory and what a small function adds to it.
const KEEP_RESIDENT: usize = 4 << 20;
/// How long the engine's start-up may take (it takes milliseconds).
const START_UP_LIMIT: Duration = Duration::from_secs(60);

/// The host side of the ABI: one operation with a JSON argument, one JSON answer.
pub trait Host: Send {
    fn call(&mut self, op: &str, arg: &[u8]) -> Vec<u8>;
}

/// Why a sandboxed run ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the function ran longer than its time limit of {0:?} and was stopped")]
    Timeout(Duration),
    #[error("the function tried to use more than its memory limit of {} MiB and was stopped", .0 / (1024 * 1024))]
    Memory(usize),
    #[error("the function crashed: {0}")]
    Trap(String),
    #[error("the module does not follow Latchkey's plugin ABI: {0}")]
    Abi(String),
    #[error("the WebAssembly engine is unavailable: {0}")]
    Engine(String),
}

pub struct State {
    host: Box<dyn Host>,
    pending: Vec<u8>,
    limiter: Limiter,
}

struct Limiter {
    max_memory: usize,
    hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The shared engine, its deadline clock and the linker of the host functions.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<State>,
}

static SANDBOX: OnceLock<Result<Sandbox, String>> = OnceLock::new();
static JS_ENGINE: OnceLock<Result<InstancePre<State>, String>> = OnceLock::new();

impl Sandbox {
    pub fn get() -> Result<&'static Sandbox, SandboxError> {
        SANDBOX.get_or_init(Sandbox::new).as_ref().map_err(|e| SandboxError::Engine(e.clone()))
    }

    fn new() -> Result<Sandbox, String> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // Instances come from a pool of slots reserved once: a new instance in a used slot finds
        // its memory reset to the module's initial contents, the dirty pages copied back while
        // they stay mapped, instead of mapping fresh memory and faulting every page it touches.
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.linear_memory_keep_resident(KEEP_RESIDENT).pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| e.to_string())?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("latchkey-fn-clock".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                ticker.increment_epoch();
            })
            .map_err(|e| e.to_string())?;
        let mut linker = Linker::new(&engine);
        define_abi(&mut linker).map_err(|e| e.to_string())?;
        Ok(Sandbox { engine, linker })
    }

    /// The JavaScript engine, compiled once per process (the first call takes a while).
    pub fn js_engine(&self) -> Result<&'static InstancePre<State>, SandboxError> {
        JS_ENGINE
            .get_or_init(|| {
                let module = self.engine_module()?;
                self.linker.instantiate_pre(&module).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| SandboxError::Engine(e.clone()))
    }

    /// The engine's machine code, snapshotted after start-up (see [`snapshot`]), from the data
    /// directory when an earlier start made it (that takes seconds, loading milliseconds). The
    /// file is keyed by the engine's bytes, the prelude it ran and wasmtime's settings, and lives
    /// beside the encryption key: it is trusted like it.
    fn engine_module(&self) -> Result<Module, String> {
        use std::hash::{Hash, Hasher};
        let started = std::time::Instant::now();
        let mut hasher = std::hash::DefaultHasher::new();
        (latchkey_js_engine::ENGINE_WASM, env!("CARGO_PKG_VERSION"), run::PRELUDE, run::BUILTIN_MODULES)
            .hash(&mut hasher);
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir =
            std::env::var_os("LATCHKEY_DATA_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| ".latchkey".into());
        let path = dir.join(format!("js-engine-{:016x}.cwasm", hasher.finish()));
        if path.is_file() {
            // SAFETY: the file was written by `Module::serialize` below, for this engine build
            // (the name carries the compatibility hash), in a directory only the gateway writes.
            match unsafe { Module::deserialize_file(&self.engine, &path) } {
                Ok(module) => {
                    tracing::info!("loaded the JavaScript engine in {:?}", started.elapsed());
                    return Ok(module);
                }
                Err(e) => {
                    tracing::warn!("cannot load the compiled JavaScript engine {} ({e}); compiling it", path.display())
                }
            }
        }
        let module = Module::new(&self.engine, latchkey_js_engine::ENGINE_WASM).map_err(|e| e.to_string())?;
        let memory = self.start_up(&module).map_err(|e| format!("the engine failed to start: {e}"))?;
        let snapshot = snapshot::rewrite(latchkey_js_engine::ENGINE_WASM, &memory)?;
        let module = Module::new(&self.engine, snapshot).map_err(|e| e.to_string())?;
        tracing::info!(
            "compiled the JavaScript engine and its {} KiB snapshot in {:?}",
            memory.len() / 1024,
            started.elapsed()
        );
        let saved = module.serialize().map_err(|e| e.to_string()).and_then(|bytes| {
            let partial = path.with_extension("partial");
            std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(&partial, bytes))
                .and_then(|_| std::fs::rename(&partial, &path))
                .map_err(|e| e.to_string())
        });
        if let Err(e) = saved {
            tracing::warn!("cannot keep the compiled JavaScript engine in {}: {e}", dir.display());
        }
        Ok(module)
    }

    /// Runs the engine's `init` with the prelude and returns its memory afterwards.
    fn start_up(&self, module: &Module) -> Result<Vec<u8>, String> {
        let guest = self.linker.instantiate_pre(module).map_err(|e| e.to_string())?;
        let host = Arc::new(Mutex::new(Prelude::default()));
        let state = State {
            host: Box::new(Shared(Arc::clone(&host))),
            pending: Vec::new(),
            limiter: Limiter { max_memory: usize::MAX, hit: false },
        };
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(START_UP_LIMIT.as_micros().div_ceil(TICK.as_micros()) as u64);
        let (instance, status) =
            call(&mut store, &guest, "init", run::PRELUDE.as_bytes()).map_err(|e| format!("{e:#}"))?;
        if status != 0 {
            let failure = host.lock().map(|h| h.failure.clone()).unwrap_or_default();
            return Err(format!("status {status} {failure}"));
        }
        let memory = instance.get_memory(&mut store, "memory").ok_or("the engine exports no `memory`")?;
        Ok(memory.data(&store).to_vec())
    }

    /// Compiles a guest module (a function written in any language compiled to WebAssembly, or
    /// WAT text).
    pub fn prepare(&self, bytes: &[u8]) -> Result<InstancePre<State>, SandboxError> {
        let module = Module::new(&self.engine, bytes).map_err(|e| SandboxError::Abi(format!("{e:#}")))?;
        self.linker.instantiate_pre(&module).map_err(|e| SandboxError::Abi(format!("{e:#}")))
    }

    /// Runs a guest once: `run(input)` in a fresh instance. Returns the guest's status code.
    pub fn run(
        &self,
        guest: &InstancePre<State>,
        input: &[u8],
        host: Box<dyn Host>,
        wall_time: Duration,
        max_memory: usize,
    ) -> Result<i32, SandboxError> {
        let state = State { host, pending: Vec::new(), limiter: Limiter { max_memory, hit: false } };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(wall_time.as_micros().div_ceil(TICK.as_micros()) as u64 + 1);
        store.epoch_deadline_trap();
        let outcome = call(&mut store, guest, "run", input).map(|(_, status)| status);
        match outcome {
            // QuickJS turns a refused allocation into an exception the function may even catch;
            // the run still ends as having hit its memory limit.
            _ if store.data().limiter.hit => Err(SandboxError::Memory(max_memory)),
            Ok(status) => Ok(status),
            Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => Err(SandboxError::Timeout(wall_time)),
            Err(e) => Err(SandboxError::Trap(format!("{e:#}"))),
        }
    }
}

/// Instantiates `guest` in `store` and calls `export(input)`: its `_initialize` first if it has
/// one, then `alloc` for the input.
fn call(
    store: &mut Store<State>,
    guest: &InstancePre<State>,
    export: &str,
    input: &[u8],
) -> wasmtime::Result<(Instance, i32)> {
    let instance = guest.instantiate(&mut *store)?;
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
        init.call(&mut *store, ())?;
    }
    let alloc = instance.get_typed_func::<i32, i32>(&mut *store, "alloc")?;
    let entry = instance.get_typed_func::<(i32, i32), i32>(&mut *store, export)?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::format_err!("the module exports no `memory`"))?;
    let len = i32::try_from(input.len()).map_err(|_| wasmtime::format_err!("the input is too large"))?;
    let ptr = alloc.call(&mut *store, len)?;
    if ptr == 0 && len > 0 {
        wasmtime::bail!("`alloc` returned null");
    }
    memory.write(&mut *store, ptr as usize, input)?;
    let status = entry.call(&mut *store, (ptr, len))?;
    Ok((instance, status))
}

/// The host the engine starts up with: it serves the SDK's modules and keeps a failure.
#[derive(Default)]
struct Prelude {
    failure: String,
}

impl Host for Prelude {
    fn call(&mut self, op: &str, arg: &[u8]) -> Vec<u8> {
        match op {
            "module" => run::builtin_module(&String::from_utf8_lossy(arg)).unwrap_or_default().as_bytes().to_vec(),
            "fail" => {
                self.failure = String::from_utf8_lossy(arg).into_owned();
                b"{}".to_vec()
            }
            _ => br#"{"error":{"message":"the prelude cannot call the host"}}"#.to_vec(),
        }
    }
}

fn memory(caller: &mut Caller<'_, State>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => wasmtime::bail!("the module exports no `memory`"),
    }
}

fn read(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    let mut buf = vec![0; usize::try_from(len)?];
    memory.read(&*caller, usize::try_from(ptr)?, &mut buf)?;
    Ok(buf)
}

/// `latchkey.call`/`latchkey.response`, and the few WASI functions C's runtime needs (a clock
/// and writes to stdout/stderr, which go to the log; there is no file system).
fn define_abi(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "latchkey",
        "call",
        |mut caller: Caller<'_, State>, op: i32, op_len: i32, arg: i32, arg_len: i32| -> wasmtime::Result<i32> {
            let op = read(&mut caller, op, op_len)?;
            let arg = read(&mut caller, arg, arg_len)?;
            let op = String::from_utf8_lossy(&op);
            let answer = caller.data_mut().host.call(&op, &arg);
            let len = i32::try_from(answer.len())?;
            caller.data_mut().pending = answer;
            Ok(len)
        },
    )?;
    linker.func_wrap("latchkey", "response", |mut caller: Caller<'_, State>, dst: i32| -> wasmtime::Result<()> {
        let pending = std::mem::take(&mut caller.data_mut().pending);
        let memory = memory(&mut caller)?;
        memory.write(&mut caller, usize::try_from(dst)?, &pending)?;
        Ok(())
    })?;
    const WASI: &str = "wasi_snapshot_preview1";
    const EBADF: i32 = 8;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, State>, _id: i32, _precision: i64, out: i32| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            let memory = memory(&mut caller)?;
            memory.write(&mut caller, usize::try_from(out)?, &nanos.to_le_bytes())?;
            wasmtime::Result::<i32>::Ok(0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Caller<'_, State>, fd: i32, iovs: i32, count: i32, written: i32| -> wasmtime::Result<i32> {
            let mut text = Vec::new();
            for i in 0..count {
                let iov = read(&mut caller, iovs + i * 8, 8)?;
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                text.extend(read(&mut caller, ptr, len)?);
            }
            if !(1..=2).contains(&fd) {
                return Ok(EBADF);
            }
            tracing::debug!(target: "latchkey::function", fd, "{}", String::from_utf8_lossy(&text).trim_end());
            let memory = memory(&mut caller)?;
            memory.write(&mut caller, usize::try_from(written)?, &(text.len() as u32).to_le_bytes())?;
            Ok(0)
        },
    )?;
    linker.func_wrap(WASI, "fd_close", |_: i32| EBADF)?;
    linker.func_wrap(WASI, "fd_seek", |_: i32, _: i64, _: i32, _: i32| EBADF)?;
    linker.func_wrap(WASI, "fd_fdstat_get", |_: i32, _: i32| EBADF)?;
    linker.func_wrap(WASI, "proc_exit", |code: i32| -> wasmtime::Result<()> {
        wasmtime::bail!("the function exited with status {code}")
    })?;
    Ok(())
}

/// A host whose state the caller keeps: the sandbox owns the box, the caller a second handle.
pub struct Shared<H>(pub Arc<Mutex<H>>);

impl<H: Host> Host for Shared<H> {
    fn call(&mut self, op: &str, arg: &[u8]) -> Vec<u8> {
        match self.0.lock() {
            Ok(mut host) => host.call(op, arg),
            Err(_) => br#"{"error":{"message":"the host failed earlier in this run"}}"#.to_vec(),
        }
    }
}
