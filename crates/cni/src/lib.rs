//! Traffic redirection without a privileged init container, for clusters installed with
//! `--option cni-managed`: a chained CNI plugin ([`plugin`]) that the container runtime
//! calls when it sets up a pod's network, and that programs the same iptables rules as
//! `istio-init` inside the pod's network namespace; and the installer ([`install`]) the
//! `istio-cni-node` DaemonSet runs to put the plugin on each node.

pub mod install;
pub mod plugin;
