//! `fleetmesh install`: joins a cluster to the hosted control plane, as the managed
//! Istio install guide does with its install script. It writes every manifest it applies
//! (plus the CLI and samples) into the output directory, applies them with server-side
//! apply (a re-run changes nothing and says so), registers the cluster in the fleet, and
//! deploys no gateway.

pub mod coexist;
pub mod manifests;
pub mod meshd_api;
pub mod samples;
pub mod uninstall;

use anyhow::Context;
use fleetmesh_inject::{Channel, Revision};
use fleetmesh_kube::apply::{self, Applied, Applier, Outcome};
use kube::Resource;
use manifests::Plan;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub plan: Plan,
    pub output_dir: PathBuf,
    pub verbose: bool,
    pub register: bool,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub meshd_url: String,
    /// The file with meshd's admin token (`FLEETMESH_ADMIN_TOKEN` overrides it).
    pub admin_token_file: PathBuf,
    /// `--default-tag`: take the `default` tag even beside another Istio.
    pub take_default_tag: bool,
}

/// What a run did, for the caller (and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub configured: usize,
    pub unchanged: usize,
    /// Objects left as they are: another manager (an existing Istio) applied them.
    pub kept: usize,
    pub registration: Option<String>,
}

pub async fn run(options: &InstallOptions) -> anyhow::Result<Summary> {
    let plan = &options.plan;
    let revision = Revision::of(plan.channel);
    let mut step = Steps::default();

    step.start(&format!(
        "Checking the control plane at {}",
        options.meshd_url
    ));
    let meshd = meshd_api::MeshdApi::new(&options.meshd_url, &options.admin_token_file);
    // A cluster joining a project's fleet gets that project's trust domain.
    let member = options.register.then_some(plan);
    let control_plane = meshd.install_info(member).await?;
    step.done(&format!(
        "webhooks at {}, xDS at {}, trust domain {}",
        control_plane.webhook_url, control_plane.xds_address, control_plane.trust_domain
    ));

    step.start("Connecting to the cluster");
    let client =
        crate::kubeconfig::connect(options.kubeconfig.as_deref(), options.context.as_deref())
            .await?;
    let version = client.apiserver_version().await.context(
        "the cluster's API server cannot be reached (check the kubeconfig context, or pass --context)",
    )?;
    step.done(&format!("Kubernetes {}.{}", version.major, version.minor));

    step.start("Looking for another Istio control plane");
    let coexistence = coexist::find(&client, options.take_default_tag)
        .await
        .map_err(|e| anyhow::anyhow!("looking for another Istio: {}", explain_api(&e)))?;
    step.done(coexistence.other_istio.as_deref().unwrap_or("none"));

    step.start(&format!(
        "Writing manifests to {}",
        options.output_dir.display()
    ));
    let rendered = manifests::render(plan, &control_plane, &coexistence);
    let mut written = Vec::new();
    for manifest in &rendered {
        written.push(write(&options.output_dir, manifest.file, &manifest.yaml)?);
    }
    for sample in samples::render(revision, &plan.hub) {
        written.push(write(&options.output_dir, sample.file, &sample.yaml)?);
    }
    written.push(copy_cli(&options.output_dir)?);
    step.done(&format!("{} files", written.len()));
    if options.verbose {
        for path in &written {
            println!("    {}", path.display());
        }
    }

    let mut applier = Applier::new(client.clone(), "fleetmesh-install").await?;
    let changes = coexist::changes(
        &client,
        &applier,
        &rendered,
        &coexistence,
        &control_plane.ca_bundle,
    )
    .await?;
    for line in changes {
        println!("{line}");
    }
    let mut summary =
        apply_manifests(options, &mut applier, &rendered, &coexistence, &mut step).await?;

    if options.register {
        step.start(&format!(
            "Registering cluster {} in the fleet of project {}",
            plan.cluster, plan.project
        ));
        let credential = meshd_credential(options, &client).await?;
        let change = meshd
            .register(plan, &plan.channel.to_string(), &credential)
            .await
            .context("registering the cluster")?;
        step.done(&change);
        summary.registration = Some(change);
    }

    print_next_steps(options, revision, &summary);
    Ok(summary)
}

/// How meshd will reach the cluster: a kubeconfig with a short-lived token of the
/// `istio-system/fleetmesh-meshd` service account (meshd renews it; install's own
/// credential never leaves this machine).
async fn meshd_credential(
    options: &InstallOptions,
    client: &kube::Client,
) -> anyhow::Result<String> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let (server, ca_data) =
        crate::kubeconfig::cluster_of(options.kubeconfig.as_deref(), options.context.as_deref())?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), "istio-system");
    let answer = accounts
        .create_token_request(
            "fleetmesh-meshd",
            &kube::api::PostParams::default(),
            &request,
        )
        .await
        .context("a token for meshd (TokenRequest for istio-system/fleetmesh-meshd)")?;
    let token = answer
        .status
        .map(|s| s.token)
        .context("the cluster gave no token")?;
    Ok(crate::kubeconfig::with_token(
        &options.plan.cluster,
        &server,
        &ca_data,
        &token,
    ))
}

/// Applies the manifests in order (server-side apply), counting what changed, and
/// leaving alone what another manager applied (an existing Istio's CRDs, MeshConfig,
/// `default` tag); after the CRDs, waits until the API server serves them.
async fn apply_manifests(
    options: &InstallOptions,
    applier: &mut Applier,
    rendered: &[manifests::Manifest],
    coexistence: &manifests::Coexistence,
    step: &mut Steps,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    for manifest in rendered {
        step.start(&format!("Applying {}", manifest.file));
        let objects = apply::documents(&manifest.yaml)?;
        let mut outcomes = BTreeMap::new();
        for object in &objects {
            let described = apply::describe(object);
            let take_over = coexist::takes_over(object, coexistence);
            let applied = applier
                .apply_unless_theirs(object, take_over)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "applying {described} from {}: {}",
                        manifest.file,
                        explain(&e)
                    )
                })?;
            let outcome = match applied {
                Applied::Done(outcome) => outcome,
                Applied::Kept(managers) => {
                    if options.verbose {
                        println!("    {described} kept ({})", coexist::whose(&managers));
                    }
                    *outcomes.entry("kept".to_string()).or_insert(0) += 1;
                    summary.kept += 1;
                    continue;
                }
            };
            if options.verbose {
                println!("    {described} {outcome}");
            }
            *outcomes.entry(outcome.to_string()).or_insert(0) += 1;
            match outcome {
                Outcome::Created => summary.created += 1,
                Outcome::Configured => summary.configured += 1,
                Outcome::Unchanged => summary.unchanged += 1,
            }
        }
        let counts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
        step.done(&counts.join(", "));
        if manifest.file.contains("crds") {
            wait_for_crds(applier.client()).await?;
            applier.rediscover().await?;
        }
    }
    Ok(summary)
}

/// What was installed, and what the user does next.
fn print_next_steps(options: &InstallOptions, revision: &Revision, summary: &Summary) {
    let plan = &options.plan;
    println!(
        "\nInstalled: {} created, {} configured, {} unchanged, {} kept. Channel {} (revision {}, proxy {}).",
        summary.created,
        summary.configured,
        summary.unchanged,
        summary.kept,
        plan.channel,
        revision.name,
        revision.proxy_version
    );
    println!("No ingress gateway was deployed. Next steps:");
    println!(
        "  kubectl label namespace NAMESPACE istio-injection- istio.io/rev={} --overwrite",
        revision.name
    );
    println!("  kubectl rollout restart deployment -n NAMESPACE   # existing pods get their proxy");
    println!(
        "  gateway: {}",
        options
            .output_dir
            .join("samples/gateways/istio-ingressgateway.yaml")
            .display()
    );
    println!("  fleetmesh mesh enable --project {}", plan.project);
}

/// Progress lines: `[n] what... done (detail)`.
#[derive(Default)]
struct Steps {
    number: usize,
    started: Option<Instant>,
}

impl Steps {
    fn start(&mut self, what: &str) {
        self.number += 1;
        self.started = Some(Instant::now());
        println!("[{}] {what}...", self.number);
    }

    fn done(&mut self, detail: &str) {
        let took = self.started.take().map(|s| s.elapsed()).unwrap_or_default();
        println!("    ok ({detail}; {} ms)", took.as_millis());
    }
}

/// Kubernetes' own reason, with what to do about the common one.
fn explain(error: &apply::ApplyError) -> String {
    match error {
        apply::ApplyError::Api(error) => explain_api(error),
        other => other.to_string(),
    }
}

/// An API server's refusal in its own words; a 403 with what install needs.
fn explain_api(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden: {} (installing needs cluster-admin rights in this cluster)",
            status.message
        ),
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

async fn wait_for_crds(client: &kube::Client) -> anyhow::Result<()> {
    let names = fleetmesh_kube::crds::KINDS
        .iter()
        .map(|kind| format!("{}.{}", kind.plural, kind.group))
        .chain([format!(
            "dataplanecontrols.{}",
            fleetmesh_dataplane::DataPlaneControl::group(&())
        )]);
    Ok(apply::wait_established(client, names, Duration::from_secs(60)).await?)
}

fn write(dir: &Path, file: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `bin/fleetmesh`, as the guide expects the CLI beside the manifests.
/// Writes this CLI into `bin/` as `fleetmesh`, and as `istioctl` (a link to it) so that
/// the guide's `${OUTPUT_DIR}/bin/istioctl ...` commands run as written: the subcommands
/// they use (`x create-remote-secret`, `kube-inject`, `proxy-status`) are the same.
fn copy_cli(dir: &Path) -> anyhow::Result<PathBuf> {
    let target = dir.join("bin/fleetmesh");
    std::fs::create_dir_all(dir.join("bin"))?;
    let current = std::env::current_exe().context("locating the fleetmesh binary")?;
    // Copy to a temporary name, then rename: a re-run from `bin/fleetmesh` itself must
    // not truncate the running binary.
    let temporary = dir.join("bin/.fleetmesh.new");
    std::fs::copy(&current, &temporary)
        .with_context(|| format!("copying {} to {}", current.display(), target.display()))?;
    std::fs::rename(&temporary, &target)?;
    let istioctl = dir.join("bin/istioctl");
    let linked = std::fs::read_link(&istioctl).is_ok_and(|to| to == Path::new("fleetmesh"));
    if !linked {
        let _ = std::fs::remove_file(&istioctl);
        std::os::unix::fs::symlink("fleetmesh", &istioctl)
            .with_context(|| format!("linking {}", istioctl.display()))?;
    }
    Ok(target)
}

/// The channel for `--channel`, regular by default (as the guide's default revision).
pub fn channel(text: Option<&str>) -> anyhow::Result<Channel> {
    match text {
        None => Ok(Channel::Regular),
        Some(text) => text.parse().map_err(anyhow::Error::msg),
    }
}
