//! Compiles every proto under `proto/` with a vendored protoc, so a machine
//! with only Rust builds the workspace.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files = [
        "laurel/common/v1/echo.proto",
        "laurel/common/v1/event.proto",
        "laurel/common/v1/money.proto",
        "laurel/member/v1/member.proto",
        "laurel/member/v1/events.proto",
        "laurel/points/v1/points.proto",
        "laurel/points/v1/events.proto",
        "laurel/tier/v1/tier.proto",
        "laurel/tier/v1/events.proto",
        "laurel/analytics/v1/analytics.proto",
        "laurel/analytics/v1/events.proto",
    ]
    .map(|f| root.join(f));
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Ordered maps keep the encoding of a message deterministic, which the
    // idempotency check hashes.
    config.btree_map(["."]);
    // Type names let events travel as google.protobuf.Any.
    config.enable_type_names();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("laurel_descriptor.bin"))
        .compile_with_config(
            config,
            &files,
            &[root, protoc_bin_vendored::include_path()?],
        )?;
    Ok(())
}
