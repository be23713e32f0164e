//! Compiles fleetmesh's own copy of Istio's certificate API (`proto/`) with protox, so no
//! `protoc` is needed.

fn main() {
    let files = protox::compile(["istio/v1/auth/ca.proto"], ["proto"]).expect("ca.proto compiles");
    tonic_prost_build::configure()
        .compile_fds(files)
        .expect("code generation for ca.proto");
    println!("cargo:rerun-if-changed=proto");
}
