//! How long another replica serves an old card after a write: write on
//! replica A (UpdateMember changing a tag), then read on replica B until it
//! shows the new version.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use laurel_proto::member::v1::{GetMemberRequest, Member, UpdateMemberRequest};
use tokio::time::Instant;

use crate::paths::{Clients, SeededMember};

/// The delays seen over all writes.
pub struct Staleness {
    pub writes: u64,
    /// Microseconds from A's answer to the first answer of B with the new
    /// version (a read that is fresh at once counts its own round trip).
    pub hist: Histogram<u64>,
    /// Writes whose first read on B already showed the new version.
    pub fresh_at_once: u64,
    /// Writes B did not show within the give-up time.
    pub never: u64,
    pub give_up: Duration,
}

impl Staleness {
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }
}

/// Makes `writes` writes on `a`, one at a time round-robin over `members`,
/// and after each polls `b` back to back until it shows the write, giving up
/// after `give_up`.
pub async fn measure(
    a: &Clients,
    b: &Clients,
    members: &[SeededMember],
    writes: usize,
    give_up: Duration,
) -> Result<Staleness> {
    if members.is_empty() {
        bail!("no seeded members to write");
    }
    let (mut a, mut b) = (a.clone(), b.clone());
    let mut hist = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let mut fresh_at_once = 0;
    let mut never = 0;
    let run = uuid::Uuid::now_v7().simple().to_string();
    for i in 0..writes {
        let member_id = &members[i % members.len()].member_id;
        // B reads the card first, so whatever B caches holds the old one.
        let before = version_on(&mut b, member_id).await.context("read on B")?;
        let written = update_tag(&mut a, member_id, &format!("stale-{}-{i}", &run[..8]))
            .await
            .context("UpdateMember on A")?;
        if written <= before {
            bail!("UpdateMember on A answered version {written}, B had {before} before");
        }
        let written_at = Instant::now();
        let mut first = true;
        loop {
            let seen = version_on(&mut b, member_id).await.context("read on B")?;
            let elapsed = written_at.elapsed();
            if seen >= written {
                hist.saturating_record(
                    u64::try_from(elapsed.as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1),
                );
                if first {
                    fresh_at_once += 1;
                }
                break;
            }
            if elapsed > give_up {
                never += 1;
                break;
            }
            first = false;
        }
    }
    Ok(Staleness {
        writes: writes as u64,
        hist,
        fresh_at_once,
        never,
        give_up,
    })
}

async fn version_on(c: &mut Clients, member_id: &str) -> Result<i64> {
    let req = GetMemberRequest {
        member_id: member_id.to_string(),
    };
    let member = c
        .member
        .get_member(c.meta.request(req))
        .await
        .map_err(|s| anyhow!("GetMember: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .member
        .context("GetMember answered without a member")?;
    Ok(member.version)
}

async fn update_tag(c: &mut Clients, member_id: &str, tag: &str) -> Result<i64> {
    let req = UpdateMemberRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        member: Some(Member {
            member_id: member_id.to_string(),
            tags: vec!["bench".into(), tag.to_string()],
            ..Member::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["tags".into()],
        }),
    };
    let member = c
        .member
        .update_member(c.meta.request(req))
        .await
        .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner()
        .member
        .context("UpdateMember answered without a member")?;
    Ok(member.version)
}
