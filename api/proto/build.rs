//! Compiles the machine API's and PID 1's control channel's .proto files
//! with protox (pure Rust), so building Kiln needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/kiln/machine/v1/machine.proto",
        "proto/kiln/init/v1/init.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // No generated `connect()`: kiln-api-client dials with its own TLS, and
    // the crate then needs no transport (kilnctl's offline commands use it).
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
