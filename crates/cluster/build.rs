//! Generates the gRPC code of proto/cluster.proto with protox (pure Rust: no system
//! `protoc` is needed) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let file = format!("{proto_dir}/cluster.proto");
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([&file], [proto_dir])?;
    tonic_prost_build::configure()
        // Publications are `Bytes`: forwarded without a copy into the request.
        .bytes(".shoal.cluster.v1.Publication.message")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
