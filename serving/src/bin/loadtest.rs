//! recsys-loadtest: N concurrent HTTP/1.1 keep-alive connections for T seconds
//! against `GET /v1/recommendations/{user}` with a realistic mix (warm users
//! with a cached list, cold users, k from 5 to 20), optionally posting
//! follow-up events carrying the `rec_id` to ingest. Prints requests/s,
//! p50/p95/p99/p99.9 latency and the error rate; `--json` writes them.
//!
//! `recsys-loadtest preload` writes warm users' lists and histories to Redis.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use serde::Serialize;

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
    /// Base URL of recsys-serving.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Measured duration, seconds.
    #[arg(long, short = 'd', default_value_t = 30.0)]
    duration: f64,
    /// Total requests per second, spread over the connections (0 = as fast as
    /// they answer). For soaks at a fixed share of the measured capacity.
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
    url: String,
    connections: usize,
    duration_s: f64,
    requests: u64,
    errors: u64,
    error_rate: f64,
    requests_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    events_posted: u64,
    event_errors: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

#[derive(Debug, Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: u64,
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
        Command::Preload { redis_url, prefix, users, user_prefix, items, model, model_dir } => {
            let written = match model_dir {
                Some(root) => write_model(&root, &model),
                None => Ok(()),
            };
            written.and_then(|()| rt.block_on(preload(&redis_url, &prefix, users, &user_prefix, items, &model)))
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
    url: &str,
    prefix: &str,
    users: usize,
    user_prefix: &str,
    items: usize,
    model: &str,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys = schemas::RedisKeys::new(prefix);
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
    let api = target(&a.url)?;
    let ingest = a.ingest_url.as_deref().map(target).transpose()?;
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(a.warmup);
    let end = measure_from + Duration::from_secs_f64(a.duration);
    let args = std::sync::Arc::new(a);
    let mut handles = Vec::new();
    for w in 0..args.connections {
        let args = args.clone();
        let api = Target { authority: api.authority.clone(), addr: api.addr.clone() };
        let ingest = ingest.as_ref().map(|t| Target { authority: t.authority.clone(), addr: t.addr.clone() });
        handles.push(tokio::spawn(async move { worker(w, &args, &api, ingest.as_ref(), measure_from, end).await }));
    }
    let mut all = WorkerResult::default();
    for h in handles {
        let r = h.await?;
        all.latencies_us.extend(r.latencies_us);
        all.errors += r.errors;
        all.events += r.events;
        all.event_errors += r.event_errors;
        for (s, n) in r.statuses {
            *all.statuses.entry(s).or_default() += n;
        }
    }
    let mut lat = all.latencies_us;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let requests = lat.len() as u64;
    let s = Summary {
        url: args.url.clone(),
        connections: args.connections,
        duration_s: args.duration,
        requests,
        errors: all.errors,
        error_rate: if requests == 0 { 0.0 } else { all.errors as f64 / requests as f64 },
        requests_per_s: requests as f64 / args.duration,
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: lat.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
        events_posted: all.events,
        event_errors: all.event_errors,
        statuses: all.statuses,
    };
    println!(
        "{} requests in {:.1} s over {} connections: {:.0} requests/s, errors {} ({:.4} %)\n\
         latency ms: p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n\
         statuses {:?}; follow-up events posted {} (failed {})",
        s.requests,
        s.duration_s,
        s.connections,
        s.requests_per_s,
        s.errors,
        100.0 * s.error_rate,
        s.p50_ms,
        s.p95_ms,
        s.p99_ms,
        s.p999_ms,
        s.max_ms,
        s.statuses,
        s.events_posted,
        s.event_errors
    );
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&s)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

async fn worker(
    w: usize,
    a: &RunArgs,
    api: &Target,
    ingest: Option<&Target>,
    measure_from: Instant,
    end: Instant,
) -> WorkerResult {
    let mut r = WorkerResult { latencies_us: Vec::with_capacity(1 << 16), ..WorkerResult::default() };
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let mut events: Option<SendRequest<Full<Bytes>>> = None;
    let mut cold = 0u64;
    // Each connection sends every connections/rate seconds (when --rate is set).
    let interval = (a.rate > 0.0).then(|| Duration::from_secs_f64(a.connections as f64 / a.rate));
    let mut next = Instant::now();
    while Instant::now() < end {
        if let Some(i) = interval {
            next += i;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        let user = if rng.random::<f64>() < a.cold_share {
            cold += 1;
            format!("cold-{w}-{cold}-{:x}", rng.random::<u32>())
        } else {
            format!("{}{}", a.user_prefix, rng.random_range(0..a.warm_users.max(1)))
        };
        let k = rng.random_range(a.k_min..=a.k_max);
        let path = format!("/v1/recommendations/{user}?k={k}");
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(api).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    r.errors += 1;
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
        let elapsed = t.elapsed();
        let measured = t >= measure_from;
        match outcome {
            Some((status, body)) => {
                if measured {
                    r.latencies_us.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
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
                    r.latencies_us.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
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
