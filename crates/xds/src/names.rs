//! istiod's resource names.

/// `outbound|PORT|SUBSET|HOST`.
pub fn outbound_cluster(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// `inbound|PORT||`: the local app behind a sidecar.
pub fn inbound_cluster(port: u32) -> String {
    format!("inbound|{port}||")
}

/// The route config a sidecar's HTTP-proxy listener uses (Istio's `HTTP_PROXY` egress).
pub const HTTP_PROXY_ROUTE: &str = "http_proxy";

/// A virtual host of route config `config` as an on-demand sidecar fetches it (VHDS):
/// `CONFIG/VHOST`, Envoy's naming (the route config is the name's namespace).
pub fn on_demand_virtual_host(config: &str, virtual_host: &str) -> String {
    format!("{config}/{virtual_host}")
}

/// The part of an on-demand name after its route config: the virtual host's name, or
/// (as a proxy asks) the Host it called.
pub fn parse_on_demand_virtual_host(name: &str) -> Option<(&str, &str)> {
    name.split_once('/')
}

/// The virtual host an on-demand sidecar is never sent as itself: where requests for
/// hosts the mesh does not know go (see `route::on_demand`).
pub const UNKNOWN_HOSTS: &str = "*";

/// A gateway's route config for one server port: `http.PORT`.
pub fn gateway_route(port: u32) -> String {
    format!("http.{port}")
}

/// A listener bound to one address and port: `ADDRESS_PORT`.
pub fn bound_listener(address: &str, port: u32) -> String {
    format!("{address}_{port}")
}

/// The captured sidecar's outbound listener (15001), or the HTTP-proxy one without
/// capture.
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
/// The captured sidecar's inbound listener (15006).
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
/// Where captured traffic to unknown destinations goes (Istio's `ALLOW_ANY`).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Where inbound traffic to a port no service declares goes: the app, as addressed.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
/// The source address of Envoy's connections to its own app, which capture leaves alone
/// (Istio's `InboundPassthroughBindIpv4`; the istio-init rules RETURN it on `lo`).
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6";
/// Where dropped traffic goes (`REGISTRY_ONLY`).
pub const BLACK_HOLE_CLUSTER: &str = "BlackHoleCluster";

/// Splits `outbound|PORT|SUBSET|HOST` into its parts.
pub fn parse_outbound_cluster(name: &str) -> Option<(u32, &str, &str)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    Some((port, parts.next()?, parts.next()?))
}
