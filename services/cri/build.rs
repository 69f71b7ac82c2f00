//! Compiles the vendored CRI v1 protos (`proto/runtime/v1/api.proto`) with
//! protox (pure Rust): building Kiln needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/runtime/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    // RuntimeService RPCs not written yet answer UNIMPLEMENTED (the stubs).
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
