//! The analytics service's calls the benchmark makes, over gRPC, each
//! naming its programme in `x-laurel-program`.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chrono::NaiveDate;
use laurel_proto::analytics::v1::{self as pb, analytics_service_client::AnalyticsServiceClient};
use laurel_proto::common::v1::{EchoRequest, echo_service_client::EchoServiceClient};
use tonic::transport::{Channel, Endpoint};

/// A connection to the service.
#[derive(Clone)]
pub struct Service {
    pub analytics: AnalyticsServiceClient<Channel>,
    pub echo: EchoServiceClient<Channel>,
}

/// Runs and fits take minutes on a million members: no client deadline
/// below this (the service's own, LAUREL_REQUEST_TIMEOUT_MS, is raised by
/// deploy/bench/analytics.sh).
const LONG_CALL: Duration = Duration::from_secs(3600);

/// `message` with the programme's metadata.
pub fn request<T>(program: &str, message: T) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "x-laurel-program",
        program
            .parse()
            .with_context(|| format!("programme {program:?}"))?,
    );
    r.set_timeout(LONG_CALL);
    Ok(r)
}

/// A fresh idempotency key.
fn request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn status(context: &str) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow!("{context}: {:?}: {}", s.code(), s.message())
}

/// Midnight UTC of `day` (the programmes here are on UTC).
pub fn timestamp(day: NaiveDate) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp(),
        nanos: 0,
    }
}

impl Service {
    /// Connects and checks that echo answers.
    pub async fn connect(addr: &str) -> Result<Self> {
        let channel = Endpoint::from_shared(addr.to_string())
            .with_context(|| format!("address {addr}"))?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("connect to {addr}"))?;
        let mut s = Self {
            analytics: AnalyticsServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20),
            echo: EchoServiceClient::new(channel),
        };
        s.echo
            .echo(request(
                "default",
                EchoRequest {
                    payload: b"ping".to_vec(),
                },
            )?)
            .await
            .map_err(status("echo"))?;
        Ok(s)
    }

    /// PutSettings: `currency`, UTC, default bins, everyone who bought in
    /// the last ten years active.
    pub async fn put_settings(&self, program: &str, currency: &str) -> Result<()> {
        self.analytics
            .clone()
            .put_settings(request(
                program,
                pb::PutSettingsRequest {
                    request_id: request_id(),
                    settings: Some(pb::Settings {
                        currency_code: currency.into(),
                        time_zone: "UTC".into(),
                        active_days: 3650,
                        ..Default::default()
                    }),
                },
            )?)
            .await
            .map_err(status("PutSettings"))?;
        Ok(())
    }

    /// RecomputeRfm.
    pub async fn recompute_rfm(&self, program: &str) -> Result<pb::RfmRun> {
        self.analytics
            .clone()
            .recompute_rfm(request(
                program,
                pb::RecomputeRfmRequest {
                    request_id: request_id(),
                },
            )?)
            .await
            .map_err(status("RecomputeRfm"))?
            .into_inner()
            .run
            .context("RecomputeRfm answered no run")
    }

    /// GetRfmSummary's members per segment, by segment number.
    pub async fn segment_counts(&self, program: &str) -> Result<Vec<(i32, i64)>> {
        let summary = self
            .analytics
            .clone()
            .get_rfm_summary(request(program, pb::GetRfmSummaryRequest {})?)
            .await
            .map_err(status("GetRfmSummary"))?
            .into_inner();
        let mut counts: Vec<(i32, i64)> = summary
            .segments
            .iter()
            .map(|s| (s.segment, s.members))
            .collect();
        counts.sort_unstable();
        Ok(counts)
    }

    /// FitClvModel over everyone's purchases up to `end`.
    pub async fn fit_clv(&self, program: &str, end: NaiveDate) -> Result<pb::ClvModel> {
        self.analytics
            .clone()
            .fit_clv_model(request(
                program,
                pb::FitClvModelRequest {
                    request_id: request_id(),
                    calibration_start: None,
                    calibration_end: Some(timestamp(end)),
                },
            )?)
            .await
            .map_err(status("FitClvModel"))?
            .into_inner()
            .model
            .context("FitClvModel answered no model")
    }
}

/// The request recommendations are measured with.
pub fn recommendations_request(member: uuid::Uuid) -> pb::GetRecommendationsRequest {
    pb::GetRecommendationsRequest {
        member_id: member.to_string(),
        limit: 10,
        level: pb::RecommendationLevel::Sku as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_their_programme() {
        let r = request("cdnow", ()).unwrap();
        assert_eq!(r.metadata().get("x-laurel-program").unwrap(), "cdnow");
        assert!(request("bad\nname", ()).is_err());
    }

    #[test]
    fn days_are_sent_as_utc_midnight() {
        let t = timestamp(NaiveDate::from_ymd_opt(1997, 9, 30).unwrap());
        assert_eq!((t.seconds, t.nanos), (875_577_600, 0));
    }
}
