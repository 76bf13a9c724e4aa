//! laurel-bench: drives Laurel gRPC paths under load and reports each beside
//! EchoService, which goes through the same server stack but does no work.
//! Optionally also with h2load (server-bound), beside a bare tonic echo, with
//! the server's memory and the staleness of a second replica.
//!
//! Run `laurel-bench --help` for the flags.

mod args;
mod h2load;
mod memory;
mod paths;
mod report;
mod run;
mod scrape;
mod seed;
mod server_bound;
mod staleness;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tonic::transport::{Channel, Endpoint};

use crate::args::{Args, Parsed};
use crate::paths::{CallMeta, Clients, ECHO_PAYLOAD, PathKind};
use crate::run::{Load, Mode, PathResult};

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("laurel-bench: {e:#}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match bench(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laurel-bench: setup failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Connects, seeds, runs every path (h2load first when asked, then the tonic
/// client), measures memory meanwhile and staleness afterwards. Only setup
/// problems are errors; failed calls during the runs are counted instead.
async fn bench(args: &Args) -> Result<()> {
    let meta = CallMeta::new(&args.program, args.api_key.as_deref())?;
    let channels = connect(&args.addr, args).await?;
    let bare_channels = match &args.bare_addr {
        Some(addr) => Some(connect(addr, args).await?),
        None => None,
    };
    let clients: Vec<Clients> = channels
        .into_iter()
        .enumerate()
        .map(|(i, ch)| {
            let c = Clients::new(ch, meta.clone());
            match &bare_channels {
                Some(bare) => c.with_bare(bare[i].clone()),
                None => c,
            }
        })
        .collect();
    probe(&clients).await?;
    let replica = match &args.replica_addr {
        Some(addr) => {
            let ch = connect(
                addr,
                &Args {
                    connections: 1,
                    ..args.clone()
                },
            )
            .await?;
            let c = Clients::new(ch[0].clone(), meta.clone());
            probe(std::slice::from_ref(&c)).await.context("replica")?;
            Some(c)
        }
        None => None,
    };

    let member_paths = args.paths.iter().any(|p| p.needs_members());
    let h2load_members = args.h2load.is_some() && args.paths.iter().any(|p| h2load_kind(*p));
    let members = if member_paths || h2load_members || replica.is_some() {
        eprintln!("seeding {} members ...", args.members);
        let m = seed::seed(&clients, args.members).await?;
        eprintln!(
            "seeded {} members and warmed them with GetMember (one is {})",
            m.len(),
            m.first().map_or("-", |m| m.member_id.as_str())
        );
        m
    } else {
        Vec::new()
    };
    let members = Arc::new(members);

    let sampler = server_pid(args).and_then(|pid| {
        memory::Sampler::start(pid, Duration::from_millis(100)).map_err(|e| format!("{e:#}"))
    });

    let mut h2_rows = Vec::new();
    if let Some(shape) = &args.h2load {
        let mut kinds = Vec::new();
        if args.bare_addr.is_some() {
            kinds.push(PathKind::BareEcho);
        }
        kinds.extend(args.paths.iter().copied().filter(|p| h2load_kind(*p)));
        let mut headers = vec![("x-laurel-program".to_string(), args.program.clone())];
        if let Some(key) = &args.api_key {
            headers.push(("x-api-key".to_string(), key.clone()));
        }
        let target = server_bound::Target {
            addr: &args.addr,
            bare_addr: args.bare_addr.as_deref(),
            metrics_url: args.metrics_url.as_deref(),
            headers,
        };
        h2_rows = server_bound::run(shape, &target, &clients[0], &kinds, members.first())
            .await
            .context("h2load")?;
    }

    let load = Load {
        concurrency: args.concurrency,
        warmup: args.warmup,
        duration: args.duration,
    };
    let mut tonic_paths = args.paths.clone();
    if args.bare_addr.is_some() {
        // Right after Laurel's echo, so the two see the same machine.
        tonic_paths.insert(1, PathKind::BareEcho);
    }
    let mut results: Vec<PathResult> = Vec::new();
    for &kind in &tonic_paths {
        let mode = args.rate.map_or(Mode::Closed, Mode::Rate);
        let r = phase(kind, mode, load, &clients, &members).await;
        let max_rps = r.rps();
        results.push(r);
        if args.half_rate {
            let r = phase(
                kind,
                Mode::HalfRate(max_rps / 2.0),
                load,
                &clients,
                &members,
            )
            .await;
            results.push(r);
        }
    }
    let memory = sampler.and_then(|s| s.finish().map_err(|e| format!("{e:#}")));

    let staleness = match &replica {
        Some(b) => {
            eprintln!(
                "staleness: {} writes on {}, reads on {} ...",
                args.staleness_writes,
                args.addr,
                args.replica_addr.as_deref().unwrap_or_default()
            );
            let few = &members[..members.len().min(STALENESS_MEMBERS)];
            Some(
                staleness::measure(
                    &clients[0],
                    b,
                    few,
                    args.staleness_writes,
                    STALENESS_GIVE_UP,
                )
                .await
                .context("staleness")?,
            )
        }
        None => None,
    };

    println!("\nlaurel-bench {} program={}", args.addr, args.program);
    if let Some(shape) = &args.h2load {
        println!();
        print!("{}", report::h2load_table(shape, &h2_rows));
    }
    println!(
        "\ntonic client: concurrency={} connections={} duration={:?} warmup={:?}\n",
        args.concurrency, args.connections, args.duration, args.warmup
    );
    print!("{}", report::table(&results));
    println!();
    print!("{}", report::targets(&results, &h2_rows));
    print!("{}", report::memory_line(&memory));
    if let Some(s) = &staleness {
        print!("{}", report::staleness_line(s));
    }
    if args.json {
        println!(
            "{}",
            report::json_object(
                &results,
                args.concurrency,
                args.connections,
                args.h2load.as_ref().map(|s| (s, &h2_rows[..])),
                &memory,
                staleness.as_ref(),
            )
        );
    }
    Ok(())
}

/// Members written round-robin by the staleness measurement.
const STALENESS_MEMBERS: usize = 20;
/// A replica that has not shown a write after this long counts as never.
const STALENESS_GIVE_UP: Duration = Duration::from_secs(30);

/// The paths h2load drives (record-activity writes a new order per call,
/// which one fixed body cannot do).
fn h2load_kind(kind: PathKind) -> bool {
    matches!(
        kind,
        PathKind::Echo | PathKind::GetMember | PathKind::LookupMember
    )
}

/// The server process to watch: `--server-pid`, else whoever listens on
/// `--addr`'s port here.
fn server_pid(args: &Args) -> Result<u32, String> {
    if let Some(pid) = args.server_pid {
        return Ok(pid);
    }
    let port = args
        .addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse::<u16>().ok())
        .ok_or_else(|| format!("no port in --addr {:?}; give --server-pid", args.addr))?;
    memory::pid_listening_on(port).map_err(|e| format!("{e:#}; give --server-pid"))
}

async fn phase(
    kind: paths::PathKind,
    mode: Mode,
    load: Load,
    clients: &[Clients],
    members: &Arc<Vec<paths::SeededMember>>,
) -> PathResult {
    let target = mode
        .target_rps()
        .map_or(String::new(), |r| format!(" at {r:.0} rps"));
    eprintln!(
        "running {}{target} for {:?} (+{:?} warm-up) ...",
        kind.name(),
        load.duration,
        load.warmup
    );
    let r = run::run_path(kind, mode, load, clients, members).await;
    eprintln!(
        "  {:.1} rps, p50 {:.3} ms, p99 {:.3} ms, {} errors",
        r.rps(),
        r.quantile_ms(0.5),
        r.quantile_ms(0.99),
        r.errors()
    );
    r
}

/// One channel per connection: each `connect` opens its own HTTP/2 connection.
async fn connect(addr: &str, args: &Args) -> Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(addr.to_string())
        .with_context(|| format!("bad address {addr:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(args.timeout)
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let ch = endpoint
            .connect()
            .await
            .with_context(|| format!("connection {i} to {addr}"))?;
        channels.push(ch);
    }
    Ok(channels)
}

/// One echo per connection (and per bare connection), so a server that is
/// up but broken fails setup.
async fn probe(clients: &[Clients]) -> Result<()> {
    for (i, c) in clients.iter().enumerate() {
        let mut c = c.clone();
        let meta = c.meta.clone();
        let mut targets = vec![("Echo", &mut c.echo)];
        if let Some(bare) = c.bare.as_mut() {
            targets.push(("bare Echo", bare));
        }
        for (what, client) in targets {
            let resp = client
                .echo(meta.request(paths::echo_request()))
                .await
                .map_err(|s| {
                    anyhow::anyhow!("{what} on connection {i}: {:?}: {}", s.code(), s.message())
                })?;
            if resp.get_ref().payload != ECHO_PAYLOAD {
                bail!("{what} on connection {i} returned a different payload");
            }
        }
    }
    Ok(())
}
