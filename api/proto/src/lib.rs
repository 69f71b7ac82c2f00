//! The machine API (`kiln.machine.v1`): the messages and the `Machine`
//! service, generated from `proto/kiln/machine/v1/machine.proto`. apid serves
//! it; kilnctl calls it. Also PID 1's internal control channel
//! (`kiln.init.v1.Init`), which apid calls for the service calls.

/// Generated code for `kiln.machine.v1` (also at [`v1`]).
pub mod machine {
    #[allow(clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("kiln.machine.v1");
    }
}

pub use machine::v1;

/// PID 1's control channel, served on [`init::SOCKET`].
pub mod init {
    /// Generated code for `kiln.init.v1`.
    #[allow(clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("kiln.init.v1");
    }

    /// The unix socket PID 1 serves `kiln.init.v1.Init` on.
    pub const SOCKET: &str = "/run/kiln/init.sock";
}

/// The TCP port apid listens on, in maintenance mode and configured.
pub const PORT: u16 = 50000;
