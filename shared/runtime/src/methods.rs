//! The gRPC methods a Laurel process can serve, read once at start-up from
//! the descriptor sets of Laurel's protos, health and reflection. Anything
//! else a client calls is unknown: it gets one metric label, not one per
//! path.

use prost::Message;

/// Whether calls to `path` stay open to everyone and are never shed:
/// health probes and reflection.
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// The `/package.Service/Method` paths described by an encoded
/// `FileDescriptorSet`.
pub fn paths_in(encoded_descriptor_set: &[u8]) -> Result<Vec<String>, prost::DecodeError> {
    let set = prost_types::FileDescriptorSet::decode(encoded_descriptor_set)?;
    let mut paths = Vec::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = service.name.unwrap_or_default();
            let full = if package.is_empty() {
                service_name
            } else {
                format!("{package}.{service_name}")
            };
            for method in service.method {
                paths.push(format!("/{full}/{}", method.name.unwrap_or_default()));
            }
        }
    }
    Ok(paths)
}

/// Every method of every Laurel service plus health and both reflection
/// versions, sorted and without duplicates.
pub fn known() -> Vec<String> {
    let mut paths: Vec<String> = [
        laurel_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    // These sets are compiled into the binary: a decode failure is a build
    // defect that every test would show.
    .flat_map(|set| paths_in(set).expect("compiled-in descriptor set decodes"))
    .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laurel_health_and_reflection_methods_are_known() {
        let known = known();
        for path in [
            "/laurel.member.v1.MemberService/GetMember",
            "/laurel.common.v1.EchoService/Echo",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(known.iter().any(|p| p == path), "{path} missing");
        }
        assert!(!known.iter().any(|p| p == "/x.Y/Random123"));
    }

    #[test]
    fn only_health_and_reflection_are_open() {
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(is_open(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_open("/laurel.common.v1.EchoService/Echo"));
        assert!(!is_open("/grpc.healthz/Check"));
    }
}
