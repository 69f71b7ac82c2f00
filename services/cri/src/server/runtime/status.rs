//! Status: RuntimeReady always (the daemon answers), NetworkReady when the
//! CNI conf dir holds a valid network configuration. RuntimeConfig: the
//! cgroup driver, cgroupfs (libcontainer writes the cgroup files itself; a
//! Kiln node has no systemd), which kubelet must match.

use crate::proto::v1::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeCondition, RuntimeConfigResponse,
    RuntimeStatus, StatusRequest, StatusResponse,
};
use crate::runtime::Runtime;

pub fn status(rt: &Runtime, req: StatusRequest) -> StatusResponse {
    let network = match rt.cni().network() {
        Ok(_) => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            ..Default::default()
        },
        Err(e) => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: e.to_string(),
        },
    };
    let mut info = std::collections::HashMap::new();
    if req.verbose {
        let cni = rt.cni();
        info.insert(
            "config".into(),
            serde_json::json!({
                "cniBinDir": cni.bin_dir,
                "cniConfDir": cni.conf_dir,
            })
            .to_string(),
        );
    }
    StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![
                RuntimeCondition {
                    r#type: "RuntimeReady".into(),
                    status: true,
                    ..Default::default()
                },
                network,
            ],
        }),
        info,
        ..Default::default()
    }
}

pub fn runtime_config() -> RuntimeConfigResponse {
    RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: CgroupDriver::Cgroupfs as i32,
        }),
    }
}
