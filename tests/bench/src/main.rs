//! laurel-bench: drives Laurel gRPC paths under load and reports each beside
//! EchoService, which goes through the same server stack but does no work.
//!
//! Run `laurel-bench --help` for the flags.

mod args;
mod paths;
mod report;
mod run;
mod seed;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use laurel_proto::common::v1::EchoRequest;
use tonic::transport::{Channel, Endpoint};

use crate::args::{Args, Parsed};
use crate::paths::{CallMeta, Clients, ECHO_PAYLOAD};
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

/// Connects, seeds, runs every path. Only setup problems are errors; failed
/// calls during the runs are counted and reported instead.
async fn bench(args: &Args) -> Result<()> {
    let meta = CallMeta::new(&args.program, args.api_key.as_deref())?;
    let channels = connect(args).await?;
    let clients: Vec<Clients> = channels
        .into_iter()
        .map(|ch| Clients::new(ch, meta.clone()))
        .collect();
    probe(&clients).await?;

    let members = if args.paths.iter().any(|p| p.needs_members()) {
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

    let load = Load {
        concurrency: args.concurrency,
        warmup: args.warmup,
        duration: args.duration,
    };
    let mut results: Vec<PathResult> = Vec::new();
    for &kind in &args.paths {
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

    println!(
        "\nlaurel-bench {} program={} concurrency={} connections={} duration={:?} warmup={:?}\n",
        args.addr, args.program, args.concurrency, args.connections, args.duration, args.warmup
    );
    print!("{}", report::table(&results));
    if args.json {
        println!(
            "{}",
            report::json_line(&results, args.concurrency, args.connections)
        );
    }
    Ok(())
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
async fn connect(args: &Args) -> Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(args.addr.clone())
        .with_context(|| format!("bad --addr {:?}", args.addr))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(args.timeout)
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let ch = endpoint
            .connect()
            .await
            .with_context(|| format!("connection {i} to {}", args.addr))?;
        channels.push(ch);
    }
    Ok(channels)
}

/// One echo per connection, so a server that is up but broken fails setup.
async fn probe(clients: &[Clients]) -> Result<()> {
    for (i, c) in clients.iter().enumerate() {
        let mut c = c.clone();
        let req = EchoRequest {
            payload: ECHO_PAYLOAD.to_vec(),
        };
        let resp = c.echo.echo(c.meta.request(req)).await.map_err(|s| {
            anyhow::anyhow!("Echo on connection {i}: {:?}: {}", s.code(), s.message())
        })?;
        if resp.get_ref().payload != ECHO_PAYLOAD {
            bail!("Echo on connection {i} returned a different payload");
        }
    }
    Ok(())
}
