//! Loading a programme straight into the analytics schema with COPY, as
//! the service's consumer would have kept it (untimed): `members`,
//! `purchases`, `purchase_lines`, `member_days` and `member_spend`
//! (`services/analytics/src/facts/{activities,spend}.rs`):
//!
//! - one purchase per order, in EUR (or the programme's currency), no
//!   refunds (refunded 0), channel and store empty, on its UTC day;
//! - `member_days`: one row per member and distinct day, its orders and
//!   spend summed; `member_spend`: first and last purchase (time and day),
//!   orders, distinct days, gross spend, the first day's spend;
//! - lines carry the order's member and day; quantity 1, the order's total
//!   split over them.
//!
//! The same purchases go to a CSV for DuckDB (`order_id, member_id, day,
//! total_minor, refunded_minor`) and, with small integer customer ids, one
//! for lifetimes (`member, day, amount_minor`, day as days since
//! 1970-01-01).
//!
//! Rows are formatted on one blocking thread while one task per table
//! streams them to its own COPY, so Postgres parses the five tables at
//! once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use chrono::NaiveDate;
use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::population::{self, Generator, Member, Order, Shapes};

/// Bytes formatted before a chunk goes to its COPY.
const CHUNK: usize = 1 << 20;

/// The tables a programme is loaded into, in COPY column order.
const TABLES: [(&str, &str); 5] = [
    ("members", "members (program_id, member_id, enrolled_at)"),
    (
        "purchases",
        "purchases (program_id, order_id, activity_id, member_id, guest, currency_code, \
         total_minor, refunded_minor, occurred_at, day, channel, store_id)",
    ),
    (
        "purchase_lines",
        "purchase_lines (program_id, order_id, line, member_id, day, sku, category, quantity, \
         unit_price_minor)",
    ),
    (
        "member_days",
        "member_days (program_id, member_id, currency_code, day, orders, spend_minor)",
    ),
    (
        "member_spend",
        "member_spend (program_id, member_id, currency_code, first_purchase_at, \
         last_purchase_at, first_day, last_day, orders, purchase_days, gross_minor, \
         refunded_minor, refunds, first_day_spend_minor)",
    ),
];

/// A table's COPY under way: the rows it stored when it ends.
type Copying = (&'static str, JoinHandle<Result<u64>>);

/// What the generator sends a COPY.
enum Feed {
    Rows(Vec<u8>),
    /// Every row was sent: commit. A feed dropped without it aborts.
    End,
}

/// One table's COPY, fed chunk by chunk from a blocking thread.
struct CopySink {
    table: &'static str,
    buf: Vec<u8>,
    tx: mpsc::Sender<Feed>,
}

impl CopySink {
    async fn open(pool: &PgPool, table: &'static str, target: &str) -> Result<(Self, Copying)> {
        let statement = format!("COPY {target} FROM STDIN");
        let mut copy = pool
            .copy_in_raw(&statement)
            .await
            .with_context(|| format!("COPY into {table}"))?;
        let (tx, mut rx) = mpsc::channel::<Feed>(4);
        let task = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Some(Feed::Rows(chunk)) => {
                        copy.send(chunk).await?;
                    }
                    Some(Feed::End) => return Ok(copy.finish().await?),
                    None => {
                        copy.abort("the generator stopped").await?;
                        bail!("the generator stopped");
                    }
                }
            }
        });
        let sink = Self {
            table,
            buf: Vec::with_capacity(CHUNK + 4096),
            tx,
        };
        Ok((sink, (table, task)))
    }

    /// Sends the buffer when it is full (from a blocking thread only).
    fn row_done(&mut self) -> Result<()> {
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
        self.send(Feed::Rows(chunk))
    }

    fn send(&self, feed: Feed) -> Result<()> {
        self.tx
            .blocking_send(feed)
            .map_err(|_| anyhow!("the COPY into {} stopped", self.table))
    }

    /// Sends the rest and commits.
    fn close(mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.flush()?;
        }
        self.send(Feed::End)
    }
}

/// Every table's sink.
struct Sinks {
    members: CopySink,
    purchases: CopySink,
    lines: CopySink,
    days: CopySink,
    spend: CopySink,
}

impl Sinks {
    async fn open(pool: &PgPool) -> Result<(Self, Vec<Copying>)> {
        let [m, p, l, d, s] = TABLES;
        let mut copying = Vec::new();
        let mut open = async |(table, target): (&'static str, &str)| -> Result<CopySink> {
            let (sink, task) = CopySink::open(pool, table, target).await?;
            copying.push(task);
            Ok(sink)
        };
        let sinks = Self {
            members: open(m).await?,
            purchases: open(p).await?,
            lines: open(l).await?,
            days: open(d).await?,
            spend: open(s).await?,
        };
        Ok((sinks, copying))
    }

    fn close(self) -> Result<()> {
        self.members.close()?;
        self.purchases.close()?;
        self.lines.close()?;
        self.days.close()?;
        self.spend.close()
    }
}

/// Waits for every COPY: the rows each stored, or the first failure.
async fn finish(tasks: Vec<Copying>) -> Result<Vec<(&'static str, u64)>> {
    let mut out = Vec::new();
    let mut failed = None;
    for (table, task) in tasks {
        let rows = task
            .await
            .with_context(|| format!("COPY into {table}"))
            .and_then(|r| r.with_context(|| format!("COPY into {table}")));
        match rows {
            Ok(rows) => out.push((table, rows)),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The generator's outcome and the COPYs', the COPY's failure first (a
/// generator that stopped because its COPY did has nothing more to say).
async fn settle<T>(
    generated: Result<T>,
    copying: Vec<Copying>,
) -> Result<(T, Vec<(&'static str, u64)>)> {
    let stored = finish(copying).await;
    match (generated, stored) {
        (Ok(g), Ok(s)) => Ok((g, s)),
        (Ok(_), Err(e)) | (Err(_), Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
    }
}

/// Dates of a span of days as Postgres and CSV text, by offset.
struct DayNames {
    base: NaiveDate,
    names: Vec<String>,
}

impl DayNames {
    fn new(base: NaiveDate, days: i32) -> Self {
        let names = (0..days)
            .map(|d| (base + chrono::Duration::days(i64::from(d))).to_string())
            .collect();
        Self { base, names }
    }

    fn name(&self, offset: i32) -> Result<&str> {
        usize::try_from(offset)
            .ok()
            .and_then(|i| self.names.get(i))
            .map(String::as_str)
            .with_context(|| format!("day {offset} outside the span from {}", self.base))
    }

    /// Days since 1970-01-01.
    fn epoch_day(&self, offset: i32) -> i64 {
        (self.base - NaiveDate::default()).num_days() + i64::from(offset)
    }
}

/// "hh:mm:ss" of a second of the day.
fn clock(second: u32) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        second / 3600,
        second / 60 % 60,
        second % 60
    )
}

/// The CSV files for DuckDB and lifetimes.
#[derive(Debug, Clone)]
pub struct Files {
    pub purchases_csv: PathBuf,
    pub transactions_csv: PathBuf,
}

impl Files {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            purchases_csv: dir.join("purchases.csv"),
            transactions_csv: dir.join("transactions.csv"),
        }
    }
}

/// Writers of the two CSV files.
struct CsvOut {
    purchases: BufWriter<File>,
    transactions: BufWriter<File>,
}

impl CsvOut {
    fn create(files: &Files) -> Result<Self> {
        let open = |p: &Path| -> Result<BufWriter<File>> {
            Ok(BufWriter::with_capacity(
                1 << 20,
                File::create(p).with_context(|| format!("create {}", p.display()))?,
            ))
        };
        let mut out = Self {
            purchases: open(&files.purchases_csv)?,
            transactions: open(&files.transactions_csv)?,
        };
        writeln!(
            out.purchases,
            "order_id,member_id,day,total_minor,refunded_minor"
        )?;
        writeln!(out.transactions, "member,day,amount_minor")?;
        Ok(out)
    }

    fn finish(mut self) -> Result<()> {
        self.purchases.flush()?;
        self.transactions.flush()?;
        Ok(())
    }
}

/// The rows of one member into every sink (and the CSV files).
struct Writer<'a> {
    program: &'a str,
    currency: &'a str,
    days: &'a DayNames,
    next_order: u64,
    order_prefix: char,
}

impl Writer<'_> {
    fn timestamp(&self, o: &Order) -> Result<String> {
        Ok(format!("{} {}+00", self.days.name(o.day)?, clock(o.second)))
    }

    fn member(&mut self, m: &Member, sinks: &mut Sinks, csv: Option<&mut CsvOut>) -> Result<()> {
        let (Some(first), Some(last)) = (m.orders.first(), m.orders.last()) else {
            bail!("member {} has no purchase", m.ordinal);
        };
        let (program, currency, id) = (self.program, self.currency, m.id);
        let first_at = self.timestamp(first)?;
        writeln!(sinks.members.buf, "{program}\t{id}\t{first_at}")?;
        sinks.members.row_done()?;

        let mut order_ids = Vec::with_capacity(m.orders.len());
        let mut csv = csv;
        for o in &m.orders {
            let order_id = format!("{}{:010}", self.order_prefix, self.next_order);
            let activity = Uuid::from_u64_pair(0x6c61_7572_656c_0001, self.next_order);
            self.next_order += 1;
            let day = self.days.name(o.day)?;
            writeln!(
                sinks.purchases.buf,
                "{program}\t{order_id}\t{activity}\t{id}\tf\t{currency}\t{}\t0\t{day} {}+00\t{day}\t\t",
                o.total_minor,
                clock(o.second),
            )?;
            sinks.purchases.row_done()?;
            if let Some(csv) = csv.as_deref_mut() {
                writeln!(csv.purchases, "{order_id},{id},{day},{},0", o.total_minor)?;
                writeln!(
                    csv.transactions,
                    "{},{},{}",
                    m.ordinal,
                    self.days.epoch_day(o.day),
                    o.total_minor
                )?;
            }
            order_ids.push((order_id, day));
        }
        for l in &m.lines {
            let (order_id, day) = order_ids
                .get(l.order as usize)
                .context("a line of an order the member does not have")?;
            writeln!(
                sinks.lines.buf,
                "{program}\t{order_id}\t{}\t{id}\t{day}\t{}\t{}\t1\t{}",
                l.line,
                population::sku_name(l.sku),
                population::category_name(l.sku),
                l.unit_price_minor,
            )?;
            sinks.lines.row_done()?;
        }
        let days = m.days();
        for (day, orders, spend) in &days {
            writeln!(
                sinks.days.buf,
                "{program}\t{id}\t{currency}\t{}\t{orders}\t{spend}",
                self.days.name(*day)?
            )?;
            sinks.days.row_done()?;
        }
        let gross: i64 = m.orders.iter().map(|o| o.total_minor).sum();
        // The first purchase day's spend (days are in order, the first is
        // the first order's).
        let first_day_spend = days.first().map_or(0, |d| d.2);
        writeln!(
            sinks.spend.buf,
            "{program}\t{id}\t{currency}\t{first_at}\t{}\t{}\t{}\t{}\t{}\t{gross}\t0\t0\t{first_day_spend}",
            self.timestamp(last)?,
            self.days.name(first.day)?,
            self.days.name(last.day)?,
            m.orders.len(),
            days.len(),
        )?;
        sinks.spend.row_done()?;
        Ok(())
    }
}

/// What was loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub members: u64,
    pub orders: u64,
    pub lines: u64,
    pub member_days: u64,
    /// The last purchase day of anyone.
    pub last_day: NaiveDate,
    /// A member with at least three orders with lines (recommendations).
    pub sample_member: Option<Uuid>,
    /// Members with lines, the first [`SAMPLED_MEMBERS`] generated.
    pub sample_members: Vec<Uuid>,
    pub load_seconds: f64,
    pub vacuum_seconds: f64,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub program: String,
    pub members: u64,
    pub seed: u64,
    pub shapes: Shapes,
    pub line_share: f64,
}

/// Generates the programme of `plan` into the schema (and `files`), then
/// VACUUM ANALYZE: a live service's tables would have been vacuumed and
/// analysed by autovacuum long before a run.
pub async fn programme(pool: &PgPool, plan: &Plan, files: Option<&Files>) -> Result<Loaded> {
    let started = Instant::now();
    let (sinks, copying) = Sinks::open(pool).await?;
    let csv = files.map(CsvOut::create).transpose()?;
    let plan2 = plan.clone();
    let generated = tokio::task::spawn_blocking(move || generate(plan2, sinks, csv))
        .await
        .context("the generator thread")
        .and_then(|g| g);
    let (counts, stored) = settle(generated, copying).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    let rows = |table: &str| stored.iter().find(|s| s.0 == table).map_or(0, |s| s.1);
    if rows("purchases") != counts.orders || rows("members") != plan.members {
        bail!(
            "COPY stored {stored:?}, generated {} purchases of {} members",
            counts.orders,
            plan.members
        );
    }
    let started = Instant::now();
    vacuum(pool).await?;
    Ok(Loaded {
        members: rows("members"),
        orders: rows("purchases"),
        lines: rows("purchase_lines"),
        member_days: rows("member_days"),
        last_day: population::FIRST_DAY + chrono::Duration::days(i64::from(counts.last_day)),
        sample_member: counts.sample_member,
        sample_members: counts.sample_members,
        load_seconds,
        vacuum_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Members kept for the recommendations of many members.
pub const SAMPLED_MEMBERS: usize = 1_000_000;

#[derive(Debug)]
struct Counts {
    orders: u64,
    last_day: i32,
    sample_member: Option<Uuid>,
    sample_members: Vec<Uuid>,
}

/// Writes every member (on a blocking thread: the sinks block when their
/// COPY falls behind) and commits the COPYs.
fn generate(plan: Plan, mut sinks: Sinks, mut csv: Option<CsvOut>) -> Result<Counts> {
    let mut generator = Generator::new(plan.seed, plan.shapes, plan.line_share)?;
    let names = DayNames::new(population::FIRST_DAY, population::PERIOD_DAYS);
    let mut writer = Writer {
        program: &plan.program,
        currency: "EUR",
        days: &names,
        next_order: 0,
        order_prefix: 'B',
    };
    let mut counts = Counts {
        orders: 0,
        last_day: 0,
        sample_member: None,
        sample_members: Vec::new(),
    };
    for _ in 0..plan.members {
        let m = generator.member();
        writer.member(&m, &mut sinks, csv.as_mut())?;
        counts.orders += m.orders.len() as u64;
        if let Some(last) = m.orders.last() {
            counts.last_day = counts.last_day.max(last.day);
        }
        if !m.lines.is_empty() && counts.sample_members.len() < SAMPLED_MEMBERS {
            counts.sample_members.push(m.id);
        }
        if counts.sample_member.is_none()
            && m.orders.len() >= 3
            && m.lines
                .iter()
                .map(|l| l.order)
                .collect::<std::collections::HashSet<_>>()
                .len()
                >= 3
        {
            counts.sample_member = Some(m.id);
        }
    }
    if let Some(csv) = csv {
        csv.finish()?;
    }
    sinks.close()?;
    Ok(counts)
}

async fn vacuum(pool: &PgPool) -> Result<()> {
    for (table, _) in TABLES {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(pool)
            .await
            .with_context(|| format!("VACUUM ANALYZE {table}"))?;
    }
    Ok(())
}

/// CDNOW's calibration end: 1997-09-30.
pub const CDNOW_CALIBRATION_END: NaiveDate = match NaiveDate::from_ymd_opt(1997, 9, 30) {
    Some(day) => day,
    None => panic!("a valid date"),
};
const CDNOW_FIRST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(1997, 1, 1) {
    Some(day) => day,
    None => panic!("a valid date"),
};
/// CDNOW's purchases run to the end of June 1998.
const CDNOW_DAYS: i32 = 546;

/// CDNOW_sample.txt's customers: columns master id, sample id, date
/// (YYYYMMDD), CDs, dollars; several purchases of a customer can fall on
/// one day. Each becomes a member (ordinal: the sample id) with one order
/// per line, at noon, in cents.
pub fn parse_cdnow(text: &str) -> Result<Vec<Member>> {
    let mut by_customer: std::collections::BTreeMap<u64, Vec<Order>> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            continue;
        }
        let [_, customer, date, _, dollars] = cols[..] else {
            bail!("CDNOW line {}: {} columns, not 5", n + 1, cols.len());
        };
        let customer: u64 = customer
            .parse()
            .with_context(|| format!("CDNOW line {}", n + 1))?;
        let date = NaiveDate::parse_from_str(date, "%Y%m%d")
            .with_context(|| format!("CDNOW line {}: date {date}", n + 1))?;
        let cents = parse_cents(dollars).with_context(|| format!("CDNOW line {}", n + 1))?;
        let day = i32::try_from((date - CDNOW_FIRST_DAY).num_days())?;
        if !(0..CDNOW_DAYS).contains(&day) {
            bail!(
                "CDNOW line {}: {date} outside 1997-01-01..1998-06-30",
                n + 1
            );
        }
        by_customer.entry(customer).or_default().push(Order {
            day,
            second: 12 * 3600,
            total_minor: cents,
        });
    }
    Ok(by_customer
        .into_iter()
        .map(|(customer, mut orders)| {
            orders.sort_by_key(|o| o.day);
            Member {
                ordinal: customer,
                id: Uuid::from_u64_pair(0xcd_0000, customer),
                orders,
                lines: Vec::new(),
            }
        })
        .collect())
}

/// "29.33" as 2933 cents, exactly (no float rounding).
fn parse_cents(dollars: &str) -> Result<i64> {
    let (whole, frac) = dollars.split_once('.').unwrap_or((dollars, ""));
    if frac.len() > 2 {
        bail!("{dollars}: more than cents");
    }
    let whole: i64 = whole
        .parse()
        .with_context(|| format!("dollars {dollars}"))?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}")
            .parse()
            .with_context(|| format!("cents {dollars}"))?
    };
    whole
        .checked_mul(100)
        .and_then(|c| c.checked_add(frac))
        .with_context(|| format!("{dollars} overflows"))
}

/// Loads CDNOW's customers into `program` in USD; returns the members.
pub async fn cdnow(pool: &PgPool, program: &str, path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let members = parse_cdnow(&text)?;
    let count = members.len();
    let (sinks, copying) = Sinks::open(pool).await?;
    let program = program.to_owned();
    let written = tokio::task::spawn_blocking(move || -> Result<()> {
        let names = DayNames::new(CDNOW_FIRST_DAY, CDNOW_DAYS);
        let mut sinks = sinks;
        let mut writer = Writer {
            program: &program,
            currency: "USD",
            days: &names,
            next_order: 0,
            order_prefix: 'C',
        };
        for m in &members {
            writer.member(m, &mut sinks, None)?;
        }
        sinks.close()
    })
    .await
    .context("the CDNOW thread")
    .and_then(|w| w);
    settle(written, copying).await?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_are_read_exactly() {
        assert_eq!(parse_cents("29.33").unwrap(), 2933);
        assert_eq!(parse_cents("14.9").unwrap(), 1490);
        assert_eq!(parse_cents("0").unwrap(), 0);
        assert!(parse_cents("1.234").is_err());
        assert!(parse_cents("x").is_err());
    }

    #[test]
    fn cdnow_lines_become_members_with_orders_by_day() {
        let text = " 00004 0001 19970101  2   29.33\n 00004 0001 19970118  2   29.73\n\
                    00004 0001 19970118  1   14.96\n 00021 0002 19970102  3   63.34\n";
        let members = parse_cdnow(text).unwrap();
        assert_eq!(members.len(), 2);
        let first = &members[0];
        assert_eq!(first.ordinal, 1);
        assert_eq!(first.orders.len(), 3);
        assert_eq!(first.days(), [(0, 1, 2933), (17, 2, 4469)]);
        assert_eq!(members[1].orders[0].day, 1);
        assert!(parse_cdnow("1 2 19970101 1\n").is_err());
        assert!(parse_cdnow("1 2 19960101 1 3.00\n").is_err());
    }

    #[test]
    fn the_whole_cdnow_sample_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../services/analytics/models/data/cdnow/CDNOW_sample.txt"
        );
        let members = parse_cdnow(&std::fs::read_to_string(path).unwrap()).unwrap();
        // The published sample: 2,357 customers, 6,919 purchases.
        assert_eq!(members.len(), 2_357);
        assert_eq!(members.iter().map(|m| m.orders.len()).sum::<usize>(), 6_919);
    }

    #[test]
    fn days_and_clock_format_as_postgres_reads_them() {
        let names = DayNames::new(NaiveDate::from_ymd_opt(2024, 7, 1).unwrap(), 3);
        assert_eq!(names.name(2).unwrap(), "2024-07-03");
        assert!(names.name(3).is_err());
        assert_eq!(names.epoch_day(0), 19_905);
        assert_eq!(clock(8 * 3600 + 61), "08:01:01");
    }
}
