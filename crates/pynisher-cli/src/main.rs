//! The `pynisher` binary; the command line itself is in the library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(pynisher_cli::main(std::env::args_os()))
}
