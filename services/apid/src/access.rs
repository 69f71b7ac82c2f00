//! The access table: for each call, the least role it needs and whether
//! maintenance mode serves it. One place to read who may do what.

use tonic::{Request, Status};

use kiln_pki::Role;

/// The machine API's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Version,
    ApplyConfiguration,
    ConfirmConfiguration,
    GetConfiguration,
    Reboot,
    Shutdown,
    Reset,
    Logs,
    Dmesg,
    ServiceList,
    ServiceStart,
    ServiceStop,
    ServiceRestart,
    Events,
    Stats,
}

impl Call {
    pub fn least_role(self) -> Role {
        match self {
            Call::Version
            | Call::GetConfiguration
            | Call::Logs
            | Call::Dmesg
            | Call::ServiceList
            | Call::Events
            | Call::Stats => Role::Reader,
            Call::Reboot
            | Call::Shutdown
            | Call::ServiceStart
            | Call::ServiceStop
            | Call::ServiceRestart => Role::Operator,
            Call::ApplyConfiguration | Call::ConfirmConfiguration | Call::Reset => Role::Admin,
        }
    }

    /// Maintenance mode (no config, no machine CA, no client certificates)
    /// serves only what it takes to give the node its first config.
    pub fn in_maintenance(self) -> bool {
        matches!(self, Call::Version | Call::ApplyConfiguration)
    }
}

/// How apid is serving: decides how a caller is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Server-only TLS: anyone who reaches the port may call the
    /// maintenance calls (the operator pins the server by fingerprint).
    Maintenance,
    /// Mutual TLS against the machine CA: roles from client certificates.
    Configured,
}

impl Access {
    /// The caller's role if it may make `call`, else the gRPC status to
    /// refuse it with. The TLS handshake already refused certificates the
    /// machine CA did not sign, and expired ones.
    pub fn authorize<T>(self, call: Call, request: &Request<T>) -> Result<Role, Status> {
        match self {
            Access::Maintenance if call.in_maintenance() => Ok(Role::Admin),
            Access::Maintenance => Err(Status::failed_precondition(
                "the node is in maintenance mode (no machine config): only Version and ApplyConfiguration are served",
            )),
            Access::Configured => {
                let certs = request.peer_certs().ok_or_else(|| {
                    Status::unauthenticated("a client certificate is required")
                })?;
                let leaf = certs.first().ok_or_else(|| {
                    Status::unauthenticated("a client certificate is required")
                })?;
                let role = Role::of_certificate(leaf)
                    .map_err(|e| Status::permission_denied(e.to_string()))?;
                if role < call.least_role() {
                    return Err(Status::permission_denied(format!(
                        "{call:?} needs the {} role; this client is {}",
                        call.least_role().name(),
                        role.name()
                    )));
                }
                Ok(role)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as the README states it: every call, its least role, and
    /// whether maintenance mode serves it.
    const TABLE: [(Call, Role, bool); 15] = [
        (Call::Version, Role::Reader, true),
        (Call::ApplyConfiguration, Role::Admin, true),
        (Call::ConfirmConfiguration, Role::Admin, false),
        (Call::Reset, Role::Admin, false),
        (Call::GetConfiguration, Role::Reader, false),
        (Call::Reboot, Role::Operator, false),
        (Call::Shutdown, Role::Operator, false),
        (Call::Logs, Role::Reader, false),
        (Call::Dmesg, Role::Reader, false),
        (Call::ServiceList, Role::Reader, false),
        (Call::ServiceStart, Role::Operator, false),
        (Call::ServiceStop, Role::Operator, false),
        (Call::ServiceRestart, Role::Operator, false),
        (Call::Events, Role::Reader, false),
        (Call::Stats, Role::Reader, false),
    ];

    #[test]
    fn the_table() {
        for (call, role, maintenance) in TABLE {
            assert_eq!(call.least_role(), role, "{call:?}");
            assert_eq!(call.in_maintenance(), maintenance, "{call:?}");
        }
    }

    #[test]
    fn maintenance_serves_only_its_calls_and_configured_needs_a_certificate() {
        for (call, _, maintenance) in TABLE {
            let got = Access::Maintenance.authorize(call, &Request::new(()));
            match got {
                Ok(role) => assert!(maintenance && role == Role::Admin, "{call:?}"),
                Err(e) => {
                    assert!(!maintenance, "{call:?}");
                    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
                }
            }
            // No TLS peer at all: unauthenticated, whatever the call.
            let err = Access::Configured
                .authorize(call, &Request::new(()))
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{call:?}");
        }
    }
}
