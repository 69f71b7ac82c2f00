//! Compiles the machine API's .proto with protox (pure Rust), so building
//! Kiln needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/kiln/machine/v1/machine.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    // No generated `connect()`: kiln-api-client dials with its own TLS, and
    // the crate then needs no transport (kilnctl's offline commands use it).
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
