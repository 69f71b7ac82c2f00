//! The container shim as its own binary, so that `cargo test -p kiln-cri`
//! has one to start (`CARGO_BIN_EXE_kiln-cri-shim`); on a node the same code
//! is the `kiln cri-shim` personality.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::ExitCode::from(kiln_cri::runtime::shim::main(&args).clamp(0, 255) as u8)
}
