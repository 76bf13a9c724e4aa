//! Timing of RFM scoring, the neighbour build and member serving on a
//! synthetic programme: 1,000,000 members, 10,000,000 order lines, 10,000
//! items.
//!
//! Run with `cargo run --release -p laurel-analytics-models --example
//! rfm_recommend_timing`. The data comes from a seeded LCG (no rand
//! dependency), so every run sees the same lines: members buy mostly
//! within one of 100 taste clusters of 100 items, otherwise a globally
//! popular item (skewed towards low indexes), on days spread over two
//! years, in random member order.

use std::time::{Duration, Instant};

use laurel_analytics_models::recommend::{
    CoPurchaseConfig, CoPurchaseModel, MemberPurchase, OrderLine, ServeConfig, evaluate_hit_rate,
};
use laurel_analytics_models::rfm::{RfmConfig, RfmInput, score_rfm};

const MEMBERS: u64 = 1_000_000;
const LINES: usize = 10_000_000;
const ITEMS: u32 = 10_000;
const CLUSTERS: u32 = 100;
const FIRST_DAY: i32 = 19_000;
const DAYS: u64 = 730;
const AS_OF: i32 = FIRST_DAY + DAYS as i32;

/// Knuth's MMIX LCG; the high bits are the usable ones.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 32
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A member ordinal spread over the u128 range like a UUID would be.
fn member_id(ordinal: u64) -> u128 {
    u128::from(ordinal).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) | 1
}

struct Line {
    member: u64,
    day: i32,
    item: u32,
    price_minor: i64,
}

fn generate() -> Vec<Line> {
    let mut lcg = Lcg(42);
    let cluster_size = ITEMS / CLUSTERS;
    (0..LINES)
        .map(|_| {
            let member = lcg.below(MEMBERS);
            let item = if lcg.below(10) < 7 {
                // The member's taste cluster (a fixed function of the member).
                let cluster = (member.wrapping_mul(2_654_435_761) % u64::from(CLUSTERS)) as u32;
                cluster * cluster_size + lcg.below(u64::from(cluster_size)) as u32
            } else {
                // Skewed popularity: the square of a uniform favours low indexes.
                let u = lcg.below(1 << 16);
                ((u * u * u64::from(ITEMS)) >> 32) as u32
            };
            Line {
                member,
                day: FIRST_DAY + lcg.below(DAYS) as i32,
                item,
                price_minor: 500 + lcg.below(10_000) as i64,
            }
        })
        .collect()
}

/// CPU seconds of this process so far (user + system, all threads), from
/// /proc on Linux: on a shared machine wall time alone overstates the cost.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; 100 per second on Linux (USER_HZ).
    Some((user + system) / 100.0)
}

/// Wall time and CPU time of a closure.
fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration, String) {
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let result = work();
    let wall = started.elapsed();
    let cpu = match (cpu_before, cpu_seconds()) {
        (Some(before), Some(after)) => format!("{:.2} s CPU", after - before),
        _ => "CPU n/a".to_string(),
    };
    (result, wall, cpu)
}

fn per_member(duration: Duration, members: usize) -> f64 {
    duration.as_secs_f64() * 1e6 / members as f64
}

fn main() {
    let started = Instant::now();
    let lines = generate();
    println!(
        "generated {} lines over {MEMBERS} members and {ITEMS} items in {:.2?}",
        lines.len(),
        started.elapsed()
    );

    // RFM: one pass of aggregation into dense arrays (what the analytics
    // service keeps per member), then the scoring proper.
    let started = Instant::now();
    let mut last_day = vec![i32::MIN; MEMBERS as usize];
    let mut orders = vec![0u32; MEMBERS as usize];
    let mut spend = vec![0i64; MEMBERS as usize];
    for line in &lines {
        let m = line.member as usize;
        last_day[m] = last_day[m].max(line.day);
        orders[m] += 1;
        spend[m] += line.price_minor;
    }
    let population: Vec<RfmInput> = (0..MEMBERS)
        .filter(|&m| orders[m as usize] > 0)
        .map(|m| RfmInput {
            member_id: member_id(m),
            last_purchase_day: last_day[m as usize],
            frequency: orders[m as usize],
            monetary_minor: spend[m as usize],
        })
        .collect();
    let aggregated = started.elapsed();
    let (table, scored, scored_cpu) =
        timed(|| score_rfm(&population, &RfmConfig::default()).expect("rfm"));
    println!(
        "rfm: aggregate {} lines into {} members {:.2?}, score and segment {:.2?} ({scored_cpu})",
        lines.len(),
        population.len(),
        aggregated,
        scored
    );
    for (segment, count) in table.segment_counts().iter() {
        println!("  {:<20} {count}", segment.name());
    }

    let order_lines: Vec<OrderLine> = lines
        .iter()
        .map(|line| OrderLine {
            member_id: member_id(line.member),
            day: line.day,
            item: line.item,
        })
        .collect();
    drop(lines);
    let config = CoPurchaseConfig::default();
    for threads in [1, 0] {
        let config = CoPurchaseConfig { threads, ..config };
        let (_, built, built_cpu) =
            timed(|| CoPurchaseModel::build(&order_lines, ITEMS, &config).expect("build"));
        println!(
            "neighbours: built from {} lines in {built:.2?} ({built_cpu}), threads = {}",
            order_lines.len(),
            if threads == 0 {
                "all cores".to_string()
            } else {
                threads.to_string()
            },
        );
    }
    let model = CoPurchaseModel::build(&order_lines, ITEMS, &config).expect("build");
    let with_neighbours = (0..ITEMS)
        .filter(|&item| !model.neighbours(item).is_empty())
        .count();
    println!(
        "  {with_neighbours} items with neighbours, K = {}, support >= {}, M = {}",
        config.neighbours_per_item, config.min_support, config.max_items_per_member
    );

    // Serving: the purchases of 10,000 members, grouped beforehand as the
    // service would load them.
    let sample: Vec<u64> = (0..10_000u64).map(|i| i * (MEMBERS / 10_000)).collect();
    let mut histories: Vec<Vec<MemberPurchase>> = vec![Vec::new(); sample.len()];
    let wanted: std::collections::HashMap<u128, usize> = sample
        .iter()
        .enumerate()
        .map(|(index, &m)| (member_id(m), index))
        .collect();
    for line in &order_lines {
        if let Some(&index) = wanted.get(&line.member_id) {
            histories[index].push(MemberPurchase {
                day: line.day,
                item: line.item,
            });
        }
    }
    let serve = ServeConfig::default();
    let (served, serving, serving_cpu) = timed(|| {
        histories
            .iter()
            .map(|history| {
                model
                    .recommend(history, AS_OF, &serve)
                    .expect("serve")
                    .len()
            })
            .sum::<usize>()
    });
    let mean_items = histories.iter().map(Vec::len).sum::<usize>() as f64 / histories.len() as f64;
    println!(
        "serving: {} members ({mean_items:.1} purchases each) in {:.2?} ({serving_cpu}), {:.1} us per member, {served} recommendations",
        histories.len(),
        serving,
        per_member(serving, histories.len())
    );

    let (rates, evaluated, evaluated_cpu) =
        timed(|| evaluate_hit_rate(&order_lines, ITEMS, &config, &serve).expect("evaluate"));
    println!(
        "hit rate at {} on the held-out last day of {} members: model {:.4}, most popular {:.4} ({evaluated:.2?}, {evaluated_cpu})",
        serve.top_n,
        rates.members_evaluated,
        rates.model_hit_rate(),
        rates.popular_hit_rate(),
    );
}
