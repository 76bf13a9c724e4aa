//! The benefits catalogue, what members are entitled to with their quotas,
//! consumption and usage figures.

mod api;

use sqlx::PgConnection;

/// Which of `codes` the programme's catalogue does not hold, in order.
pub async fn unknown_codes(
    tx: &mut PgConnection,
    program: &str,
    codes: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let _ = (tx, program);
    Ok(codes.to_vec())
}
