//! The comparison table: each figure ours beside theirs, the ratio in the
//! direction the target is stated (how many times faster, or what share
//! of echo's rate), the target and whether it is met.

use std::fmt::Write as _;

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub figure: String,
    pub ours: String,
    pub theirs: String,
    /// Better-is-higher ratio (theirs' time / ours, or our rate / echo's).
    pub ratio: Option<f64>,
    /// The least ratio the issue asks for; `None` for a figure shown for context.
    pub target: Option<f64>,
}

impl Row {
    /// "yes", "NO", or "-" without a target or a ratio.
    pub fn met(&self) -> &'static str {
        match (self.ratio, self.target) {
            (Some(r), Some(t)) if r >= t => "yes",
            (Some(_), Some(_)) => "NO",
            _ => "-",
        }
    }
}

/// Seconds, with the precision a reader needs.
pub fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// KiB as MiB.
pub fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// The table, aligned.
pub fn table(rows: &[Row]) -> String {
    let header = ["figure", "ours", "theirs", "ratio", "target", "met?"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.clone(),
                r.ours.clone(),
                r.theirs.clone(),
                r.ratio.map_or("-".into(), |x| format!("{x:.2}x")),
                r.target.map_or("-".into(), |t| format!(">= {t}x")),
                r.met().into(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        let padded: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, &header.map(String::from));
    line(&mut out, &widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(&mut out, row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ratio: Option<f64>, target: Option<f64>) -> Row {
        Row {
            figure: "RFM".into(),
            ours: "1.00 s".into(),
            theirs: "3.00 s".into(),
            ratio,
            target,
        }
    }

    #[test]
    fn a_target_is_met_at_or_above_it() {
        assert_eq!(row(Some(3.0), Some(2.0)).met(), "yes");
        assert_eq!(row(Some(2.0), Some(2.0)).met(), "yes");
        assert_eq!(row(Some(1.9), Some(2.0)).met(), "NO");
        assert_eq!(row(Some(1.9), None).met(), "-");
        assert_eq!(row(None, Some(2.0)).met(), "-");
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let t = table(&[row(Some(3.0), Some(2.0)), row(None, None)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("figure  ours    theirs  ratio  target  met?"),
            "{t}"
        );
        assert!(lines[2].contains("3.00x  >= 2x   yes"), "{t}");
        assert!(lines[3].ends_with("-"), "{t}");
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(seconds(0.0123), "12.3 ms");
        assert_eq!(seconds(12.345), "12.35 s");
        assert_eq!(mib(2048), "2 MiB");
    }
}
