//! Builds the JavaScript engine guest: QuickJS (the C sources vendored by `rquickjs-sys`) and
//! `guest/engine.c`, compiled for wasm32-wasi with clang. The module is built from source on
//! every clean build and never committed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// QuickJS's sources besides `quickjs.c`, which `guest/engine.c` includes.
const QUICKJS_SOURCES: [&str; 3] = ["libregexp.c", "libunicode.c", "dtoa.c"];

fn main() {
    println!("cargo:rerun-if-changed=guest/engine.c");
    println!("cargo:rerun-if-env-changed=LATCHKEY_WASM_CC");
    let quickjs = quickjs_dir();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let wasm = out.join("engine.wasm");
    let cc = std::env::var("LATCHKEY_WASM_CC").unwrap_or_else(|_| "clang-14".to_string());
    let mut command = Command::new(&cc);
    command
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-mexec-model=reactor"])
        .args(["-D_GNU_SOURCE", "-DNDEBUG", "-DEMSCRIPTEN=1", "-DFE_DOWNWARD=0", "-DFE_UPWARD=0"])
        .args(["-Wno-implicit-const-int-float-conversion", "-Wno-unknown-warning-option"])
        // QuickJS recurses deeply on nested code; its own stack check relies on this size.
        .args(["-Wl,-z,stack-size=1048576", "-Wl,--strip-all"])
        .arg("-I")
        .arg(&quickjs)
        .arg("-o")
        .arg(&wasm)
        .arg("guest/engine.c")
        .args(QUICKJS_SOURCES.iter().map(|f| quickjs.join(f)));
    let status = command.status().unwrap_or_else(|e| {
        panic!(
            "cannot run `{cc}` ({e}): building the JavaScript engine needs clang with the wasm32-wasi \
             target, wasi-libc, lld and libclang-rt for wasm32 (Debian: clang-14 lld-14 wasi-libc \
             libclang-rt-14-dev-wasm32), or LATCHKEY_WASM_CC naming such a clang"
        )
    });
    assert!(status.success(), "compiling the JavaScript engine for wasm32-wasi failed ({status})");
}

/// The directory of QuickJS's C sources inside the `rquickjs-sys` package: found through
/// `cargo metadata`, else in cargo's registry cache (metadata wants every package of the
/// workspace downloaded, which a plain `cargo build` does not guarantee).
fn quickjs_dir() -> PathBuf {
    metadata_dir().or_else(registry_dir).unwrap_or_else(|| {
        panic!("cannot find the sources of rquickjs-sys {RQUICKJS_SYS}: run `cargo fetch` and build again")
    })
}

/// The pinned version of the build dependency (see Cargo.toml).
const RQUICKJS_SYS: &str = "0.14.0";

fn metadata_dir() -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").ok()?;
    let manifest = Path::new(&std::env::var("CARGO_MANIFEST_DIR").ok()?).join("Cargo.toml");
    // Only this platform's packages: the others need not be downloaded.
    let host = std::env::var("HOST").ok()?;
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host, "--manifest-path"])
        .arg(&manifest)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let package = metadata["packages"].as_array()?.iter().find(|p| p["name"] == "rquickjs-sys")?;
    let manifest = package["manifest_path"].as_str()?;
    Some(Path::new(manifest).parent()?.join("quickjs"))
}

fn registry_dir() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    std::fs::read_dir(home.join("registry/src"))
        .ok()?
        .filter_map(Result::ok)
        .map(|index| index.path().join(format!("rquickjs-sys-{RQUICKJS_SYS}/quickjs")))
        .find(|dir| dir.join("quickjs.c").is_file())
}
