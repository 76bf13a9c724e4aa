//! Generated protobuf and gRPC types for every Laurel service and event.

/// Types shared by every service: money, the event envelope, echo.
pub mod common {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("laurel.common.v1");
    }
}

/// The member service's API and events.
pub mod member {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("laurel.member.v1");
    }
}

/// The points service's API and events.
pub mod points {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("laurel.points.v1");
    }
}

/// The tier service's API and events.
pub mod tier {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("laurel.tier.v1");
    }
}

/// The analytics service's API and events.
pub mod analytics {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("laurel.analytics.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Laurel proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("laurel_descriptor");
