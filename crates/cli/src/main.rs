//! `fleetmesh`: the command users type.

use clap::{Parser, Subcommand};
use fleetmesh_agent::XdsMode;
use fleetmesh_cli::demo::{self, DemoOptions};
use fleetmesh_cli::install::manifests::Plan;
use fleetmesh_cli::install::meshd_api::{MeshSettings, MeshdApi};
use fleetmesh_cli::install::{self, InstallOptions};
use fleetmesh_cli::sample_app::SampleApp;
use fleetmesh_cli::{kube_inject, proxy_status};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "fleetmesh",
    version,
    about = "fleetmesh: a managed service mesh for Istio's API and real Envoy proxies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a mesh on this machine: meshd, sample services with Envoy sidecars on loopback
    /// addresses, and traffic split 80/20 by a VirtualService you can edit live.
    Demo {
        /// Where the demo's YAML goes (edit it while the demo runs).
        #[arg(long, default_value = "fleetmesh-demo")]
        config_dir: PathBuf,
        /// Requests to send for the first split.
        #[arg(long, default_value = "200")]
        requests: usize,
        /// Print the split and stop, instead of running until Ctrl-C.
        #[arg(long)]
        exit: bool,
        /// xDS protocol the sidecars use: `sotw` or `delta`.
        #[arg(long, default_value = "delta", value_parser = ["sotw", "delta"])]
        xds_mode: String,
    },
    /// Issue a token that proves a workload's identity to meshd (for `fleetmesh-agent
    /// --token-file`), or revoke one. Reads the token key in meshd's CA directory; keep
    /// the token secret. Prints the token, and on stderr its id and expiry.
    Token {
        /// meshd's `--ca-dir`.
        #[arg(long, env = "MESHD_CA_DIR", default_value = "./var/lib/fleetmesh/ca")]
        ca_dir: PathBuf,
        #[arg(long, required_unless_present = "revoke")]
        namespace: Option<String>,
        #[arg(long, required_unless_present = "revoke")]
        service_account: Option<String>,
        /// How long the token proves the identity (`30m`, `24h`; at most a year).
        #[arg(long, default_value = "24h", value_parser = parse_lifetime)]
        ttl: std::time::Duration,
        /// Revoke the token with this id instead (as issuing printed it): every meshd
        /// of this CA directory refuses it from its next use on.
        #[arg(long, conflicts_with_all = ["namespace", "service_account"])]
        revoke: Option<String>,
    },
    /// Rotate the mesh root in three steps, each picked up live by meshd: `add` (trust a
    /// new root beside the old), then after half a certificate lifetime `activate` (sign
    /// with it), then after a full lifetime `retire` (trust only the new root).
    RotateRoot {
        #[arg(value_parser = ["add", "activate", "retire"])]
        step: String,
        /// meshd's `--ca-dir`.
        #[arg(long, env = "MESHD_CA_DIR", default_value = "./var/lib/fleetmesh/ca")]
        ca_dir: PathBuf,
        #[arg(long, env = "MESHD_TRUST_DOMAIN", default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Join the current kubeconfig context's cluster to the hosted control plane: write
    /// every manifest into --output_dir, apply them (CRDs, istio-system, RBAC, then the
    /// validation and injection webhooks), register the cluster in the project's fleet.
    /// Re-running with the same flags changes nothing. Deploys no ingress gateway.
    Install(InstallArgs),
    /// Take out of the cluster what install put in: the webhooks first, then the CNI
    /// plugin, meshd's access, istio-system's config, and the CRDs no object is left
    /// of. Needs only the cluster, not meshd: the way out for a cluster whose meshd is
    /// gone (its injection webhooks refuse pods while it is). Sidecars already injected
    /// keep running until their pods are restarted.
    Uninstall(install::uninstall::UninstallOptions),
    /// Add the proxy to the pods of a manifest offline, as the injection webhook would
    /// (istioctl kube-inject). Such pods are marked injected by hand.
    KubeInject(KubeInjectArgs),
    /// Experimental commands, as istioctl's `x`.
    X {
        #[command(subcommand)]
        command: XCommand,
    },
    /// The fleet: clusters registered with `install --enable-registration`.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// The project's mesh (`mesh enable --project P` turns it on).
    Mesh {
        #[command(subcommand)]
        command: MeshCommand,
    },
    /// Every proxy connected to meshd: its proxy version, the revision that injected it,
    /// and whether it is in sync. Pods on an old version need a restart unless the
    /// managed data plane replaces them.
    ProxyStatus {
        #[command(flatten)]
        meshd: MeshdFlags,
    },
    /// Check Istio config before applying it, or what a cluster holds (istioctl
    /// analyze): each object as meshd loads it, then all together (hosts, subsets and
    /// Gateways routes name that nothing defines; two VirtualServices claiming one host;
    /// with a cluster, Gateways selecting no pod). Files only by default when paths are
    /// given; the cluster of the kubeconfig context (every namespace) when none are.
    /// Exits with status 79 on an error.
    Analyze {
        /// YAML files, or directories (read as meshd reads its --config-dir).
        paths: Vec<PathBuf>,
        /// Read the cluster too (`--use-kube=false`: never): the files are then checked
        /// as if applied to it. Default: only when no path is given.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        use_kube: Option<bool>,
        /// The kubeconfig context of the cluster to read (default: the current one).
        #[arg(long)]
        context: Option<String>,
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
    /// What meshd sends one proxy (istioctl proxy-config): its clusters, listeners,
    /// routes, endpoints or secrets (certificates described, keys never shown), as a
    /// table or (`-o json`) the resources themselves.
    ProxyConfig(ProxyConfigArgs),
    /// The sample app the demo runs (and the sample image's entrypoint): HTTP answers
    /// with its service, version and the request's headers; `/status/CODE`, `/delay/MS`
    /// and `/flaky` misbehave on request. Runs until SIGINT or SIGTERM.
    SampleApp {
        /// Where HTTP is served.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long)]
        service: String,
        #[arg(long, default_value = "v1")]
        version: String,
        /// Also echo back whatever a TCP connection sends, here.
        #[arg(long)]
        tcp_echo: Option<SocketAddr>,
    },
}

/// `kube-inject`'s flags.
#[derive(clap::Args)]
struct KubeInjectArgs {
    /// The manifest (`-` reads stdin).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// The revision whose proxy to inject.
    #[arg(long, default_value = "asm-managed")]
    revision: String,
    /// meshd's xDS address as the cluster's pods reach it. Default: what install
    /// recorded in the cluster (ConfigMap istio-system/fleetmesh-install).
    #[arg(long)]
    xds_address: Option<String>,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// The cluster's id. Default: what install recorded.
    #[arg(long)]
    cluster: Option<String>,
    /// Whether the cluster's CNI plugin redirects traffic (no istio-init container).
    /// Default: what install recorded.
    #[arg(long)]
    cni_managed: Option<bool>,
    /// Where the cluster pulls the proxy image. Default: what install recorded.
    #[arg(long, value_parser = parse_hub)]
    hub: Option<String>,
    /// Do not read the cluster: every setting from the flags or its built-in default
    /// (127.0.0.1:15010, cluster Kubernetes, istio-init, the default hub).
    #[arg(long)]
    offline: bool,
    /// The kubeconfig context whose install to read (default: the current one).
    #[arg(long)]
    context: Option<String>,
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

/// The install guide's flags, verbatim (underscore and dash long forms both work).
#[derive(clap::Args)]
struct InstallArgs {
    /// Only `install` is supported.
    #[arg(long, default_value = "install", value_parser = ["install"])]
    mode: String,
    /// Install against the managed (hosted) control plane; the only kind there is.
    #[arg(long)]
    managed: bool,
    /// The project whose fleet the cluster joins.
    #[arg(
        short = 'p',
        long = "project",
        visible_alias = "project_id",
        alias = "project-id"
    )]
    project: String,
    /// Where the cluster runs; recorded with its registration.
    #[arg(
        short = 'l',
        long = "location",
        visible_alias = "cluster_location",
        alias = "cluster-location"
    )]
    location: String,
    /// The cluster's name in the fleet (and its cluster id in the mesh): letters, digits,
    /// '.', '_' or '-'.
    #[arg(short = 'n', long = "cluster-name", visible_alias = "cluster_name", value_parser = parse_cluster)]
    cluster: String,
    /// Print every file written and every object applied.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Where to write the manifests, the CLI and the samples.
    #[arg(short = 'D', long = "output-dir", visible_alias = "output_dir")]
    output_dir: PathBuf,
    /// Perform every optional set-up step (today: fleet registration).
    #[arg(short = 'e', long = "enable-all", alias = "enable_all")]
    enable_all: bool,
    /// Register the cluster in the project's fleet.
    #[arg(long = "enable-registration", alias = "enable_registration")]
    enable_registration: bool,
    /// `cni-managed`: the cluster's CNI plugin redirects traffic, so injected pods get no
    /// privileged istio-init container.
    #[arg(long = "option", value_parser = ["cni-managed"])]
    options: Vec<String>,
    /// Release channel: rapid, regular (default) or stable.
    #[arg(long)]
    channel: Option<String>,
    /// Take the `default` tag (namespaces labelled `istio-injection=enabled`) even when
    /// another Istio serves the cluster; without another Istio it is always taken.
    #[arg(long)]
    default_tag: bool,
    /// Where the cluster pulls fleetmesh's images: `HUB/proxyv2:VERSION` for sidecars,
    /// gateways (`image: auto`) and the CNI DaemonSet, the tag being the revision's proxy
    /// version. Recorded in ConfigMap istio-system/fleetmesh-install.
    #[arg(long, default_value = fleetmesh_inject::DEFAULT_HUB, value_parser = parse_hub)]
    hub: String,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long)]
    context: Option<String>,
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    meshd: MeshdFlags,
}

#[derive(Subcommand)]
enum XCommand {
    /// Print a remote secret for the cluster of --context: applied to another cluster of
    /// the mesh (`| kubectl apply -f - --context=OTHER`), that cluster's proxies reach this
    /// one's endpoints. Creates a read-only service account (istio-system/fleetmesh-reader)
    /// in this cluster for the token it carries.
    CreateRemoteSecret {
        /// The kubeconfig context of the cluster to read (default: the current one).
        #[arg(long)]
        context: Option<String>,
        /// The cluster's name in the mesh: the secret is istio-remote-secret-NAME.
        #[arg(long)]
        name: String,
        /// The API server address to put in the secret, if meshd reaches it elsewhere
        /// than the kubeconfig says.
        #[arg(long)]
        server: Option<String>,
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
}

/// How the CLI reaches the hosted control plane's API.
#[derive(clap::Args)]
struct MeshdFlags {
    /// meshd's HTTP address.
    #[arg(long, env = "FLEETMESH_URL", default_value = "http://127.0.0.1:15014")]
    meshd_url: String,
    /// The file with meshd's admin token (meshd writes it to STATE_DIR/admin-token on
    /// first start). FLEETMESH_ADMIN_TOKEN, if set, is used instead.
    #[arg(
        long,
        env = "FLEETMESH_ADMIN_TOKEN_FILE",
        default_value = fleetmesh_cli::install::meshd_api::DEFAULT_ADMIN_TOKEN_FILE
    )]
    admin_token_file: PathBuf,
}

impl MeshdFlags {
    fn api(&self) -> MeshdApi {
        MeshdApi::new(&self.meshd_url, &self.admin_token_file)
    }
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Every project's member clusters.
    List {
        #[command(flatten)]
        meshd: MeshdFlags,
    },
    /// Remove a cluster from its project's fleet: meshd stops serving it (its watches
    /// stop, its proxies' streams end and are refused) and forgets its credential.
    Remove {
        #[arg(long, visible_alias = "project_id")]
        project: String,
        #[arg(long = "cluster-name", visible_alias = "cluster_name")]
        cluster: String,
        #[command(flatten)]
        meshd: MeshdFlags,
    },
}

#[derive(clap::Args)]
struct ProxyConfigArgs {
    #[arg(value_enum)]
    section: fleetmesh_cli::proxy_config::Section,
    /// The proxy's pod: `NAME[.NAMESPACE]` (namespace `default` if none).
    pod: String,
    /// `short` (a table) or `json`.
    #[arg(short = 'o', long = "output", default_value = "short", value_parser = ["short", "json"])]
    output: String,
    #[command(flatten)]
    meshd: MeshdFlags,
}

/// `analyze`: prints each finding and exits with istioctl's status when there is one.
/// `analyze`: the files of `paths`, with the objects of the cluster `cluster` names
/// (kubeconfig, context) when given.
async fn analyze(
    paths: &[PathBuf],
    cluster: Option<(Option<PathBuf>, Option<String>)>,
) -> anyhow::Result<()> {
    let mut objects = fleetmesh_cli::analyze::Objects::from_files(paths)?;
    let mut read = vec![format!("{} path(s)", paths.len())];
    if let Some((kubeconfig, context)) = cluster {
        let client =
            fleetmesh_cli::kubeconfig::connect(kubeconfig.as_deref(), context.as_deref()).await?;
        let origin = format!(
            "cluster {}",
            context.as_deref().unwrap_or("of the current context")
        );
        objects.add(fleetmesh_cli::analyze::Objects::from_cluster(&client, &origin).await?);
        read.push(origin);
    }
    let messages = objects.findings();
    for message in &messages {
        println!("{message}");
    }
    if !messages.is_empty() {
        std::process::exit(fleetmesh_cli::analyze::FOUND_ERRORS);
    }
    println!(
        "No validation issues found when analyzing {}.",
        read.join(" and ")
    );
    Ok(())
}

/// `proxy-config`: prints what meshd sends the proxy of a pod.
async fn proxy_config(args: ProxyConfigArgs) -> anyhow::Result<()> {
    let (api, json) = (args.meshd.api(), args.output == "json");
    let shown = fleetmesh_cli::proxy_config::show(&api, args.section, &args.pod, json);
    print!("{}", shown.await?);
    Ok(())
}

#[derive(Subcommand)]
enum MeshCommand {
    /// Turn the mesh on for a project's fleet. Its member clusters are served from then
    /// on, each project with its own root CA and trust domain.
    Enable {
        #[arg(long, visible_alias = "project_id")]
        project: String,
        /// The trust domain of the project's workload identities
        /// (`spiffe://TRUST_DOMAIN/ns/NS/sa/SA`); default `PROJECT.svc.id.goog`. Set it
        /// before the first cluster is installed: it cannot change under members.
        #[arg(long)]
        trust_domain: Option<String>,
        /// `true`: the project's sidecars fetch each outbound route when they first call
        /// its host, instead of holding every service's (less memory in every Envoy; a
        /// route change goes only to the sidecars that called the host). Pods injected
        /// from then on speak delta xDS, which this needs: restart workloads to move
        /// them. `false`: every route, as istiod sends. Unset: left as it is (at first,
        /// as meshd's `--on-demand-routes` says).
        #[arg(long, value_name = "BOOL")]
        on_demand_routes: Option<bool>,
        #[command(flatten)]
        meshd: MeshdFlags,
    },
}

/// `fleetmesh token`: issues a token for `namespace`/`service_account`, or revokes one.
fn token(
    ca_dir: &std::path::Path,
    namespace: Option<String>,
    service_account: Option<String>,
    ttl: std::time::Duration,
    revoke: Option<String>,
) -> anyhow::Result<()> {
    let issuer = fleetmesh_ca::TokenIssuer::load_or_create(ca_dir)
        .map_err(|e| anyhow::anyhow!("token key in {}: {e}", ca_dir.display()))?;
    if let Some(id) = revoke {
        issuer
            .revoke(&id)
            .map_err(|e| anyhow::anyhow!("revoking in {}: {e}", ca_dir.display()))?;
        eprintln!("token {id} revoked");
        return Ok(());
    }
    let identity = fleetmesh_ca::Identity::new(
        &namespace.unwrap_or_default(),
        &service_account.unwrap_or_default(),
    );
    let issued = issuer.issue(&identity, ttl);
    println!("{}", issued.token);
    let expires = issued
        .expires
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    eprintln!(
        "token {} for {}/{}, expires at {expires} (unix seconds); revoke with `fleetmesh token --revoke {}`",
        issued.id, identity.namespace, identity.service_account, issued.id
    );
    Ok(())
}

fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let lifetime = fleetmesh_api::duration::Duration::parse(text)
        .map_err(|e| e.to_string())?
        .as_std();
    if lifetime.is_zero() || lifetime > fleetmesh_ca::token::MAX_LIFETIME {
        return Err(format!(
            "{text:?}: a token lives more than 0s and at most a year"
        ));
    }
    Ok(lifetime)
}

fn parse_cluster(text: &str) -> Result<String, String> {
    if fleetmesh_inject::webhook_path::valid_cluster(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?}: a cluster name is 1 to 253 letters, digits, '.', '_' or '-'"
        ))
    }
}

fn parse_hub(text: &str) -> Result<String, String> {
    if fleetmesh_inject::channel::valid_hub(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not an image repository prefix (e.g. registry.example.com/team/fleetmesh)"
        ))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match Cli::parse().command {
        Command::Demo {
            config_dir,
            requests,
            exit,
            xds_mode,
        } => {
            let xds_mode = if xds_mode == "sotw" {
                XdsMode::Sotw
            } else {
                XdsMode::Delta
            };
            demo::run(DemoOptions {
                config_dir,
                requests,
                exit,
                xds_mode,
            })
            .await
        }
        Command::Install(args) => install_command(args).await,
        Command::Uninstall(options) => install::uninstall::run(&options).await.map(|_| ()),
        Command::KubeInject(args) => kube_inject(args).await,
        Command::X {
            command:
                XCommand::CreateRemoteSecret {
                    context,
                    name,
                    server,
                    kubeconfig,
                },
        } => {
            let options = fleetmesh_cli::remote_secret::RemoteSecretOptions {
                kubeconfig,
                context,
                name,
                server,
            };
            print!("{}", fleetmesh_cli::remote_secret::create(&options).await?);
            Ok(())
        }
        Command::Fleet { command } => fleet_command(command).await,
        Command::Analyze {
            paths,
            use_kube,
            context,
            kubeconfig,
        } => {
            let cluster = use_kube
                .unwrap_or(paths.is_empty())
                .then_some((kubeconfig, context));
            analyze(&paths, cluster).await
        }
        Command::ProxyConfig(args) => proxy_config(args).await,
        Command::ProxyStatus { meshd } => {
            let rows = proxy_status::fetch(&meshd.api()).await?;
            print!("{}", proxy_status::render(&rows));
            Ok(())
        }
        Command::Mesh { command } => mesh_command(command).await,
        Command::Token {
            ca_dir,
            namespace,
            service_account,
            ttl,
            revoke,
        } => token(&ca_dir, namespace, service_account, ttl, revoke),
        Command::RotateRoot {
            step,
            ca_dir,
            trust_domain,
        } => {
            use fleetmesh_ca::rotation;
            match step.as_str() {
                "add" => rotation::add_root(&ca_dir, &trust_domain)?,
                "activate" => rotation::activate_root(&ca_dir)?,
                _ => rotation::retire_roots(&ca_dir)?,
            }
            println!("root rotation step `{step}` done in {}", ca_dir.display());
            Ok(())
        }
        Command::SampleApp {
            listen,
            service,
            version,
            tcp_echo,
        } => sample_app(listen, &service, &version, tcp_echo).await,
    }
}

/// `install`: the install guide's flags, applied.
async fn install_command(args: InstallArgs) -> anyhow::Result<()> {
    if !args.managed {
        anyhow::bail!("fleetmesh installs against the hosted control plane only: pass --managed");
    }
    let options = InstallOptions {
        plan: Plan {
            project: args.project,
            location: args.location,
            cluster: args.cluster,
            channel: install::channel(args.channel.as_deref())?,
            cni_managed: args.options.iter().any(|o| o == "cni-managed"),
            hub: args.hub,
        },
        output_dir: args.output_dir,
        verbose: args.verbose,
        register: args.enable_registration || args.enable_all,
        kubeconfig: args.kubeconfig,
        context: args.context,
        meshd_url: args.meshd.meshd_url,
        admin_token_file: args.meshd.admin_token_file,
        take_default_tag: args.default_tag,
    };
    install::run(&options).await.map(|_| ())
}

/// Prints the manifest with the proxy injected, set up as the cluster's install recorded
/// (flags override it).
async fn kube_inject(args: KubeInjectArgs) -> anyhow::Result<()> {
    let KubeInjectArgs {
        file,
        revision,
        xds_address,
        trust_domain,
        cluster,
        cni_managed,
        hub,
        offline,
        context,
        kubeconfig,
    } = args;
    let revision = fleetmesh_inject::Revision::named(&revision).ok_or_else(|| {
        anyhow::anyhow!(
            "--revision: no revision {revision:?} (asm-managed-rapid, asm-managed, asm-managed-stable)"
        )
    })?;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
    };
    let all_given =
        xds_address.is_some() && cluster.is_some() && cni_managed.is_some() && hub.is_some();
    let recorded = if offline || all_given {
        kube_inject::Recorded::default()
    } else {
        let client =
            fleetmesh_cli::kubeconfig::connect(kubeconfig.as_deref(), context.as_deref()).await?;
        kube_inject::Recorded::read(&client).await?
    };
    let settings = fleetmesh_inject::Settings {
        revision,
        xds_address: xds_address
            .or(recorded.xds_address)
            .unwrap_or_else(|| "127.0.0.1:15010".into()),
        trust_domain,
        cluster_id: cluster
            .or(recorded.cluster)
            .unwrap_or_else(|| "Kubernetes".into()),
        cni_managed: cni_managed.or(recorded.cni_managed).unwrap_or(false),
        injected_by: fleetmesh_inject::InjectedBy::KubeInject,
        proxy_version: None,
        hub: hub
            .or(recorded.hub)
            .unwrap_or_else(|| fleetmesh_inject::DEFAULT_HUB.into()),
        // State of the world: a mesh with on-demand routes serves such pods every route.
        delta_xds: false,
    };
    let source = file.display().to_string();
    print!(
        "{}",
        kube_inject::inject_manifest(&text, &source, &settings)?
    );
    Ok(())
}

/// `fleet list` and `fleet remove`.
async fn fleet_command(command: FleetCommand) -> anyhow::Result<()> {
    match command {
        FleetCommand::List { meshd } => fleet_list(&meshd.api()).await,
        FleetCommand::Remove {
            project,
            cluster,
            meshd,
        } => {
            meshd.api().remove_membership(&project, &cluster).await?;
            println!("Cluster {cluster} is no longer a member of project {project}.");
            Ok(())
        }
    }
}

/// `fleet list`: each registered cluster with its project, location and channel, whether
/// its mesh is enabled, and whether meshd serves it now.
async fn fleet_list(meshd: &MeshdApi) -> anyhow::Result<()> {
    let projects = meshd.projects().await?;
    println!(
        "{:<20} {:<24} {:<16} {:<8} {:<8} SERVED",
        "PROJECT", "CLUSTER", "LOCATION", "CHANNEL", "MESH"
    );
    for (project, state) in projects.as_object().into_iter().flatten() {
        let enabled = if state["meshEnabled"] == true {
            "enabled"
        } else {
            "-"
        };
        for (cluster, member) in state["memberships"].as_object().into_iter().flatten() {
            let served = if member["idle"] == true {
                "idle"
            } else if member["served"] == true {
                "yes"
            } else {
                "no"
            };
            println!(
                "{project:<20} {cluster:<24} {:<16} {:<8} {enabled:<8} {served}",
                member["location"].as_str().unwrap_or_default(),
                member["channel"].as_str().unwrap_or_default(),
            );
        }
    }
    Ok(())
}

/// Runs the sample app until SIGINT or SIGTERM.
async fn sample_app(
    listen: SocketAddr,
    service: &str,
    version: &str,
    tcp_echo: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let app = SampleApp::start(listen, service, version).await?;
    println!("{service} {version} listening on {}", app.address());
    let _echo = match tcp_echo {
        Some(address) => {
            let echo = fleetmesh_cli::sample_app::TcpEcho::start(address).await?;
            println!("TCP echo on {}", echo.address());
            Some(echo)
        }
        None => None,
    };
    // In a container it is PID 1: without a handler SIGTERM would be ignored.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

async fn mesh_command(command: MeshCommand) -> anyhow::Result<()> {
    match command {
        MeshCommand::Enable {
            project,
            trust_domain,
            on_demand_routes,
            meshd,
        } => {
            let settings = MeshSettings {
                trust_domain,
                on_demand_routes,
            };
            enable_mesh(&meshd.api(), &project, &settings).await
        }
    }
}

/// `mesh enable`: says whether anything changed, the project's trust domain and how its
/// sidecars get their routes.
async fn enable_mesh(api: &MeshdApi, project: &str, settings: &MeshSettings) -> anyhow::Result<()> {
    let enabled = api.enable_mesh(project, settings).await?;
    let what = if enabled.change == "unchanged" {
        "was already"
    } else {
        "is now"
    };
    let trust_domain = enabled.trust_domain;
    let routes = if enabled.on_demand_routes {
        "routes on demand"
    } else {
        "every route pushed"
    };
    println!(
        "The mesh of project {project} {what} enabled (trust domain {trust_domain}, {routes})."
    );
    Ok(())
}
