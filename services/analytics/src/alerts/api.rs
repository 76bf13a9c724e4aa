//! `PutAlertRule`, `ListAlertRules` and `ListAlerts`.

use chrono::DateTime;
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{Begun, Plain, RequestKey, check_request_id},
    pagination,
};
use uuid::Uuid;

use super::{
    rule::{self, Rule, valid_rule_id},
    store,
};
use crate::{Analytics, error::AnalyticsError};

impl Analytics {
    /// `PutAlertRule`: adds or replaces the rule. Alerts the rule raised
    /// before stay, and still count for their periods.
    pub(crate) async fn put_alert_rule(
        &self,
        ctx: &RequestContext,
        request: &pb::PutAlertRuleRequest,
    ) -> Result<pb::PutAlertRuleResponse, AnalyticsError> {
        let mut v = Violations::new();
        check_request_id(&request.request_id, &mut v);
        let checked = Rule::check(request.rule.as_ref(), &mut v);
        v.finish()?;
        let rule = checked.ok_or_else(|| AnalyticsError::field("rule", "invalid"))?;
        let key = RequestKey::new(ctx, "PutAlertRule", &request.request_id);
        match self
            .idempotency
            .begin(&self.db, key, request, Plain)
            .await?
        {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                rule::put(fresh.tx(), ctx.program.as_str(), &rule, self.now()).await?;
                let response = pb::PutAlertRuleResponse {
                    rule: Some(rule.to_pb()),
                };
                fresh.commit(&response, None).await?;
                Ok(response)
            }
        }
    }

    /// `ListAlertRules`.
    pub(crate) async fn list_alert_rules(
        &self,
        ctx: &RequestContext,
        _request: &pb::ListAlertRulesRequest,
    ) -> Result<pb::ListAlertRulesResponse, AnalyticsError> {
        let mut conn = self.db.acquire().await?;
        let rules = rule::list(&mut conn, ctx.program.as_str(), false).await?;
        Ok(pb::ListAlertRulesResponse {
            rules: rules.iter().map(Rule::to_pb).collect(),
        })
    }

    /// `ListAlerts`: newest first, a page at a time.
    pub(crate) async fn list_alerts(
        &self,
        ctx: &RequestContext,
        request: &pb::ListAlertsRequest,
    ) -> Result<pb::ListAlertsResponse, AnalyticsError> {
        let mut v = Violations::new();
        let rule_id = request.rule_id.trim();
        v.check(
            !rule_id.is_empty() && !valid_rule_id(rule_id),
            "rule_id",
            "1 to 64 letters, digits, '-' or '_' (empty: every rule)",
        );
        let (limit, after) = pagination::page(
            request.page_size,
            &request.page_token,
            |p| {
                let (micros, id) = p.split_once('|')?;
                Some((
                    DateTime::from_timestamp_micros(micros.parse().ok()?)?,
                    Uuid::parse_str(id).ok()?,
                ))
            },
            &mut v,
        );
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        let rule = (!rule_id.is_empty()).then_some(rule_id);
        let mut alerts =
            store::page(&mut conn, ctx.program.as_str(), rule, after, limit + 1).await?;
        let next_page_token = match alerts.len() as i64 > limit {
            true => {
                alerts.truncate(limit as usize);
                let last = alerts.last().expect("a full page");
                pagination::encode_token(&format!(
                    "{}|{}",
                    last.raised_at.timestamp_micros(),
                    last.alert_id
                ))
            }
            false => String::new(),
        };
        Ok(pb::ListAlertsResponse {
            alerts: alerts.iter().map(store::Alert::to_pb).collect(),
            next_page_token,
        })
    }
}
