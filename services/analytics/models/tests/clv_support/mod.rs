//! Loading the CDNOW sample into per-customer purchases.

use std::path::PathBuf;

use chrono::NaiveDate;
use laurel_analytics_models::clv::Purchase;

/// Path of the CDNOW sample shipped with the crate.
pub fn cdnow_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/cdnow/CDNOW_sample.txt")
}

/// Days since 1970-01-01 of a date.
pub fn epoch_day(date: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch");
    i32::try_from((date - epoch).num_days()).expect("date within i32 days")
}

/// Days since 1970-01-01 of the CDNOW calibration end, 1997-09-30.
pub fn cdnow_calibration_end() -> i32 {
    epoch_day(NaiveDate::from_ymd_opt(1997, 9, 30).expect("valid date"))
}

/// The purchases of each of the 2,357 customers, indexed by sample id - 1;
/// dollars converted to cents.
pub fn load_cdnow() -> Vec<Vec<Purchase>> {
    let text = std::fs::read_to_string(cdnow_path()).expect("CDNOW sample readable");
    let mut customers: Vec<Vec<Purchase>> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 5, "line {line:?}");
        let sample_id: usize = fields[1].parse().expect("sample id");
        let date = NaiveDate::parse_from_str(fields[2], "%Y%m%d").expect("date");
        let amount_minor = dollars_to_cents(fields[4]);
        if customers.len() < sample_id {
            customers.resize_with(sample_id, Vec::new);
        }
        customers[sample_id - 1].push(Purchase {
            day: epoch_day(date),
            amount_minor,
        });
    }
    customers
}

/// "29.33" -> 2933, exactly (no float rounding).
fn dollars_to_cents(text: &str) -> i64 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let whole: i64 = whole.parse().expect("dollars");
    let mut cents: String = fraction.chars().take(2).collect();
    while cents.len() < 2 {
        cents.push('0');
    }
    whole * 100 + cents.parse::<i64>().expect("cents")
}
