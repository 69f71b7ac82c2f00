//! The CRI v1 messages and services (`runtime.v1`), generated from the
//! vendored `proto/runtime/v1/api.proto`.

/// Generated code for `runtime.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}
