//! `analyze` as a user and a CI job run it, as `fleetmesh` and as `istioctl` (install's
//! link to the same binary): findings on stdout, exit status 79 when one is an error,
//! 0 when the config is consistent.

use std::path::Path;
use std::process::{Command, Output};

fn run(program: &Path, dir: &Path) -> Output {
    Command::new(program)
        .arg("analyze")
        .arg(dir)
        .output()
        .expect("the CLI runs")
}

#[test]
fn analyze_reports_what_nothing_defines_and_fails_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let fleetmesh = Path::new(env!("CARGO_BIN_EXE_fleetmesh"));
    std::fs::write(
        dir.path().join("reviews.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n\
         spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n\
         spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v2}}]}]}\n",
    )
    .unwrap();
    let istioctl = dir.path().join("istioctl");
    std::os::unix::fs::symlink(fleetmesh, &istioctl).unwrap();
    for program in [fleetmesh, istioctl.as_path()] {
        let output = run(program, dir.path());
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(79), "{stdout}");
        assert!(
            stdout.contains("Error [IST0101] (VirtualService default/reviews")
                && stdout.contains("\"reviews+v2\""),
            "{stdout}"
        );
    }

    std::fs::write(
        dir.path().join("subsets.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n\
         spec: {host: reviews, subsets: [{name: v2, labels: {version: v2}}]}\n",
    )
    .unwrap();
    let output = run(fleetmesh, dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("No validation issues found"), "{stdout}");
}

/// Without a path, analyze reads the cluster of the kubeconfig (it says which it could not
/// read); `--use-kube=false` with a path reads the files alone.
#[test]
fn without_a_path_analyze_reads_the_cluster() {
    let fleetmesh = Path::new(env!("CARGO_BIN_EXE_fleetmesh"));
    let output = Command::new(fleetmesh)
        .args(["analyze", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(fleetmesh)
        .args([
            "analyze",
            "--use-kube=false",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}
