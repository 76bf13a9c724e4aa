//! The kinds of activity, and the one place that maps a kind to its stored
//! code and its wire enum.

use laurel_proto::member::v1 as pb;

/// What an activity records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActivityKind {
    /// A purchase of an order.
    Purchase,
    /// A refund of part or all of an earlier purchase.
    Refund,
    /// A product review.
    Review,
    /// A share on social media.
    Share,
    /// A store or event check-in.
    CheckIn,
    /// Survey feedback.
    Feedback,
    /// A programme-defined activity.
    Custom,
}

impl ActivityKind {
    /// Every kind, in code order.
    pub const ALL: [Self; 7] = [
        Self::Purchase,
        Self::Refund,
        Self::Review,
        Self::Share,
        Self::CheckIn,
        Self::Feedback,
        Self::Custom,
    ];

    /// The wire enum.
    pub fn proto(self) -> pb::ActivityType {
        match self {
            Self::Purchase => pb::ActivityType::Purchase,
            Self::Refund => pb::ActivityType::Refund,
            Self::Review => pb::ActivityType::Review,
            Self::Share => pb::ActivityType::Share,
            Self::CheckIn => pb::ActivityType::CheckIn,
            Self::Feedback => pb::ActivityType::Feedback,
            Self::Custom => pb::ActivityType::Custom,
        }
    }

    /// The code stored in `activities.activity_type`: the wire enum's value,
    /// so stored rows and events agree.
    pub fn code(self) -> i16 {
        self.proto() as i16
    }

    /// The kind of a stored code.
    pub fn from_code(code: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The kind of an activity's detail.
    pub fn of(detail: &pb::activity::Detail) -> Self {
        use pb::activity::Detail;
        match detail {
            Detail::Purchase(_) => Self::Purchase,
            Detail::Refund(_) => Self::Refund,
            Detail::Review(_) => Self::Review,
            Detail::Share(_) => Self::Share,
            Detail::CheckIn(_) => Self::CheckIn,
            Detail::Feedback(_) => Self::Feedback,
            Detail::Custom(_) => Self::Custom,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_the_wire_enum() {
        for kind in ActivityKind::ALL {
            assert_eq!(ActivityKind::from_code(kind.code()), Some(kind));
            assert_eq!(i32::from(kind.code()), kind.proto() as i32);
        }
        assert_eq!(ActivityKind::Purchase.code(), 1);
        assert_eq!(ActivityKind::Refund.code(), 2);
        assert_eq!(ActivityKind::from_code(0), None);
    }
}
