//! CSV text as RFC 4180 writes it: fields separated by commas, records
//! ended by CRLF, a field quoted when it holds a comma, a double quote, CR
//! or LF, with its double quotes doubled. Hand-written because these three
//! rules are all the reports need, where the `csv` crate would bring its
//! own buffering between us and the chunks we size.

use std::fmt::{Display, Write as _};

/// A growing CSV buffer, drained chunk by chunk.
#[derive(Debug, Default)]
pub struct Csv {
    text: String,
    /// Whether the current record has a field already.
    open: bool,
}

impl Csv {
    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            text: String::with_capacity(capacity),
            open: false,
        }
    }

    fn separate(&mut self) {
        if self.open {
            self.text.push(',');
        }
        self.open = true;
    }

    /// Adds a text field, quoted when it must be.
    pub fn text(&mut self, field: &str) -> &mut Self {
        self.separate();
        if field.contains([',', '"', '\r', '\n']) {
            self.text.push('"');
            self.text.push_str(&field.replace('"', "\"\""));
            self.text.push('"');
        } else {
            self.text.push_str(field);
        }
        self
    }

    /// Adds a field whose text never needs quotes (numbers, ids, times).
    pub fn plain(&mut self, field: impl Display) -> &mut Self {
        self.separate();
        // Writing into a String cannot fail.
        let _ = write!(self.text, "{field}");
        self
    }

    /// Adds an optional plain field, empty when absent.
    pub fn optional(&mut self, field: Option<impl Display>) -> &mut Self {
        match field {
            Some(f) => self.plain(f),
            None => self.text(""),
        }
    }

    /// Ends the record.
    pub fn end(&mut self) {
        self.text.push_str("\r\n");
        self.open = false;
    }

    /// Adds a whole record of text fields.
    pub fn record(&mut self, fields: &[&str]) {
        for f in fields {
            self.text(f);
        }
        self.end();
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Takes what waits (whole records only, when called between records).
    pub fn take(&mut self) -> Vec<u8> {
        let capacity = self.text.capacity();
        std::mem::replace(&mut self.text, String::with_capacity(capacity)).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        let mut csv = Csv::default();
        csv.record(&["a", "b,c", "say \"hi\"", "two\nlines", ""]);
        csv.plain(42).optional(None::<i64>).optional(Some(1.5));
        csv.end();
        assert_eq!(
            String::from_utf8(csv.take()).unwrap(),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n42,,1.5\r\n"
        );
        assert!(csv.is_empty());
    }
}
