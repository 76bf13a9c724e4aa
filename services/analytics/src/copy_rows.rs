//! Reading a query's rows with a binary `COPY ... TO STDOUT`, decoded here
//! as they arrive: no `PgRow` per row, which on a million members is most
//! of a read's time. Only fixed-width, non-NULL columns (uuid, date,
//! bigint...), so every row has the same length.
//!
//! The format is PostgreSQL's documented one: a signature and header, then
//! per row a 16-bit field count and each field as a 32-bit length and its
//! bytes, big-endian; a count of -1 ends it.

use futures::TryStreamExt;
use sqlx::PgConnection;

use crate::error::AnalyticsError;

/// The COPY signature.
pub(crate) const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// 2000-01-01, where Postgres counts binary dates from, in days since
/// 1970-01-01.
pub(crate) const PG_EPOCH_DAY: i32 = 10_957;

/// Runs `statement` (a `COPY (SELECT ...) TO STDOUT (FORMAT binary)` whose
/// rows have `fields` columns and `row_len` bytes each, field count
/// included) and hands each row's fields to `each`, in order.
pub(crate) async fn copy_out(
    conn: &mut PgConnection,
    statement: &str,
    fields: i16,
    row_len: usize,
    mut each: impl FnMut(&mut Fields<'_>) -> Result<(), AnalyticsError>,
) -> Result<(), AnalyticsError> {
    let mut rows = CopyRows::new(fields, row_len);
    let mut stream = conn.copy_out_raw(statement).await?;
    while let Some(chunk) = stream.try_next().await? {
        rows.feed(&chunk, &mut each)?;
    }
    drop(stream);
    rows.finish()
}

/// The state of a binary COPY being decoded, in chunks that need not end
/// on a row.
pub(crate) struct CopyRows {
    fields: i16,
    row_len: usize,
    /// Bytes of a row split across chunks.
    pending: Vec<u8>,
    header: bool,
    ended: bool,
}

impl CopyRows {
    pub(crate) fn new(fields: i16, row_len: usize) -> Self {
        Self {
            fields,
            row_len,
            pending: Vec::new(),
            header: false,
            ended: false,
        }
    }

    /// Decodes the whole rows `chunk` completes, keeping the rest.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        each: &mut impl FnMut(&mut Fields<'_>) -> Result<(), AnalyticsError>,
    ) -> Result<(), AnalyticsError> {
        if self.pending.is_empty() {
            let used = self.decode(chunk, each)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(chunk);
            let used = self.decode(&pending, each)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// Decodes the whole rows at the start of `data`; returns the bytes used.
    fn decode(
        &mut self,
        data: &[u8],
        each: &mut impl FnMut(&mut Fields<'_>) -> Result<(), AnalyticsError>,
    ) -> Result<usize, AnalyticsError> {
        let mut at = 0;
        if !self.header {
            // Signature, flags (32 bits), header extension length and the
            // extension.
            if data.len() < 19 {
                return Ok(0);
            }
            if &data[..11] != COPY_SIGNATURE {
                return Err(copy_error("not a binary COPY"));
            }
            let extension = be_u32(&data[15..19]) as usize;
            if data.len() < 19 + extension {
                return Ok(0);
            }
            at = 19 + extension;
            self.header = true;
        }
        while data.len() - at >= 2 && !self.ended {
            let count = i16::from_be_bytes([data[at], data[at + 1]]);
            if count == -1 {
                self.ended = true;
                at += 2;
                break;
            }
            if count != self.fields {
                return Err(copy_error("unexpected field count"));
            }
            let Some(row) = data.get(at..at + self.row_len) else {
                break;
            };
            each(&mut Fields { row, at: 2 })?;
            at += self.row_len;
        }
        Ok(at)
    }

    /// Checks that the COPY ended where it should.
    pub(crate) fn finish(self) -> Result<(), AnalyticsError> {
        if !self.ended || !self.pending.is_empty() {
            return Err(copy_error("the COPY ended early"));
        }
        Ok(())
    }
}

/// The fields of one binary COPY row, in order.
pub(crate) struct Fields<'a> {
    row: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    /// The next field, which must be `N` bytes (not NULL).
    pub(crate) fn next<const N: usize>(&mut self) -> Result<[u8; N], AnalyticsError> {
        let length = self
            .row
            .get(self.at..self.at + 4)
            .map(be_u32)
            .ok_or_else(|| copy_error("a row ended early"))?;
        if length as usize != N {
            return Err(copy_error("unexpected field length"));
        }
        let value = self
            .row
            .get(self.at + 4..self.at + 4 + N)
            .and_then(|v| <[u8; N]>::try_from(v).ok())
            .ok_or_else(|| copy_error("a row ended early"))?;
        self.at += 4 + N;
        Ok(value)
    }

    /// The next field as a date, in days since 1970-01-01.
    pub(crate) fn day(&mut self) -> Result<i32, AnalyticsError> {
        Ok(i32::from_be_bytes(self.next()?) + PG_EPOCH_DAY)
    }

    /// The next field as an integer.
    pub(crate) fn int4(&mut self) -> Result<i32, AnalyticsError> {
        Ok(i32::from_be_bytes(self.next()?))
    }

    /// The next field as a bigint.
    pub(crate) fn int8(&mut self) -> Result<i64, AnalyticsError> {
        Ok(i64::from_be_bytes(self.next()?))
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn copy_error(what: &str) -> AnalyticsError {
    AnalyticsError::Internal(anyhow::anyhow!("reading a binary COPY: {what}"))
}

/// A string as an SQL literal (COPY takes no parameters): an escape string
/// (E'...'), whose meaning does not depend on `standard_conforming_strings`.
pub(crate) fn sql_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A day (days since 1970-01-01) as an SQL date expression.
pub(crate) fn sql_day(day: i32) -> String {
    format!("(DATE '1970-01-01' + ({day}))")
}

#[cfg(test)]
mod tests {
    use super::sql_literal;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(sql_literal("default"), "E'default'");
        assert_eq!(sql_literal("o'brien\\x"), "E'o''brien\\\\x'");
    }
}
