//! The h2load runs: bare echo, echo, GetMember, LookupMember, the points
//! service's replayed Earn, GetMemberTier and GetMemberCard, each after one call of the very same message
//! through a real gRPC client, so a failing path cannot pass as speed.

use anyhow::{Context, Result, anyhow};
use laurel_proto::member::v1::GetMemberRequest;

use crate::h2load::{self, Outcome, Shape};
use crate::paths::{self, Clients, Fixture, PathKind};
use crate::scrape::{self, Codes};

/// One path's h2load runs.
pub struct Row {
    pub kind: PathKind,
    /// The run with the median rate.
    pub outcome: Outcome,
    /// Every measured run's rate, in order.
    pub rounds: Vec<f64>,
    /// gRPC codes the server counted during the measured runs (`--metrics-url`).
    pub grpc_codes: Option<Codes>,
}

/// A path ready to drive: its URL, frame and metrics endpoint.
struct Prepared<'a> {
    kind: PathKind,
    url: String,
    frame: Vec<u8>,
    metrics: Option<&'a str>,
}

/// Where and how to run.
pub struct Target<'a> {
    pub addr: &'a str,
    pub bare_addr: Option<&'a str>,
    pub metrics_url: Option<&'a str>,
    /// The points service and its metrics endpoint, for earn-replay.
    pub points_addr: Option<&'a str>,
    pub points_metrics_url: Option<&'a str>,
    /// The tier service and its metrics endpoint, for tier-get.
    pub tier_addr: Option<&'a str>,
    pub tier_metrics_url: Option<&'a str>,
    /// Metadata sent with every call, as h2load headers.
    pub headers: Vec<(String, String)>,
}

/// Runs h2load for each of `kinds` (bare-echo, echo, get-member,
/// lookup-member, earn-replay, tier-get, member-card), `shape.rounds` times each, interleaved so a
/// passing disturbance hits every path alike; member paths use the first
/// seeded member, earn-replay the fixture's replayed request (h2load sends
/// one body, so an Earn under h2load is always a replay).
pub async fn run(
    shape: &Shape,
    target: &Target<'_>,
    clients: &Clients,
    kinds: &[PathKind],
    fixture: &Fixture,
) -> Result<Vec<Row>> {
    let member = fixture.members.first();
    h2load::check_installed().await?;
    let mut prepared = Vec::new();
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
            PathKind::EarnReplay => {
                let req = fixture
                    .points
                    .as_ref()
                    .context("earn-replay needs the points paths set up")?
                    .replay
                    .clone();
                let meta = c.meta.clone();
                c.points()
                    .map_err(|s| anyhow!("{}", s.message()))?
                    .earn(meta.request(req.clone()))
                    .await
                    .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
                    .context("earn-replay check call")?;
                (
                    "/laurel.points.v1.PointsService/Earn",
                    h2load::grpc_frame(&req),
                )
            }
            PathKind::TierGet => {
                let m = member.context("tier-get needs a seeded member")?;
                let req = paths::member_tier_request(m);
                let meta = c.meta.clone();
                c.tier()
                    .map_err(|s| anyhow!("{}", s.message()))?
                    .get_member_tier(meta.request(req.clone()))
                    .await
                    .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
                    .context("tier-get check call")?;
                (
                    "/laurel.tier.v1.TierService/GetMemberTier",
                    h2load::grpc_frame(&req),
                )
            }
            PathKind::MemberCard => {
                let m = member.context("member-card needs a seeded member")?;
                let req = paths::member_card_request(m);
                c.member
                    .get_member_card(c.meta.request(req.clone()))
                    .await
                    .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))
                    .context("member-card check call")?;
                (
                    "/laurel.member.v1.MemberService/GetMemberCard",
                    h2load::grpc_frame(&req),
                )
            }
            PathKind::RecordActivity
            | PathKind::ConsumeBenefit
            | PathKind::Earn
            | PathKind::EarnHot
            | PathKind::Redeem
            | PathKind::RedeemHot
            | PathKind::PurchaseVisible => continue,
        };
        let (base, metrics) = match kind {
            PathKind::BareEcho => (
                target.bare_addr.context("bare-echo needs --bare-addr")?,
                None,
            ),
            PathKind::EarnReplay => (
                target
                    .points_addr
                    .context("earn-replay needs --points-addr")?,
                target.points_metrics_url,
            ),
            PathKind::TierGet => (
                target.tier_addr.context("tier-get needs --tier-addr")?,
                target.tier_metrics_url,
            ),
            _ => (target.addr, target.metrics_url),
        };
        let url = format!("{}{method}", base.trim_end_matches('/'));
        if shape.warmup_calls > 0 {
            let warm = Shape {
                calls: shape.warmup_calls,
                ..*shape
            };
            h2load::run(&warm, &frame, &target.headers, &url)
                .await
                .with_context(|| format!("h2load {} warm-up", kind.name()))?;
        }
        prepared.push(Prepared {
            kind,
            url,
            frame,
            metrics,
        });
    }
    let mut runs: Vec<Vec<Outcome>> = prepared.iter().map(|_| Vec::new()).collect();
    let mut codes: Vec<Option<Codes>> = prepared.iter().map(|_| None).collect();
    for round in 1..=shape.rounds.max(1) {
        for (i, p) in prepared.iter().enumerate() {
            eprintln!(
                "h2load {} round {round}/{} -n {} -c {} -m {} -t {} ...",
                p.kind.name(),
                shape.rounds.max(1),
                shape.calls,
                shape.connections,
                shape.streams,
                shape.threads,
            );
            // Counted around the measured run only.
            let before = match p.metrics {
                Some(m) => Some(scrape::fetch(m).await?),
                None => None,
            };
            let outcome = h2load::run(shape, &p.frame, &target.headers, &p.url)
                .await
                .with_context(|| format!("h2load {}", p.kind.name()))?;
            if let (Some(m), Some(before)) = (p.metrics, before) {
                let counted = scrape::diff(&before, &scrape::fetch(m).await?);
                let total = codes[i].get_or_insert_with(Codes::new);
                for (code, n) in counted {
                    *total.entry(code).or_default() += n;
                }
            }
            eprintln!(
                "  {:.1} calls/s, mean {:.3} ms, {} HTTP failures",
                outcome.rps,
                outcome.mean_ms,
                outcome.http_failures()
            );
            runs[i].push(outcome);
        }
    }
    let rows = prepared
        .iter()
        .zip(runs)
        .zip(codes)
        .map(|((p, mut outcomes), grpc_codes)| {
            let rounds: Vec<f64> = outcomes.iter().map(|o| o.rps).collect();
            outcomes.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            let outcome = outcomes.swap_remove(outcomes.len() / 2);
            Row {
                kind: p.kind,
                outcome,
                rounds,
                grpc_codes,
            }
        })
        .collect();
    Ok(rows)
}
