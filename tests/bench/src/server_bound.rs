//! The h2load runs: bare echo, echo, GetMember and LookupMember, each after
//! one call of the very same message through a real gRPC client, so a
//! failing path cannot pass as speed.

use anyhow::{Context, Result, anyhow};
use laurel_proto::member::v1::GetMemberRequest;

use crate::h2load::{self, Outcome, Shape};
use crate::paths::{self, Clients, PathKind, SeededMember};
use crate::scrape::{self, Codes};

/// One h2load run.
pub struct Row {
    pub kind: PathKind,
    pub outcome: Outcome,
    /// gRPC codes the server counted during the run (`--metrics-url`).
    pub grpc_codes: Option<Codes>,
}

/// Where and how to run.
pub struct Target<'a> {
    pub addr: &'a str,
    pub bare_addr: Option<&'a str>,
    pub metrics_url: Option<&'a str>,
    /// Metadata sent with every call, as h2load headers.
    pub headers: Vec<(String, String)>,
}

/// Runs h2load for each of `kinds` (bare-echo, echo, get-member,
/// lookup-member) in that order; member paths use `member`.
pub async fn run(
    shape: &Shape,
    target: &Target<'_>,
    clients: &Clients,
    kinds: &[PathKind],
    member: Option<&SeededMember>,
) -> Result<Vec<Row>> {
    h2load::check_installed().await?;
    let mut rows = Vec::new();
    for &kind in kinds {
        let mut c = clients.clone();
        let (method, frame) = match kind {
            PathKind::Echo | PathKind::BareEcho => {
                let req = paths::echo_request();
                let client = if kind == PathKind::BareEcho {
                    c.bare.as_mut().context("bare-echo needs --bare-addr")?
                } else {
                    &mut c.echo
                };
                client
                    .echo(c.meta.request(req.clone()))
                    .await
                    .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
                    .with_context(|| format!("{} check call", kind.name()))?;
                (
                    "/laurel.common.v1.EchoService/Echo",
                    h2load::grpc_frame(&req),
                )
            }
            PathKind::GetMember => {
                let m = member.context("get-member needs a seeded member")?;
                let req = GetMemberRequest {
                    member_id: m.member_id.clone(),
                };
                c.member
                    .get_member(c.meta.request(req.clone()))
                    .await
                    .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
                    .context("get-member check call")?;
                (
                    "/laurel.member.v1.MemberService/GetMember",
                    h2load::grpc_frame(&req),
                )
            }
            PathKind::LookupMember => {
                let m = member.context("lookup-member needs a seeded member")?;
                let req = paths::lookup_request(m);
                c.member
                    .lookup_member(c.meta.request(req.clone()))
                    .await
                    .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
                    .context("lookup-member check call")?;
                (
                    "/laurel.member.v1.MemberService/LookupMember",
                    h2load::grpc_frame(&req),
                )
            }
            PathKind::RecordActivity => continue,
        };
        let (base, metrics) = if kind == PathKind::BareEcho {
            (
                target.bare_addr.context("bare-echo needs --bare-addr")?,
                None,
            )
        } else {
            (target.addr, target.metrics_url)
        };
        let url = format!("{}{method}", base.trim_end_matches('/'));
        eprintln!(
            "h2load {} -n {} -c {} -m {} -t {} (after {} warm-up calls) ...",
            kind.name(),
            shape.calls,
            shape.connections,
            shape.streams,
            shape.threads,
            shape.warmup_calls,
        );
        if shape.warmup_calls > 0 {
            let warm = Shape {
                calls: shape.warmup_calls,
                ..*shape
            };
            h2load::run(&warm, &frame, &target.headers, &url)
                .await
                .with_context(|| format!("h2load {} warm-up", kind.name()))?;
        }
        // Counted around the measured run only.
        let before = match metrics {
            Some(m) => Some(scrape::fetch(m).await?),
            None => None,
        };
        let outcome = h2load::run(shape, &frame, &target.headers, &url)
            .await
            .with_context(|| format!("h2load {}", kind.name()))?;
        let grpc_codes = match (metrics, before) {
            (Some(m), Some(before)) => Some(scrape::diff(&before, &scrape::fetch(m).await?)),
            _ => None,
        };
        eprintln!(
            "  {:.1} calls/s, mean {:.3} ms, {} HTTP failures",
            outcome.rps,
            outcome.mean_ms,
            outcome.http_failures()
        );
        rows.push(Row {
            kind,
            outcome,
            grpc_codes,
        });
    }
    Ok(rows)
}
