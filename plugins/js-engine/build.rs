//! Builds the JavaScript engine guest: QuickJS (the C sources vendored by `rquickjs-sys`) and
//! `guest/engine.c`, compiled for wasm32-wasi with clang. The module is built from source on
//! every clean build and never committed.

use std::path::{Path, PathBuf};
use std::process::Command;

const QUICKJS_SOURCES: [&str; 4] = ["quickjs.c", "libregexp.c", "libunicode.c", "dtoa.c"];

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

/// The directory of QuickJS's C sources inside the `rquickjs-sys` package, found through
/// `cargo metadata` so that the registry's copy is used without vendoring it.
fn quickjs_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").expect("cargo sets CARGO");
    let manifest =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // Only this platform's packages: the others need not be downloaded.
    let host = std::env::var("HOST").expect("cargo sets HOST");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host, "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("cannot run cargo metadata");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let package = metadata["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "rquickjs-sys"))
        .expect("rquickjs-sys is a build dependency");
    let manifest = package["manifest_path"].as_str().expect("a package has a manifest path");
    Path::new(manifest).parent().expect("a manifest is in a directory").join("quickjs")
}
