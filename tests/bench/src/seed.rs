//! Seeds members over gRPC before the member paths run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, anyhow};
use laurel_proto::member::v1::{
    CreateMemberRequest, GetMemberRequest, Identity, IdentityType, Profile,
};
use tokio::task::JoinSet;
use tonic::Code;

use crate::paths::{Clients, Rng, SeededMember, phone_identity};

/// How many CreateMember calls run at once while seeding.
const SEED_PARALLELISM: usize = 16;
/// Fresh phone numbers tried when one is already taken.
const PHONE_RETRIES: usize = 5;

/// Creates `count` members (phone and email identities), then gets each once
/// to warm the server's cache. Any failure is a setup failure.
pub async fn seed(clients: &[Clients], count: usize) -> Result<Vec<SeededMember>> {
    let mut rng = Rng::seeded();
    // A random per-run prefix keeps reruns from colliding on phone numbers;
    // run_tag does the same for emails.
    let run_prefix = 1000 + rng.below(9000);
    let run_tag = uuid::Uuid::now_v7().simple().to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for w in 0..SEED_PARALLELISM.min(count) {
        let mut c = clients[w % clients.len()].clone();
        let next = next.clone();
        let run_tag = run_tag.clone();
        tasks.spawn(async move {
            let mut rng = Rng::seeded();
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(out);
                }
                let m = create_one(&mut c, i, run_prefix, &run_tag, &mut rng).await?;
                get_one(&mut c, &m.member_id).await?;
                out.push(m);
            }
        });
    }
    let mut members = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        members.extend(joined.context("seeding task panicked")??);
    }
    Ok(members)
}

async fn create_one(
    c: &mut Clients,
    i: usize,
    run_prefix: usize,
    run_tag: &str,
    rng: &mut Rng,
) -> Result<SeededMember> {
    // German mobile number: +49 151 and eight digits.
    let mut phone = format!("+49151{run_prefix:04}{i:04}");
    for attempt in 0..=PHONE_RETRIES {
        let req = CreateMemberRequest {
            request_id: uuid::Uuid::now_v7().to_string(),
            profile: Some(Profile {
                given_name: format!("Bench{i}"),
                ..Profile::default()
            }),
            identities: vec![
                phone_identity(&phone),
                Identity {
                    r#type: IdentityType::Email as i32,
                    value: format!("bench-{run_tag}-{i}-{attempt}@example.com"),
                    ..Identity::default()
                },
            ],
            ..CreateMemberRequest::default()
        };
        match c.member.create_member(c.meta.request(req)).await {
            Ok(resp) => {
                let member = resp
                    .into_inner()
                    .member
                    .ok_or_else(|| anyhow!("CreateMember answered without a member"))?;
                // Look the phone up as the server stored it (it may normalise).
                let stored_phone = member
                    .identities
                    .iter()
                    .find(|id| id.r#type == IdentityType::Phone as i32)
                    .map_or(phone, |id| id.value.clone());
                return Ok(SeededMember {
                    member_id: member.member_id,
                    phone: stored_phone,
                });
            }
            Err(s) if s.code() == Code::AlreadyExists && attempt < PHONE_RETRIES => {
                phone = format!("+49151{:08}", rng.below(100_000_000));
            }
            Err(s) => {
                return Err(anyhow!(
                    "CreateMember #{i} failed: {:?}: {}",
                    s.code(),
                    s.message()
                ));
            }
        }
    }
    unreachable!("the last attempt returns")
}

async fn get_one(c: &mut Clients, member_id: &str) -> Result<()> {
    let req = GetMemberRequest {
        member_id: member_id.to_string(),
    };
    c.member
        .get_member(c.meta.request(req))
        .await
        .map_err(|s| {
            anyhow!(
                "GetMember {member_id} failed: {:?}: {}",
                s.code(),
                s.message()
            )
        })?;
    Ok(())
}
