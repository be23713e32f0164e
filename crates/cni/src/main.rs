//! `fleetmesh-cni`: called by the container runtime as a chained CNI plugin (the
//! `CNI_*` environment and the configuration on stdin), or run as `fleetmesh-cni
//! install` by the `istio-cni-node` DaemonSet to put itself on the node.

use fleetmesh_cni::{install, plugin};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    if std::env::args().nth(1).as_deref() == Some("install") {
        runtime.block_on(install_forever());
        return;
    }
    let mut stdin = String::new();
    let call = plugin::Call::from_env();
    let result = match std::io::stdin().read_to_string(&mut stdin) {
        Ok(_) => runtime.block_on(plugin::run(&call, &stdin)),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(Some(output)) => println!("{output}"),
        Ok(None) => {}
        Err(error) => {
            // The runtime reads the error from stdout and shows it in the pod's events.
            println!("{}", plugin::error_result(&error));
            std::process::exit(1);
        }
    }
}

/// The DaemonSet's container: install, then keep it installed.
async fn install_forever() {
    let env = |name: &str, default: &str| {
        PathBuf::from(std::env::var(name).unwrap_or_else(|_| default.to_string()))
    };
    let paths = install::Paths {
        source_dir: env("SOURCE_DIR", "/usr/local/bin"),
        bin_dir: env("CNI_BIN_DIR", "/host/opt/cni/bin"),
        net_dir: env("CNI_NET_DIR", "/host/etc/cni/net.d"),
        host_bin_dir: env("HOST_CNI_BIN_DIR", "/opt/cni/bin"),
        host_net_dir: env("HOST_CNI_NET_DIR", "/etc/cni/net.d"),
    };
    loop {
        let pass = install::in_cluster_kubeconfig().and_then(|k| install::install_once(&paths, &k));
        match pass {
            Ok(list) => eprintln!("fleetmesh-cni: installed, chained into {}", list.display()),
            Err(e) => eprintln!("fleetmesh-cni: not installed yet: {e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}
