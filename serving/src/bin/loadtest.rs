//! recsys-loadtest: N concurrent HTTP/1.1 keep-alive connections for T seconds
//! against `GET /v1/recommendations/{user}` with a realistic mix (warm users
//! with a cached list, cold users, k from 5 to 20), optionally posting
//! follow-up events carrying the `rec_id` to ingest. Connections are spread
//! round-robin over one or more `--url`s. Prints requests/s, latency
//! percentiles, the error rate and each URL's share; `--json` writes them.
//!
//! Without `--rate` it is a closed loop (each connection sends when its last
//! answer arrived), so only the service time (sent → answered) is measured.
//! With `--rate` requests follow a fixed schedule and latency is also measured
//! from each request's scheduled send time, so a stall counts against every
//! request it delayed, not only the one in flight (no coordinated omission).
//!
//! `recsys-loadtest preload` writes warm users' lists and histories to Redis.
//!
//! Module: `latency` (the schedule, both latency views, percentiles).

// Beside this file, not in src/bin/ where cargo would take it for a binary.
#[path = "loadtest/latency.rs"]
mod latency;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use latency::{LatencySummary, Recorder};

#[derive(Debug, Parser)]
#[command(name = "recsys-loadtest", version, about = "Load generator for recsys-serving")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive the API.
    Run(RunArgs),
    /// Write `users` warm users (`{user_prefix}{n}`) to Redis: a cached list of
    /// `items` items and a short history each.
    Preload {
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        /// A Redis Cluster's seed nodes (comma-separated) instead of `--redis-url`.
        #[arg(long, value_delimiter = ',')]
        cluster_nodes: Vec<String>,
        /// Redis key prefix (serving's redis.prefix).
        #[arg(long, default_value = "recsys:")]
        prefix: String,
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        #[arg(long, default_value = "lt-u")]
        user_prefix: String,
        /// Items per cached list.
        #[arg(long, default_value_t = 100)]
        items: usize,
        /// Model version written into the lists.
        #[arg(long, default_value = "loadtest")]
        model: String,
        /// Also write a small synthetic model version (named `--model`) under
        /// this artifacts root and point CURRENT at it, for serving's fallbacks.
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Base URL of recsys-serving; repeat it to spread the connections
    /// round-robin over several instances (connection i uses URL i mod n).
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    urls: Vec<String>,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Measured duration, seconds.
    #[arg(long, short = 'd', default_value_t = 30.0)]
    duration: f64,
    /// Total requests per second on a fixed schedule (request i is due at
    /// start + i/rate; a free connection takes the next one due), 0 = as fast
    /// as they answer. Latency is then also measured from each scheduled time.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Unmeasured warm-up, seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Warm users are `{user_prefix}{0..warm_users}` (see `preload`).
    #[arg(long, default_value_t = 100_000)]
    warm_users: usize,
    #[arg(long, default_value = "lt-u")]
    user_prefix: String,
    /// Share of requests for users nobody has seen (fresh random ids).
    #[arg(long, default_value_t = 0.1)]
    cold_share: f64,
    #[arg(long, default_value_t = 5)]
    k_min: usize,
    #[arg(long, default_value_t = 20)]
    k_max: usize,
    /// Base URL of recsys-ingest: post follow-up events with the rec_id there.
    #[arg(long)]
    ingest_url: Option<String>,
    /// Share of responses followed by an event (view 80 %, addtocart 15 %, transaction 5 %).
    #[arg(long, default_value_t = 0.05)]
    event_share: f64,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Summary {
    connections: usize,
    duration_s: f64,
    /// The schedule's requests/s, absent for a closed loop.
    rate: Option<f64>,
    requests: u64,
    errors: u64,
    error_rate: f64,
    requests_per_s: f64,
    /// Sent → last body byte.
    service_ms: LatencySummary,
    /// Scheduled send time → last body byte (`--rate` only).
    corrected_ms: Option<LatencySummary>,
    /// Requests sent more than 2 ms after their scheduled time (`--rate` only).
    late: Option<u64>,
    max_send_lag_ms: Option<f64>,
    /// Scheduled in the measured window but never sent because every connection
    /// was still busy at the end; not in the percentiles (`--rate` only).
    unsent: Option<u64>,
    urls: Vec<UrlShare>,
    events_posted: u64,
    event_errors: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

#[derive(Debug, Serialize)]
struct UrlShare {
    url: String,
    connections: usize,
    requests: u64,
    /// Not `errors`: scripts read the run's total as the only `"errors"` key.
    failed: u64,
    share: f64,
}

#[derive(Debug, Default)]
struct WorkerResult {
    /// Index into `--url` of this worker's connection.
    url: usize,
    rec: Recorder,
    errors: u64,
    unsent: u64,
    events: u64,
    event_errors: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match cli.command {
        Command::Run(a) => rt.block_on(run(a)),
        Command::Preload { redis_url, cluster_nodes, prefix, users, user_prefix, items, model, model_dir } => {
            let written = match model_dir {
                Some(root) => write_model(&root, &model),
                None => Ok(()),
            };
            let redis = if cluster_nodes.is_empty() {
                common::RedisConfig { url: redis_url, prefix, ..Default::default() }
            } else {
                common::RedisConfig { url: String::new(), cluster_nodes, prefix, ..Default::default() }
            };
            written.and_then(|()| rt.block_on(preload(&redis, users, &user_prefix, items, &model)))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_model(root: &std::path::Path, version: &str) -> anyhow::Result<()> {
    let spec = model::synthetic::SyntheticSpec {
        version: version.to_owned(),
        users: 2_000,
        items: 1_000,
        factors: 32,
        categories: 20,
        ..model::synthetic::SyntheticSpec::default()
    };
    std::fs::create_dir_all(root)?;
    model::synthetic::synthetic_artifact(&spec).write(root)?;
    model::artifact::set_current(root, version)?;
    println!("wrote synthetic model {version} under {}", root.display());
    Ok(())
}

async fn preload(
    redis: &common::RedisConfig,
    users: usize,
    user_prefix: &str,
    items: usize,
    model: &str,
) -> anyhow::Result<()> {
    let mut conn = common::redis_conn::connect(redis).await.context("connecting to Redis")?;
    let keys = redis.keys();
    let prefix = &redis.prefix;
    let model = schemas::ModelVersion::parse(model).map_err(|e| anyhow::anyhow!("--model: {e}"))?;
    let now = schemas::now_ms();
    let t = Instant::now();
    let mut rng = rand::rng();
    for chunk in (0..users).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &u in chunk {
            let user = schemas::UserId::parse(&format!("{user_prefix}{u}")).map_err(|e| anyhow::anyhow!("{e}"))?;
            let start: usize = rng.random_range(0..10_000);
            let list = schemas::RecsList {
                model: model.clone(),
                updated_ms: now,
                items: (0..items)
                    .map(|i| schemas::RecItem {
                        item_id: schemas::ItemId::from_u64((start + i * 7) as u64),
                        score: 1.0 - i as f32 / items as f32,
                    })
                    .collect(),
            };
            pipe.cmd("SET").arg(keys.recs(&user)).arg(list.to_json()).ignore();
            let hist = keys.hist(&user);
            for h in 0..5u64 {
                let purchases = u64::from(h == 0);
                pipe.cmd("HSET")
                    .arg(&hist)
                    // The first is bought: serving filters it out of the list.
                    .arg(if h == 0 { start as u64 } else { 20_000 + start as u64 + h }.to_string())
                    .arg(format!("2,0,{purchases},{now}"))
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    println!("preloaded {users} users ({items} items each) under {prefix:?} in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

struct Target {
    authority: String,
    addr: String,
}

fn target(url: &str) -> anyhow::Result<Target> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let authority = rest.split('/').next().unwrap_or(rest).to_owned();
    Ok(Target { addr: authority.clone(), authority })
}

async fn connect<B>(t: &Target) -> anyhow::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(&t.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.connections > 0 && a.k_min >= 1 && a.k_min <= a.k_max, "bad --connections or k range");
    anyhow::ensure!(a.rate >= 0.0 && a.rate.is_finite(), "--rate must be ≥ 0");
    anyhow::ensure!(
        a.connections >= a.urls.len(),
        "--connections {} < {} --url: some URLs would get no connection",
        a.connections,
        a.urls.len()
    );
    let apis =
        a.urls.iter().map(|u| target(u).with_context(|| format!("--url {u}"))).collect::<anyhow::Result<Vec<_>>>()?;
    let apis = Arc::new(apis);
    let ingest = a.ingest_url.as_deref().map(target).transpose()?.map(Arc::new);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(a.warmup);
    let end = measure_from + Duration::from_secs_f64(a.duration);
    let clock = Clock { start, measure_from, end, next_slot: Arc::new(AtomicU64::new(0)) };
    let args = Arc::new(a);
    let mut handles = Vec::new();
    for w in 0..args.connections {
        let (args, apis, ingest, clock) = (args.clone(), apis.clone(), ingest.clone(), clock.clone());
        handles.push(tokio::spawn(async move { worker(w, &args, &apis, ingest.as_deref(), &clock).await }));
    }
    let scheduled = args.rate > 0.0;
    let mut rec = Recorder::new(scheduled);
    let (mut errors, mut unsent, mut events, mut event_errors) = (0, 0, 0, 0);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    let mut urls: Vec<UrlShare> = args
        .urls
        .iter()
        .enumerate()
        .map(|(i, u)| UrlShare {
            url: u.clone(),
            connections: (i..args.connections).step_by(args.urls.len()).count(),
            requests: 0,
            failed: 0,
            share: 0.0,
        })
        .collect();
    for h in handles {
        let r = h.await?;
        urls[r.url].requests += r.rec.service.len() as u64;
        urls[r.url].failed += r.errors;
        rec.merge(r.rec);
        errors += r.errors;
        unsent += r.unsent;
        events += r.events;
        event_errors += r.event_errors;
        for (s, n) in r.statuses {
            *statuses.entry(s).or_default() += n;
        }
    }
    let requests = rec.service.len() as u64;
    for u in &mut urls {
        u.share = if requests == 0 { 0.0 } else { u.requests as f64 / requests as f64 };
    }
    let s = Summary {
        connections: args.connections,
        duration_s: args.duration,
        rate: scheduled.then_some(args.rate),
        requests,
        errors,
        error_rate: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
        requests_per_s: requests as f64 / args.duration,
        service_ms: rec.service.summary(),
        corrected_ms: rec.corrected.map(latency::Latencies::summary),
        late: scheduled.then_some(rec.late),
        max_send_lag_ms: scheduled.then_some(rec.max_send_lag.as_secs_f64() * 1000.0),
        unsent: scheduled.then_some(unsent),
        urls,
        events_posted: events,
        event_errors,
        statuses,
    };
    print!("{}", report(&s));
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&s)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// The printed summary.
fn report(s: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let pace = match s.rate {
        Some(r) => format!("scheduled at {r:.0}/s"),
        None => "closed loop".to_owned(),
    };
    let _ = writeln!(
        out,
        "{} requests in {:.1} s over {} connections ({pace}): {:.0} requests/s, errors {} ({:.4} %)",
        s.requests,
        s.duration_s,
        s.connections,
        s.requests_per_s,
        s.errors,
        100.0 * s.error_rate
    );
    match &s.corrected_ms {
        Some(c) => {
            let _ = writeln!(out, "latency ms from the scheduled send time (corrected): {c}");
            let _ = writeln!(out, "latency ms from the actual send time (service time): {}", s.service_ms);
            let _ = writeln!(
                out,
                "sent late (> 2 ms after scheduled): {} of {}, longest wait {:.1} ms; unsent at the end: {}",
                s.late.unwrap_or(0),
                s.requests,
                s.max_send_lag_ms.unwrap_or(0.0),
                s.unsent.unwrap_or(0)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "latency ms (service time; a closed loop has no schedule to correct against): {}",
                s.service_ms
            );
        }
    }
    if s.urls.len() > 1 {
        for u in &s.urls {
            let _ = writeln!(
                out,
                "  {}: {} connections, {} requests ({:.1} %), errors {}",
                u.url,
                u.connections,
                u.requests,
                100.0 * u.share,
                u.failed
            );
        }
    }
    let _ = writeln!(
        out,
        "statuses {:?}; follow-up events posted {} (failed {})",
        s.statuses, s.events_posted, s.event_errors
    );
    out
}

/// The run's time frame, shared by the workers.
#[derive(Clone)]
struct Clock {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// The next slot of the `--rate` schedule not yet taken by a connection.
    next_slot: Arc<AtomicU64>,
}

async fn worker(w: usize, a: &RunArgs, apis: &[Target], ingest: Option<&Target>, clock: &Clock) -> WorkerResult {
    let url = w % apis.len();
    let api = &apis[url];
    let scheduled = a.rate > 0.0;
    let mut r = WorkerResult { url, rec: Recorder::new(scheduled), ..WorkerResult::default() };
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let mut events: Option<SendRequest<Full<Bytes>>> = None;
    let mut cold = 0u64;
    loop {
        // On a schedule, a free connection takes the next slot due, however
        // late: when every connection was busy, that wait is part of the
        // request's latency, not a request that silently never happened.
        let due = if scheduled {
            let slot = clock.next_slot.fetch_add(1, Ordering::Relaxed);
            let due = clock.start + latency::scheduled_offset(slot, a.rate);
            if due >= clock.end {
                break;
            }
            if Instant::now() >= clock.end {
                r.unsent += u64::from(due >= clock.measure_from);
                continue;
            }
            tokio::time::sleep_until(due.checked_sub(latency::TIMER_LEAD).unwrap_or(due).into()).await;
            Some(due)
        } else {
            if Instant::now() >= clock.end {
                break;
            }
            None
        };
        let user = if rng.random::<f64>() < a.cold_share {
            cold += 1;
            format!("cold-{w}-{cold}-{:x}", rng.random::<u32>())
        } else {
            format!("{}{}", a.user_prefix, rng.random_range(0..a.warm_users.max(1)))
        };
        let k = rng.random_range(a.k_min..=a.k_max);
        let path = format!("/v1/recommendations/{user}?k={k}");
        // A slot belongs to the window it was due in; a closed loop's request to the one it was sent in.
        let measured = |sent: Instant| due.unwrap_or(sent) >= clock.measure_from;
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(api).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    r.errors += u64::from(measured(Instant::now()));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let req = match hyper::Request::get(&path).header(hyper::header::HOST, &api.authority).body(Empty::new()) {
            Ok(req) => req,
            Err(_) => continue,
        };
        let t = Instant::now();
        let measured = measured(t);
        let outcome = async {
            if s.ready().await.is_err() {
                return None;
            }
            let resp = s.send_request(req).await.ok()?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        }
        .await;
        let done = Instant::now();
        if measured {
            r.rec.record(due, t, done);
        }
        match outcome {
            Some((status, body)) => {
                if measured {
                    *r.statuses.entry(status).or_default() += 1;
                    if status != 200 {
                        r.errors += 1;
                    }
                }
                if let (Some(ing), true) = (ingest, status == 200 && rng.random::<f64>() < a.event_share) {
                    match post_event(&mut events, ing, &body, &mut rng).await {
                        Ok(true) => r.events += 1,
                        Ok(false) => {}
                        Err(_) => r.event_errors += 1,
                    }
                }
            }
            None => {
                sender = None;
                if measured {
                    r.errors += 1;
                }
            }
        }
    }
    r
}

/// Posts one event about the first recommended item, carrying the rec_id.
async fn post_event(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    ingest: &Target,
    body: &[u8],
    rng: &mut impl Rng,
) -> anyhow::Result<bool> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let (Some(user), Some(rec), Some(item)) =
        (v["user_id"].as_str(), v["rec_id"].as_str(), v["items"][0]["item_id"].as_str())
    else {
        return Ok(false);
    };
    let x: f64 = rng.random();
    let mut ev = serde_json::json!({"user_id": user, "item_id": item, "rec_id": rec,
        "event": if x < 0.8 { "view" } else if x < 0.95 { "addtocart" } else { "transaction" }});
    if x >= 0.95 {
        ev["transaction_id"] = serde_json::json!(format!("lt-{:x}", rng.random::<u64>()));
    }
    if conn.as_ref().is_none_or(|s| s.is_closed()) {
        *conn = Some(connect(ingest).await?);
    }
    let s = conn.as_mut().context("no connection")?;
    s.ready().await?;
    let req = hyper::Request::post("/v1/events")
        .header(hyper::header::HOST, &ingest.authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&ev)?)))?;
    let resp = s.send_request(req).await?;
    let ok = resp.status().is_success();
    let _ = resp.into_body().collect().await?;
    anyhow::ensure!(ok, "ingest answered an error");
    Ok(true)
}
