//! Builds the guardian program (`guardian/main.rs`), which the crate embeds
//! (see `src/guardian.rs`): a `no_std`, statically linked executable that a
//! call's guardian execs to leave the function's memory. It is compiled with
//! the same `rustc` as the crate, so nothing else is needed to build it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("set by cargo");
    let source = manifest.join("guardian/main.rs");
    for input in [
        "guardian/main.rs",
        "src/sys/procfs.rs",
        "src/sys/raw.rs",
        "src/guardian/watch.rs",
    ] {
        println!("cargo:rerun-if-changed={input}");
    }
    let program = out.join("pynisher-guard");
    let mut command = Command::new(rustc);
    command
        .arg("--edition=2021")
        .arg("--crate-type=bin")
        .arg("--crate-name=pynisher_guard")
        .arg(format!("--target={target}"))
        .args(["-C", "panic=abort"])
        .args(["-C", "opt-level=s"])
        .args(["-C", "debuginfo=0"])
        .args(["-C", "strip=symbols"])
        .args(["-C", "relocation-model=static"])
        .args(["-C", "target-feature=+crt-static"])
        .args(["-C", "link-arg=-nostartfiles"])
        .args(["-C", "link-arg=-nostdlib"])
        .arg("-o")
        .arg(&program)
        .arg(&source);
    // The crate's own flags (say, from a profiler build) are not meant for
    // this program.
    command.env_remove("CARGO_ENCODED_RUSTFLAGS");
    let output = command
        .output()
        .expect("running rustc for the guardian program");
    if !output.status.success() {
        panic!(
            "building the guardian program failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
