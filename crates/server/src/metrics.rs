//! Control-plane metrics under istiod's names, so existing dashboards work.

use fleetmesh_model::trigger::{Origin, Trigger};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `version` label: a proxy's Istio version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    /// As the proxy's node metadata `ISTIO_VERSION` says.
    pub version: String,
}

/// The `type` label: `cds`, `eds`, `lds`, `rds` or `sds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The resource type's short name.
    pub r#type: String,
}

/// The labels of `pilot_k8s_reg_events` and `pilot_k8s_cfg_events`: which kind of
/// object, and what happened to it (`add`, `update`, `delete`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The kind, as istiod names it (`Services`, `Pods`, `VirtualService`).
    pub r#type: String,
    /// `add`, `update` or `delete`.
    pub event: String,
}

/// The labels of `fleetmesh_proxy_clients`: which proxies talk to this control plane,
/// by where they run and what they run (the guide's "proxy clients" metric).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyClientLabels {
    /// The fleet project whose member the proxy's cluster is (empty if none).
    pub project: String,
    /// The proxy's `CLUSTER_ID`.
    pub cluster: String,
    /// The revision that injected it (its pod's `istio.io/rev`; empty if none).
    pub revision: String,
    /// Its `ISTIO_VERSION`.
    pub proxy_version: String,
}

/// The labels of `istio_build`: what this control plane is.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: String,
    tag: String,
}

/// Most distinct values a label that proxies choose may take (see [`ClientValues`]).
const MAX_CLIENT_VALUES: usize = 256;

/// Values of labels a proxy chooses itself (its `ISTIO_VERSION`, `CLUSTER_ID`, revision
/// label): each series lives as long as meshd, so an authenticated proxy must not be able
/// to make endless ones. A value that is no plausible name, or that comes after
/// [`MAX_CLIENT_VALUES`] others, is counted as `other`.
#[derive(Default)]
struct ClientValues(parking_lot::Mutex<std::collections::BTreeSet<String>>);

impl ClientValues {
    fn label(&self, value: &str) -> String {
        let plausible = value.len() <= 128
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
        if !plausible {
            return "other".into();
        }
        let mut seen = self.0.lock();
        if seen.contains(value) || seen.len() < MAX_CLIENT_VALUES {
            seen.insert(value.to_string());
            value.to_string()
        } else {
            "other".into()
        }
    }
}

/// The control plane's metrics, registered once per meshd.
pub struct Metrics {
    /// `pilot_xds{version}`: connected proxies by proxy version.
    pub connected: Family<VersionLabel, Gauge>,
    /// `fleetmesh_proxy_clients{project,cluster,revision,proxy_version}`.
    pub proxy_clients: Family<ProxyClientLabels, Gauge>,
    /// Each member cluster's project, as the fleet says (meshd keeps it current).
    cluster_projects: parking_lot::RwLock<std::collections::BTreeMap<String, String>>,
    /// `pilot_xds_pushes{type}`: responses sent.
    pub pushes: Family<TypeLabel, Counter>,
    /// `pilot_total_xds_rejects{type}`: NACKs received.
    pub rejects: Family<TypeLabel, Counter>,
    /// `pilot_proxy_convergence_time`: config change → proxy ACKed everything.
    pub convergence: Histogram,
    /// `pilot_xds_pushed_bytes{type}`: bytes pushed (the sum of the sizes).
    pub pushed_bytes: Family<TypeLabel, Counter>,
    /// `pilot_xds_config_size_bytes{type}`: the size of each response.
    pub config_size: Family<TypeLabel, Histogram, fn() -> Histogram>,
    /// `pilot_xds_push_time{type}`: seconds from building a response to it being sent.
    pub push_time: Family<TypeLabel, Histogram, fn() -> Histogram>,
    /// `pilot_total_xds_internal_errors`: streams meshd ended through its own fault.
    pub internal_errors: Counter,
    /// `pilot_k8s_reg_events{type,event}`: service registry objects seen changing.
    pub registry_events: Family<EventLabels, Counter>,
    /// `pilot_k8s_cfg_events{type,event}`: Istio config objects seen changing.
    pub config_events: Family<EventLabels, Counter>,
    /// `pilot_push_triggers{type}`: pushes, by what caused them (`config`, `endpoint`,
    /// ...; a push merging several causes counts once under each).
    pub push_triggers: Family<TypeLabel, Counter>,
    /// `galley_validation_passed`: objects the validating webhook admitted.
    pub validation_passed: Counter,
    /// `galley_validation_failed`: objects it refused.
    pub validation_failed: Counter,
    /// `sidecar_injection_success_total`: pods the injection webhook answered.
    pub injection_success: Counter,
    /// `sidecar_injection_failure_total`: pods it could not inject.
    pub injection_failure: Counter,
    /// The label values proxies chose so far.
    client_values: ClientValues,
}

impl Metrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            connected: Family::default(),
            proxy_clients: Family::default(),
            cluster_projects: Default::default(),
            pushes: Family::default(),
            rejects: Family::default(),
            convergence: Histogram::new([0.001, 0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]),
            pushed_bytes: Family::default(),
            config_size: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 10.0, 8))
            }),
            push_time: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0])
            }),
            internal_errors: Counter::default(),
            registry_events: Family::default(),
            config_events: Family::default(),
            push_triggers: Family::default(),
            validation_passed: Counter::default(),
            validation_failed: Counter::default(),
            injection_success: Counter::default(),
            injection_failure: Counter::default(),
            client_values: ClientValues::default(),
        };
        registry.register(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS",
            metrics.connected.clone(),
        );
        registry.register(
            "fleetmesh_proxy_clients",
            "Connected proxies by project, cluster, revision and proxy version",
            metrics.proxy_clients.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                component: "pilot".into(),
                tag: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("istio_build", "Istio component build info", build);
        registry.register(
            "pilot_xds_pushes",
            "xDS responses sent, by type (cds, eds, lds, rds)",
            metrics.pushes.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy",
            metrics.rejects.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required configuration",
            metrics.convergence.clone(),
        );
        registry.register(
            "pilot_xds_pushed_bytes",
            "Bytes of xDS responses sent, by type",
            metrics.pushed_bytes.clone(),
        );
        metrics.register_istiod_series(registry);
        // Dashboards and alerts expect a 0, not a missing series, before the first event.
        for t in ["cds", "eds", "lds", "rds"] {
            let label = TypeLabel {
                r#type: t.to_string(),
            };
            let _ = metrics.pushes.get_or_create(&label);
            let _ = metrics.rejects.get_or_create(&label);
            let _ = metrics.pushed_bytes.get_or_create(&label);
            let _ = metrics.config_size.get_or_create(&label);
            let _ = metrics.push_time.get_or_create(&label);
        }
        metrics
    }

    /// The rest of the series Istio's control-plane dashboard reads, under istiod's
    /// names and help texts.
    fn register_istiod_series(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(crate::process::ProcessCollector::new()));
        registry.register(
            "pilot_xds_config_size_bytes",
            "Distribution of configuration sizes pushed to clients",
            self.config_size.clone(),
        );
        registry.register(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
            self.push_time.clone(),
        );
        registry.register(
            "pilot_total_xds_internal_errors",
            "Total number of internal XDS errors in pilot.",
            self.internal_errors.clone(),
        );
        registry.register(
            "pilot_k8s_reg_events",
            "Events from k8s registry.",
            self.registry_events.clone(),
        );
        registry.register(
            "pilot_k8s_cfg_events",
            "Events from k8s config.",
            self.config_events.clone(),
        );
        registry.register(
            "pilot_push_triggers",
            "Total number of times a push was triggered, labeled by reason for the push.",
            self.push_triggers.clone(),
        );
        registry.register(
            "galley_validation_passed",
            "Resource is valid.",
            self.validation_passed.clone(),
        );
        registry.register(
            "galley_validation_failed",
            "Resource validation failed.",
            self.validation_failed.clone(),
        );
        // istiod's own names end in `_total`; the exposition keeps them as they are.
        registry.register(
            "sidecar_injection_success_total",
            "Total number of successful sidecar injection requests.",
            self.injection_success.clone(),
        );
        registry.register(
            "sidecar_injection_failure_total",
            "Total number of failed sidecar injection requests.",
            self.injection_failure.clone(),
        );
    }

    /// Counts what one push merged: each change under its kind's events, and each cause
    /// once under `pilot_push_triggers`.
    pub fn record_push(&self, triggers: &[Trigger]) {
        // A burst merges thousands of changes of a few kinds: each series is looked up
        // (and its labels made) once per push, not once per change.
        let mut reasons = std::collections::BTreeSet::new();
        let mut events = std::collections::BTreeMap::new();
        for trigger in triggers {
            reasons.insert(trigger.origin.push_reason());
            *events.entry(*trigger).or_insert(0u64) += 1;
        }
        for (trigger, count) in events {
            let (family, kind) = match trigger.origin {
                Origin::Services => (&self.registry_events, "Services"),
                Origin::Endpoints(kind) => (&self.registry_events, kind),
                Origin::Config(kind) => (&self.config_events, kind),
                _ => continue,
            };
            family
                .get_or_create(&EventLabels {
                    r#type: kind.to_string(),
                    event: trigger.event.name().to_string(),
                })
                .inc_by(count);
        }
        for reason in reasons {
            self.push_triggers
                .get_or_create(&TypeLabel {
                    r#type: reason.to_string(),
                })
                .inc();
        }
    }

    /// Which project each member cluster belongs to, for the proxies that connect from now.
    pub fn set_cluster_projects(&self, projects: std::collections::BTreeMap<String, String>) {
        *self.cluster_projects.write() = projects;
    }

    /// The `pilot_xds` label of a proxy of `version` (bounded: see [`ClientValues`]).
    pub fn version_label(&self, version: &str) -> VersionLabel {
        VersionLabel {
            version: self.client_values.label(version),
        }
    }

    /// The `fleetmesh_proxy_clients` labels of a proxy of `cluster` (a fleet member's
    /// name as registered; other values bounded: see [`ClientValues`]).
    pub fn proxy_client_labels(
        &self,
        cluster: &str,
        revision: Option<&str>,
        proxy_version: &str,
    ) -> ProxyClientLabels {
        let project = self.cluster_projects.read().get(cluster).cloned();
        let cluster = match project {
            Some(_) => cluster.to_string(),
            None => self.client_values.label(cluster),
        };
        ProxyClientLabels {
            project: project.unwrap_or_default(),
            cluster,
            revision: self.client_values.label(revision.unwrap_or_default()),
            proxy_version: self.client_values.label(proxy_version),
        }
    }

    /// Responses sent of one type (`cds`, `eds`, `lds`, `rds`).
    pub fn pushes_of(&self, short_type: &str) -> u64 {
        self.pushes
            .get_or_create(&TypeLabel {
                r#type: short_type.to_string(),
            })
            .get()
    }

    /// Bytes pushed of one type so far (for tests and the benchmark).
    pub fn pushed_bytes_of(&self, short_type: &str) -> u64 {
        self.pushed_bytes
            .get_or_create(&TypeLabel {
                r#type: short_type.to_string(),
            })
            .get()
    }

    /// NACKs received so far, all types.
    pub fn rejects_total(&self) -> u64 {
        ["cds", "eds", "lds", "rds", "other"]
            .iter()
            .map(|t| {
                self.rejects
                    .get_or_create(&TypeLabel {
                        r#type: t.to_string(),
                    })
                    .get()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_proxies_choose_are_bounded() {
        let metrics = Metrics::new(&mut Registry::default());
        assert_eq!(metrics.version_label("1.28.0").version, "1.28.0");
        assert_eq!(
            metrics.version_label("1.28.0\n{evil=\"x\"}").version,
            "other"
        );
        assert_eq!(metrics.version_label(&"9".repeat(500)).version, "other");
        for i in 0..MAX_CLIENT_VALUES {
            let _ = metrics.version_label(&format!("0.0.{i}"));
        }
        assert_eq!(metrics.version_label("2.0.0").version, "other", "too many");
        assert_eq!(
            metrics.version_label("1.28.0").version,
            "1.28.0",
            "already known"
        );
        let labels = metrics.proxy_client_labels("c/../x", Some("asm-managed"), "1.28.0");
        assert_eq!(labels.cluster, "other");
    }
}
