//! The install guide's multi-cluster commands, verbatim (`istioctl` is our CLI under
//! that name, as install writes it into `bin/`), against two real kube-apiservers: the remote secret of cluster 2 piped into kubectl
//! for cluster 1 is `istio-remote-secret-NAME_2`, `Opaque` with one data entry, and the
//! service account it carries may read what meshd reads of cluster 2, and nothing else.

use fleetmesh_kube::testing::TestCluster;
use std::path::Path;
use std::process::Command;

/// One kubeconfig with both clusters, as contexts `ctx-1` and `ctx-2`.
fn merged_kubeconfig(clusters: [&TestCluster; 2], into: &Path) {
    let keys = ["clusters", "users", "contexts"];
    let mut lists: [Vec<serde_yaml_ng::Value>; 3] = Default::default();
    for (i, cluster) in clusters.iter().enumerate() {
        let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
        let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let user = format!("admin-{}", i + 1);
        config["users"][0]["name"] = user.clone().into();
        config["contexts"][0]["name"] = format!("ctx-{}", i + 1).into();
        config["contexts"][0]["context"]["user"] = user.into();
        for (list, key) in lists.iter_mut().zip(keys) {
            list.push(config[key][0].clone());
        }
    }
    let mut merged = serde_yaml_ng::Mapping::new();
    for (list, key) in lists.into_iter().zip(keys) {
        merged.insert(key.into(), list.into());
    }
    merged.insert("current-context".into(), "ctx-1".into());
    std::fs::write(into, serde_yaml_ng::to_string(&merged).unwrap()).unwrap();
}

/// Runs `script` with the guide's variables set and `dirs` first on the PATH; its
/// stdout (it must succeed).
fn shell(script: &str, kubeconfig: &Path, dirs: &[&Path]) -> String {
    let mut path: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    path.push(std::env::var("PATH").unwrap_or_default());
    let path = path.join(":");
    let output = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", path)
        .env("CTX_1", "ctx-1")
        .env("CTX_2", "ctx-2")
        .env("NAME_2", "cluster-2")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_guides_remote_secret_commands_work_verbatim() {
    let one = TestCluster::start("fleetmesh-mc-1").expect("cluster 1 starts");
    let two = TestCluster::start_with_pod_cidr("fleetmesh-mc-2", "198.18.4.0/22")
        .expect("cluster 2 starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    merged_kubeconfig([&one, &two], &kubeconfig);
    // Cluster 1 has had `fleetmesh install`, which makes istio-system.
    one.run_kubectl(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n"),
    )
    .unwrap();
    let kubectl = one.kubectl();
    let kubectl_dir = Path::new(kubectl.get_program()).parent().unwrap();
    // `istioctl` on the PATH, as install writes it.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fleetmesh"), bin.join("istioctl")).unwrap();

    // Twice: a re-run replaces the secret with the same content.
    for _ in 0..2 {
        shell(
            r#"istioctl x create-remote-secret --context="${CTX_2}" --name="${NAME_2}" | kubectl apply -f - --context="${CTX_1}""#,
            &kubeconfig,
            &[kubectl_dir, &bin],
        );
    }
    let listed = shell(
        r#"kubectl get secret istio-remote-secret-${NAME_2} -n istio-system --context="${CTX_1}""#,
        &kubeconfig,
        &[kubectl_dir],
    );
    let row: Vec<&str> = listed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..3],
        ["istio-remote-secret-cluster-2", "Opaque", "1"],
        "{listed}"
    );

    // What the carried service account may do in cluster 2.
    let reader = "--as=system:serviceaccount:istio-system:fleetmesh-reader";
    for (verb, resource, allowed) in [
        ("watch", "services", "yes"),
        ("list", "pods", "yes"),
        ("watch", "endpointslices.discovery.k8s.io", "yes"),
        ("get", "configmaps/fleetmesh-install -n istio-system", "yes"),
        ("get", "configmaps/other -n istio-system", "no"),
        ("list", "secrets", "no"),
        ("create", "pods", "no"),
        ("delete", "services", "no"),
    ] {
        let answer = Command::new(kubectl.get_program())
            .env("KUBECONFIG", &kubeconfig)
            .args(["--context=ctx-2", "auth", "can-i", verb, reader])
            .args(resource.split(' '))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&answer.stdout);
        assert_eq!(said.trim(), allowed, "{verb} {resource}");
    }
    one.run_kubectl(
        &[
            "delete",
            "secret",
            "istio-remote-secret-cluster-2",
            "-n",
            "istio-system",
        ],
        None,
    )
    .unwrap();
}
