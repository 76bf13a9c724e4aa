//! Fixed points for events: reviews, shares, check-ins and referrals.

use laurel_proto::points::v1 as pb;

use super::model::RuleSet;

/// What one event earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventEarned {
    /// Points per event (1 or more).
    pub points: i64,
    /// At most this many events of the kind earn per member and day; the
    /// ledger counts them. `None`: no limit.
    pub max_per_day: Option<u32>,
}

/// What an event of `kind` earns, or `None` when the rules give that kind
/// nothing (no rule for it, or not an event kind at all).
pub fn earn_for_event(rules: &RuleSet, kind: pb::EarnKind) -> Option<EventEarned> {
    rules
        .event_rules
        .iter()
        .find(|rule| rule.kind == kind)
        .map(|rule| EventEarned {
            points: rule.points,
            max_per_day: rule.max_per_day,
        })
}
