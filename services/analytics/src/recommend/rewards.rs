//! The points service's rewards catalogue, asked over gRPC and kept per
//! programme for the recommendation cache time; without a points address
//! there is no offer.

use std::{sync::Arc, time::Duration};

use laurel_proto::points::v1::{
    ListRewardsRequest, Reward, points_service_client::PointsServiceClient,
};
use tonic::transport::Channel;

/// Most pages read (of 500).
const MAX_PAGES: usize = 20;

/// Asks the points service for its rewards.
#[derive(Clone)]
pub struct Rewards {
    client: Option<PointsServiceClient<Channel>>,
    api_key: Option<String>,
    cache: Option<moka::sync::Cache<String, Arc<Vec<Reward>>>>,
}

impl Rewards {
    /// A catalogue source at `addr` (connected lazily), or none.
    pub fn new(addr: Option<&str>, api_key: Option<String>, ttl: Duration) -> anyhow::Result<Self> {
        let client = match addr {
            Some(addr) => Some(PointsServiceClient::new(
                Channel::from_shared(addr.to_owned())?
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(2))
                    .connect_lazy(),
            )),
            None => None,
        };
        Ok(Self {
            client,
            api_key,
            cache: (!ttl.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(1_000)
                    .time_to_live(ttl)
                    .build()
            }),
        })
    }

    /// The rewards redeemable now in `program`; `None` when unknown.
    pub async fn catalogue(&self, program: &str) -> Option<Arc<Vec<Reward>>> {
        let client = self.client.clone()?;
        if let Some(c) = self.cache.as_ref().and_then(|c| c.get(program)) {
            return Some(c);
        }
        match self.fetch(client, program).await {
            Ok(rewards) => {
                let rewards = Arc::new(rewards);
                if let Some(c) = &self.cache {
                    c.insert(program.to_owned(), rewards.clone());
                }
                Some(rewards)
            }
            Err(error) => {
                tracing::warn!(%error, program, "rewards catalogue unavailable; no offer");
                None
            }
        }
    }

    async fn fetch(
        &self,
        mut client: PointsServiceClient<Channel>,
        program: &str,
    ) -> anyhow::Result<Vec<Reward>> {
        let mut out = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let mut request = tonic::Request::new(ListRewardsRequest {
                page_size: 500,
                page_token: token.clone(),
                redeemable_only: true,
            });
            request
                .metadata_mut()
                .insert("x-laurel-program", program.parse()?);
            if let Some(key) = &self.api_key {
                request.metadata_mut().insert("x-api-key", key.parse()?);
            }
            let page = client.list_rewards(request).await?.into_inner();
            out.extend(page.rewards.into_iter().filter(|r| r.active));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        Ok(out)
    }
}
