//! The machine API (`kiln.machine.v1`): the messages and the `Machine`
//! service, generated from `proto/kiln/machine/v1/machine.proto`. apid serves
//! it; kilnctl calls it.

/// Generated code for `kiln.machine.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("kiln.machine.v1");
}

/// The TCP port apid listens on, in maintenance mode and configured.
pub const PORT: u16 = 50000;
