//! What every service's tests say to a service and read from its answers:
//! a request in a programme, a fresh request id, money and timestamps, and
//! the field violations and reason of an error.

use chrono::{DateTime, Utc};
use laurel_proto::common::v1::Money;
use tonic_types::StatusExt;
use uuid::Uuid;

/// `message` in programme `program` (the `x-laurel-program` header).
pub fn in_program<T>(program: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-laurel-program", program.parse().expect("a programme id"));
    request
}

/// `message` in the `default` programme.
pub fn req<T>(message: T) -> tonic::Request<T> {
    in_program("default", message)
}

/// A request id no other call uses.
pub fn rid() -> String {
    Uuid::now_v7().to_string()
}

/// `amount_minor` euro cents.
pub fn eur(amount_minor: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        amount_minor,
    }
}

/// `at` as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// The google.rpc BadRequest field names of an error.
pub fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The google.rpc ErrorInfo reason of an error.
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}
