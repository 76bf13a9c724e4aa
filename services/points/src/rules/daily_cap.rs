//! The per-member daily cap on points from orders.

use laurel_proto::points::v1 as pb;

/// What an order's `points` may still earn when the member has earned
/// `earned_today` from orders that day and `cap` is the daily cap (a real
/// cap: pass [`Earned::daily_cap`](super::Earned::daily_cap), which is
/// `None` when the rules have none). The result is never negative nor more
/// than `points`; when the cap cuts, the `cap:day` part says by how much
/// (negative points), to be appended to the order's explanation.
pub fn apply_daily_cap(points: i64, earned_today: i64, cap: i64) -> (i64, Option<pb::AppliedRule>) {
    let points = points.max(0);
    let room = cap.saturating_sub(earned_today.max(0)).max(0);
    if points <= room {
        return (points, None);
    }
    let cut = pb::AppliedRule {
        rule: "cap:day".into(),
        points: room - points,
        detail: format!("at most {cap} points a day from orders; {earned_today} earned already"),
    };
    (room, Some(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_within_the_room_left_pass_unchanged() {
        assert_eq!(apply_daily_cap(40, 50, 100), (40, None));
        assert_eq!(apply_daily_cap(50, 50, 100), (50, None));
        assert_eq!(apply_daily_cap(0, 500, 100), (0, None));
    }

    #[test]
    fn points_past_the_room_left_are_cut_and_explained() {
        let (points, cut) = apply_daily_cap(80, 50, 100);
        assert_eq!(points, 50);
        let cut = cut.expect("a cut");
        assert_eq!(cut.rule, "cap:day");
        assert_eq!(cut.points, -30);
    }

    #[test]
    fn a_member_over_the_cap_already_earns_nothing_and_never_less() {
        let (points, cut) = apply_daily_cap(80, 150, 100);
        assert_eq!(points, 0);
        assert_eq!(cut.map(|c| c.points), Some(-80));
    }

    #[test]
    fn extreme_inputs_do_not_overflow() {
        assert_eq!(apply_daily_cap(i64::MAX, i64::MIN, i64::MAX).0, i64::MAX);
        assert_eq!(apply_daily_cap(i64::MAX, i64::MAX, 1).0, 0);
        assert_eq!(apply_daily_cap(i64::MIN, 0, 10), (0, None));
    }
}
