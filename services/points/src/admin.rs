//! Programme settings and earn rules: stored with their own idempotent
//! transactions (they are rare and not batched).

use laurel_proto::points::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{Begun, Plain, RequestKey},
    pagination,
};

use crate::{Points, clock_now, error::PointsError, requests as check, rules, settings};

impl Points {
    /// GetProgramSettings.
    pub async fn program_settings(
        &self,
        ctx: &RequestContext,
    ) -> Result<pb::ProgramSettings, PointsError> {
        Ok(self
            .settings
            .get(self.db.pool(), ctx.program.as_str())
            .await?
            .proto
            .clone())
    }

    /// UpdateProgramSettings.
    pub async fn update_program_settings(
        &self,
        ctx: &RequestContext,
        req: &pb::UpdateProgramSettingsRequest,
    ) -> Result<pb::UpdateProgramSettingsResponse, PointsError> {
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let mut new = req.settings.clone().unwrap_or_default();
        new.currency_code = new.currency_code.trim().to_ascii_uppercase();
        if new.time_zone.is_empty() {
            new.time_zone = "UTC".into();
        }
        v.check(req.settings.is_none(), "settings", "required");
        v.finish()?;
        settings::validate(&new)?;
        let key = RequestKey::new(ctx, "UpdateProgramSettings", &req.request_id);
        match self.idempotency.begin(&self.db, key, req, Plain).await? {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                self.settings
                    .put(
                        fresh.tx(),
                        ctx.program.as_str(),
                        &new,
                        clock_now(&self.clock),
                    )
                    .await?;
                let response = pb::UpdateProgramSettingsResponse {
                    settings: Some(new),
                };
                fresh.commit(&response, None).await?;
                self.settings.forget(ctx.program.as_str());
                Ok(response)
            }
        }
    }

    /// PublishEarnRules.
    pub async fn publish_rules(
        &self,
        ctx: &RequestContext,
        req: &pb::PublishEarnRulesRequest,
    ) -> Result<pb::PublishEarnRulesResponse, PointsError> {
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let Some(proto) = &req.rules else {
            v.add("rules", "required");
            return Err(v.into());
        };
        let ruleset = match rules::validate(proto) {
            Ok(r) => Some(r),
            Err(more) => {
                v.finish()?;
                return Err(more.into());
            }
        };
        v.finish()?;
        let key = RequestKey::new(ctx, "PublishEarnRules", &req.request_id);
        match self.idempotency.begin(&self.db, key, req, Plain).await? {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                let published = rules::store::publish(
                    fresh.tx(),
                    ctx.program.as_str(),
                    ruleset.as_ref().expect("valid"),
                    clock_now(&self.clock),
                )
                .await?;
                let response = pb::PublishEarnRulesResponse {
                    rules: Some(published),
                };
                fresh.commit(&response, None).await?;
                self.rules.invalidate(ctx.program.as_str());
                Ok(response)
            }
        }
    }

    /// ListEarnRules.
    pub async fn list_rules(
        &self,
        ctx: &RequestContext,
        req: &pb::ListEarnRulesRequest,
    ) -> Result<pb::ListEarnRulesResponse, PointsError> {
        let mut v = Violations::new();
        let (limit, before) = pagination::page(
            req.page_size,
            &req.page_token,
            |p| p.parse::<i64>().ok(),
            &mut v,
        );
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        let mut list =
            rules::store::list(&mut conn, ctx.program.as_str(), before, limit + 1).await?;
        let next = if list.len() as i64 > limit {
            list.truncate(limit as usize);
            pagination::encode_token(&list.last().expect("a full page").version.to_string())
        } else {
            String::new()
        };
        Ok(pb::ListEarnRulesResponse {
            rules: list,
            next_page_token: next,
        })
    }
}
