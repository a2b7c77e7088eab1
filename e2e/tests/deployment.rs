//! The deployment files agree with each other and with the code: a port, a
//! topic, an environment key or a mounted file that drifts apart fails here,
//! not at 3 a.m. in a container that cannot find its broker.
//!
//! Read: `docker-compose.kafka.yml` (YAML merge keys applied), `Dockerfile`,
//! `configs/recsys.toml`, `configs/prometheus/prometheus.yml`, the Grafana
//! provisioning files, and each process's own settings loader run with the
//! environment compose gives it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Value {
    let mut v: Value = serde_yaml::from_str(&read("docker-compose.kafka.yml")).unwrap();
    v.apply_merge().unwrap();
    // apply_merge resolves one level; the services merge an anchor that itself
    // holds merged maps (`environment: <<: *recsys-env`).
    for (_, svc) in v["services"].as_mapping_mut().unwrap().iter_mut() {
        svc.apply_merge().unwrap();
        for (_, field) in svc.as_mapping_mut().unwrap().iter_mut() {
            field.apply_merge().unwrap();
        }
    }
    v
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    let s = &c["services"][name];
    assert!(!s.is_null(), "docker-compose.kafka.yml has no service {name:?}");
    s
}

fn env_of(svc: &Value) -> BTreeMap<String, String> {
    svc["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => panic!("environment value {other:?}"),
                    };
                    (k.as_str().unwrap().to_owned(), interpolate(&v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Compose's `${VAR:-default}` as compose resolves it with `VAR` unset.
fn interpolate(v: &str) -> String {
    match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')).and_then(|r| r.split_once(":-")) {
        Some((_, default)) => default.to_owned(),
        None => v.to_owned(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().map(|x| x.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

/// `(source, target)` of the service's bind mounts and named volumes.
fn mounts(svc: &Value) -> Vec<(String, String)> {
    strings(&svc["volumes"])
        .iter()
        .map(|m| {
            let mut parts = m.split(':');
            (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned())
        })
        .collect()
}

/// `(host, container)` port pairs.
fn ports(svc: &Value) -> Vec<(u16, u16)> {
    port_bindings(svc).into_iter().map(|(_, h, c)| (h, c)).collect()
}

/// `(host address, host port, container port)`: `"8080:8080"` binds every
/// host address (`None`), `"127.0.0.1:29092:29092"` only the loopback.
fn port_bindings(svc: &Value) -> Vec<(Option<String>, u16, u16)> {
    strings(&svc["ports"])
        .iter()
        .map(|p| {
            let (rest, c) = p.rsplit_once(':').unwrap();
            let (ip, h) = match rest.rsplit_once(':') {
                Some((ip, h)) => (Some(ip.to_owned()), h),
                None => (None, rest),
            };
            (ip, h.parse().unwrap(), c.parse().unwrap())
        })
        .collect()
}

/// The URL of a `curl -fsS URL` health check.
fn health_url(svc: &Value) -> String {
    let test = strings(&svc["healthcheck"]["test"]);
    assert_eq!(test[..2], ["CMD".to_owned(), "curl".to_owned()], "{test:?}");
    test.last().unwrap().clone()
}

/// The settings a process reads in its container: the repository's
/// `configs/recsys.toml` (which compose mounts where `RECSYS_CONFIG` points)
/// under the service's environment.
fn container_env(c: &Value, name: &str) -> config::Map<String, String> {
    let svc = service(c, name);
    let env = env_of(svc);
    let file = env.get("RECSYS_CONFIG").unwrap_or_else(|| panic!("{name}: RECSYS_CONFIG unset"));
    assert!(
        mounts(svc).contains(&("./configs/recsys.toml".to_owned(), file.clone())),
        "{name}: RECSYS_CONFIG={file} but configs/recsys.toml is not mounted there: {:?}",
        mounts(svc)
    );
    let mut env: config::Map<String, String> = env.into_iter().filter(|(k, _)| k.starts_with("RECSYS__")).collect();
    env.insert(common::config::CONFIG_FILE_ENV.to_owned(), repo().join("configs/recsys.toml").display().to_string());
    env
}

/// The four recsys processes: service name, binary, listen address key, and
/// the path of their health check.
const PROCESSES: [(&str, &str, &str, &str); 4] = [
    ("ingest", "recsys-ingest", "RECSYS__INGEST__LISTEN", "/health"),
    ("updater", "recsys-updater", "RECSYS__UPDATER__METRICS_LISTEN", "/health"),
    ("serving", "recsys-serving", "RECSYS__SERVING__LISTEN", "/health"),
    ("trainer", "recsys-trainer", "RECSYS__TRAINER__SCHEDULE__METRICS_LISTEN", "/metrics"),
];

/// What each process actually listens on under its container environment
/// (through its own loader, which also validates every value).
fn listen_addr(c: &Value, name: &str) -> SocketAddr {
    let env = container_env(c, name);
    match name {
        "ingest" => common::config::load_settings::<ingest::config::Settings>(None, Some(env)).unwrap().ingest.listen,
        "updater" => {
            common::config::load_settings::<updater::config::Settings>(None, Some(env)).unwrap().updater.metrics_listen
        }
        "serving" => {
            common::config::load_settings::<serving::config::Settings>(None, Some(env)).unwrap().serving.listen
        }
        "trainer" => {
            let s = common::load_layered::<batch_trainer::config::Settings>(None, Some(env)).unwrap();
            s.trainer.validate().unwrap();
            s.trainer.schedule.metrics_listen
        }
        _ => unreachable!(),
    }
}

#[test]
fn each_process_listens_where_compose_publishes_checks_and_prometheus_scrapes_it() {
    let c = compose();
    let prom: Value = serde_yaml::from_str(&read("configs/prometheus/prometheus.yml")).unwrap();
    let mut scraped = BTreeSet::new();
    for job in prom["scrape_configs"].as_sequence().unwrap() {
        for sc in job["static_configs"].as_sequence().unwrap() {
            scraped.extend(strings(&sc["targets"]));
        }
    }
    let toml_file: toml::Table = read("configs/recsys.toml").parse().unwrap();
    for (name, _, key, path) in PROCESSES {
        let svc = service(&c, name);
        let addr = listen_addr(&c, name);
        assert!(addr.ip().is_unspecified(), "{name} listens on {addr}: unreachable from other containers");
        assert_eq!(env_of(svc)[key].parse::<SocketAddr>().unwrap(), addr, "{name}: {key}");
        assert!(
            ports(svc).iter().any(|&(_, container)| container == addr.port()),
            "{name} listens on {} but publishes {:?}",
            addr.port(),
            ports(svc)
        );
        assert_eq!(health_url(svc), format!("http://localhost:{}{path}", addr.port()), "{name} health check");
        assert!(
            scraped.contains(&format!("{name}:{}", addr.port())),
            "prometheus.yml does not scrape {name}:{} (targets: {scraped:?})",
            addr.port()
        );
        // A local run (no override) uses the same port as the container.
        let local = toml_path(&toml_file, key).and_then(|v| v.as_str().map(str::to_owned)).unwrap();
        assert_eq!(local.parse::<SocketAddr>().unwrap().port(), addr.port(), "configs/recsys.toml {key}");
    }
    // Prometheus scrapes nothing that is not a service of the deployment.
    for t in &scraped {
        let (host, port) = t.split_once(':').unwrap();
        if host == "localhost" {
            continue;
        }
        let svc = service(&c, host);
        let published: Vec<u16> = ports(svc).iter().map(|p| p.1).collect();
        assert!(published.contains(&port.parse().unwrap()), "prometheus target {t}: {host} publishes {published:?}");
    }
}

/// The value at an env key's path in the TOML file (`RECSYS__A__B_C` → `a.b_c`).
fn toml_path<'a>(t: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let path: Vec<String> = key.strip_prefix("RECSYS__")?.split("__").map(str::to_lowercase).collect();
    let (last, tables) = path.split_last()?;
    let mut cur = t;
    for p in tables {
        cur = cur.get(p)?.as_table()?;
    }
    cur.get(last)
}

#[test]
fn every_environment_override_names_a_key_of_the_config_file() {
    // The loaders ignore unknown keys (each reads only its sections), so a
    // misspelt override would silently do nothing: check them by name.
    let c = compose();
    let toml_file: toml::Table = read("configs/recsys.toml").parse().unwrap();
    let mut seen = 0;
    for (name, svc) in c["services"].as_mapping().unwrap() {
        for key in env_of(svc).keys().filter(|k| k.starts_with("RECSYS__")) {
            assert!(
                toml_path(&toml_file, key).is_some(),
                "{}: {key} overrides nothing in configs/recsys.toml",
                name.as_str().unwrap()
            );
            seen += 1;
        }
    }
    assert!(seen >= 4 * 5, "only {seen} overrides found: is the x-recsys anchor merged?");
}

#[test]
fn processes_reach_the_broker_and_redis_of_the_deployment() {
    let c = compose();
    let kafka_env = env_of(service(&c, "kafka"));
    let advertised = &kafka_env["KAFKA_ADVERTISED_LISTENERS"];
    for (name, ..) in PROCESSES {
        let env = container_env(&c, name);
        let u = common::config::load_settings::<updater::config::Settings>(None, Some(env.clone())).unwrap();
        for b in u.kafka.brokers.split(',') {
            assert!(
                advertised.contains(&format!("PLAINTEXT://{b}")),
                "{name}: broker {b} is not advertised ({advertised})"
            );
        }
        let host = u.redis.url.trim_start_matches("redis://").split([':', '/']).next().unwrap().to_owned();
        assert!(!service(&c, &host).is_null(), "{name}: redis host {host}");
        // Models live on the shared volume, where the trainer writes them.
        let dir = u.model.artifacts_dir.display().to_string();
        assert!(
            mounts(service(&c, name)).iter().any(|(src, dst)| src == "models" && *dst == dir),
            "{name}: artifacts_dir {dir} is not the shared models volume"
        );
        assert!(u.kafka.topic_prefix.is_empty(), "{name}: kafka-init creates unprefixed topics");
        // Every recsys process waits for the topics and Redis.
        let deps = &service(&c, name)["depends_on"];
        assert_eq!(deps["kafka-init"]["condition"], "service_completed_successfully", "{name}");
        assert_eq!(deps["redis"]["condition"], "service_healthy", "{name}");
    }
    // AOF: histories, offsets and counters survive a restart.
    let redis_cmd = strings(&service(&c, "redis")["command"]).join(" ");
    assert!(redis_cmd.contains("--appendonly yes"), "{redis_cmd}");
}

#[test]
fn kafka_init_creates_every_topic_with_the_configured_partitions_and_the_log_kept_forever() {
    let c = compose();
    let script = strings(&service(&c, "kafka-init")["command"]).join("\n");
    let partitions = container_env(&c, "ingest")["RECSYS__KAFKA__PARTITIONS"].parse::<u32>().unwrap();
    let mut created = BTreeMap::new();
    for line in script.lines().filter(|l| l.contains("--create")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |flag: &str| words.iter().position(|w| *w == flag).map(|i| words[i + 1]);
        let configs: Vec<&str> =
            words.iter().enumerate().filter(|(_, w)| **w == "--config").map(|(i, _)| words[i + 1]).collect();
        let topic = arg("--topic").unwrap().to_owned();
        assert_eq!(arg("--partitions").unwrap().parse::<u32>().unwrap(), partitions, "{topic}");
        created.insert(topic, configs.join(" "));
    }
    let expected: BTreeSet<String> = schemas::topics::ALL.iter().map(|t| t.to_string()).collect();
    assert_eq!(created.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let events = &created[schemas::topics::EVENTS];
    assert!(events.contains("retention.ms=-1"), "the nightly rebuild reads the whole log: {events}");
    assert!(events.contains("retention.bytes=-1"), "{events}");
    // The broker must not create topics behind kafka-init's back.
    assert_eq!(env_of(service(&c, "kafka"))["KAFKA_AUTO_CREATE_TOPICS_ENABLE"], "false");
}

#[test]
fn mounted_files_exist_and_prometheus_and_grafana_find_theirs() {
    let c = compose();
    let declared: BTreeSet<String> =
        c["volumes"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect();
    for (name, svc) in c["services"].as_mapping().unwrap() {
        for (src, _) in mounts(svc) {
            if let Some(rel) = src.strip_prefix("./") {
                assert!(repo().join(rel).exists(), "{}: mounts missing {src}", name.as_str().unwrap());
            } else {
                assert!(declared.contains(&src), "{}: volume {src} is not declared", name.as_str().unwrap());
            }
        }
    }
    // Prometheus: its config and every rule file it names.
    let p = service(&c, "prometheus");
    let dir = mounts(p).into_iter().find(|(s, _)| s == "./configs/prometheus").expect("configs/prometheus mounted").1;
    let cmd = strings(&p["command"]);
    assert!(cmd.contains(&format!("--config.file={dir}/prometheus.yml")), "{cmd:?}");
    let prom: Value = serde_yaml::from_str(&read("configs/prometheus/prometheus.yml")).unwrap();
    for rules in strings(&prom["rule_files"]) {
        assert!(repo().join("configs/prometheus").join(&rules).exists(), "rule file {rules}");
    }
    // Grafana: provisioning, and the dashboards where the provider looks.
    let g = service(&c, "grafana");
    let gm = mounts(g);
    assert!(gm.contains(&("./configs/grafana/provisioning".into(), "/etc/grafana/provisioning".into())), "{gm:?}");
    let provider: Value = serde_yaml::from_str(&read("configs/grafana/provisioning/dashboards/recsys.yml")).unwrap();
    let path = provider["providers"][0]["options"]["path"].as_str().unwrap().to_owned();
    assert!(gm.contains(&("./configs/grafana/dashboards".into(), path.clone())), "dashboards at {path}: {gm:?}");
    let ds: Value = serde_yaml::from_str(&read(&datasource_file())).unwrap();
    let url = ds["datasources"][0]["url"].as_str().unwrap();
    let prom_port = ports(p)[0].1;
    assert_eq!(url, format!("http://prometheus:{prom_port}"));
}

fn datasource_file() -> String {
    let dir = repo().join("configs/grafana/provisioning/datasources");
    let f = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().file_name();
    format!("configs/grafana/provisioning/datasources/{}", f.to_string_lossy())
}

/// One `FROM … [AS name]` stage of a Dockerfile: its base (an image or an
/// earlier stage) and its instructions, continuation lines joined.
#[derive(Debug)]
struct Stage {
    name: String,
    base: String,
    instructions: Vec<String>,
}

fn stages(dockerfile: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part.trim_end());
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                logical.push(std::mem::take(&mut cur));
            }
        }
    }
    let mut out: Vec<Stage> = Vec::new();
    for ins in logical {
        let words: Vec<&str> = ins.split_whitespace().collect();
        if words[0].eq_ignore_ascii_case("FROM") {
            let base = words.iter().skip(1).find(|w| !w.starts_with("--")).unwrap().to_string();
            let name = match words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
                Some(i) => words[i + 1].to_owned(),
                None => out.len().to_string(),
            };
            out.push(Stage { name, base, instructions: Vec::new() });
        } else {
            out.last_mut().expect("an instruction before the first FROM").instructions.push(ins);
        }
    }
    out
}

fn stage<'a>(all: &'a [Stage], name: &str) -> &'a Stage {
    all.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("Dockerfile has no stage {name:?}"))
}

/// The stage and the stages it is built `FROM`, the stage itself first.
fn lineage<'a>(all: &'a [Stage], name: &str) -> Vec<&'a Stage> {
    let mut chain = vec![stage(all, name)];
    while let Some(parent) = all.iter().find(|s| s.name == chain.last().unwrap().base) {
        chain.push(parent);
    }
    chain
}

/// The `--bin` names of a cargo (or cargo chef) command line.
fn bins(cmd: &str) -> BTreeSet<String> {
    let w: Vec<&str> = cmd.split_whitespace().collect();
    w.windows(2).filter(|p| p[0] == "--bin").map(|p| p[1].trim_end_matches(';').to_owned()).collect()
}

fn workspace_members() -> Vec<String> {
    let ws: toml::Table = read("Cargo.toml").parse().unwrap();
    ws["workspace"]["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect()
}

/// The stage whose instructions run `cargo build --release`: the builder.
fn builder(all: &[Stage]) -> &Stage {
    let found: Vec<&Stage> =
        all.iter().filter(|s| s.instructions.iter().any(|i| i.contains("cargo build --release"))).collect();
    assert_eq!(found.len(), 1, "exactly one stage runs `cargo build --release`: {found:?}");
    found[0]
}

#[test]
fn the_image_builds_every_binary_compose_runs_from_every_workspace_member() {
    let c = compose();
    let docker = read("Dockerfile");
    let all = stages(&docker);
    let build = builder(&all);
    let copies = |s: &Stage, m: &str| s.instructions.iter().any(|i| *i == format!("COPY {m} {m}"));
    for m in workspace_members() {
        assert!(copies(build, &m), "the {} stage does not COPY member {m}", build.name);
    }
    let cargo_build = build.instructions.iter().find(|i| i.contains("cargo build --release")).unwrap();
    assert!(cargo_build.contains("--locked"), "{cargo_build}");
    let built = bins(cargo_build);
    for (name, bin, ..) in PROCESSES {
        let cmd = strings(&service(&c, name)["command"]);
        assert_eq!(cmd[0], bin, "{name}");
        assert!(built.contains(bin), "Dockerfile does not build {bin}: {built:?}");
        assert!(cargo_build.contains(&format!("target/release/{bin}")), "Dockerfile does not install {bin}");
    }
    // The image that runs is the last stage, and takes the binaries from the
    // builder.
    let run = all.last().unwrap();
    assert!(
        run.instructions.iter().any(|i| i.starts_with(&format!("COPY --from={} /out/ /usr/local/bin/", build.name))),
        "the final stage does not install the builder's binaries: {:?}",
        run.instructions
    );
    assert!(docker.contains("ENV RECSYS_CONFIG=/etc/recsys/recsys.toml"));
}

/// cargo-chef: a plan stage reduces the workspace to recipe.json (manifests
/// and lock); the builder cooks the dependencies (librdkafka among them) from
/// the recipe alone, and only then copies the sources. Docker reuses a layer
/// while every input before it is unchanged, so a source change rebuilds the
/// workspace crates and nothing below them. Returns what breaks that.
fn check_dependency_layer(dockerfile: &str) -> Result<(), String> {
    let all = stages(dockerfile);
    let build = builder(&all);
    let plan = all
        .iter()
        .find(|s| s.instructions.iter().any(|i| i.contains("cargo chef prepare --recipe-path recipe.json")))
        .ok_or("no stage runs `cargo chef prepare --recipe-path recipe.json`")?;
    // Everything the builder's layers see up to the cook, base stages first.
    let mut before_cook = Vec::new();
    let mut cook = None;
    'outer: for s in lineage(&all, &build.name).iter().rev() {
        for i in &s.instructions {
            if i.contains("cargo chef cook") {
                cook = Some(i.clone());
                break 'outer;
            }
            before_cook.push(format!("{}: {i}", s.name));
        }
    }
    let cook = cook.ok_or_else(|| format!("the {} stage (or its bases) never runs `cargo chef cook`", build.name))?;
    for flag in ["--release", "--locked", "--recipe-path recipe.json"] {
        if !cook.contains(flag) {
            return Err(format!("cook without {flag}: {cook}"));
        }
    }
    let recipe_copy = format!("COPY --from={} /src/recipe.json recipe.json", plan.name);
    if !before_cook.iter().any(|i| i.ends_with(&recipe_copy)) {
        return Err(format!("the builder does not `{recipe_copy}` before it cooks"));
    }
    // Nothing but the recipe is copied in before the cook: a source file
    // there would make the cook layer (and librdkafka's build) depend on it.
    let stray: Vec<&String> = before_cook
        .iter()
        .filter(|i| i.contains(": COPY ") || i.contains(": ADD "))
        .filter(|i| !i.ends_with(&recipe_copy))
        .collect();
    if !stray.is_empty() {
        return Err(format!("copied before `cargo chef cook`: {stray:?}"));
    }
    // The cook builds the dependencies of exactly the binaries the build
    // builds: another set unifies other features and the build recompiles.
    let cargo_build = build.instructions.iter().find(|i| i.contains("cargo build --release")).unwrap();
    if bins(&cook) != bins(cargo_build) {
        return Err(format!("cook builds {:?}, the build {:?}", bins(&cook), bins(cargo_build)));
    }
    // Planner and builder share the toolchain stage (e2e/tests/toolchain.rs
    // checks its tag against rust-toolchain.toml).
    let root = |name: &str| lineage(&all, name).last().unwrap().base.clone();
    if root(&plan.name) != root(&build.name) {
        return Err(format!("plan starts from {}, build from {}", root(&plan.name), root(&build.name)));
    }
    Ok(())
}

#[test]
fn dependencies_are_cooked_in_a_layer_no_source_change_invalidates() {
    check_dependency_layer(&read("Dockerfile")).unwrap_or_else(|e| panic!("Dockerfile: {e}"));
}

#[test]
fn the_dependency_layer_check_fails_where_sources_reach_the_dependency_build() {
    // The Dockerfile before cargo-chef: sources copied, then one build.
    let single_stage = "FROM rust:1.95.0-bookworm AS build\nCOPY Cargo.toml Cargo.lock ./\nCOPY serving serving\n\
                        RUN cargo build --release --locked --bin recsys-serving\nFROM debian:bookworm-slim\n";
    assert!(check_dependency_layer(single_stage).unwrap_err().contains("cargo chef prepare"));
    let real = read("Dockerfile");
    // A source copied into the toolchain stage reaches the cook's layer.
    let polluted = real.replacen("WORKDIR /src\n", "WORKDIR /src\nCOPY common common\n", 1);
    assert_ne!(polluted, real);
    assert!(check_dependency_layer(&polluted).unwrap_err().contains("COPY common common"));
    // Cooking for fewer binaries than the build builds.
    let fewer = real.replacen("recipe.json \\\n        --bin recsys-ingest ", "recipe.json \\\n        ", 1);
    assert_ne!(fewer, real);
    assert!(check_dependency_layer(&fewer).unwrap_err().contains("cook builds"));
}

#[test]
fn kafka_has_a_listener_the_host_can_reach() {
    // A client bootstraps from any listener but then connects to the address
    // the broker advertises for it: kafka:9092 means nothing to the host, so
    // the host needs its own listener, advertised as the published address.
    let c = compose();
    let kafka = service(&c, "kafka");
    let env = env_of(kafka);
    let listeners = |key: &str| -> BTreeMap<String, String> {
        env[key].split(',').map(|l| l.split_once("://").map(|(n, a)| (n.to_owned(), a.to_owned())).unwrap()).collect()
    };
    let bound = listeners("KAFKA_LISTENERS");
    let advertised = listeners("KAFKA_ADVERTISED_LISTENERS");
    let protocols: BTreeMap<&str, &str> =
        env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(',').map(|p| p.split_once(':').unwrap()).collect();
    let published = port_bindings(kafka);
    let mut host_listeners = Vec::new();
    for (name, addr) in &advertised {
        let (host, port) = addr.rsplit_once(':').unwrap();
        let port: u16 = port.parse().unwrap();
        assert!(protocols.contains_key(name.as_str()), "listener {name} has no security protocol");
        let bound_port: u16 = bound[name].rsplit_once(':').unwrap().1.parse().unwrap();
        if host == "localhost" || host == "127.0.0.1" {
            // Published on the advertised port, so the address the broker
            // hands out is the one the host dials.
            assert!(
                published.iter().any(|(_, h, c)| *h == port && *c == bound_port),
                "{name} is advertised as {addr} but kafka publishes {published:?}"
            );
            host_listeners.push(name.clone());
        } else {
            assert!(service(&c, host).as_mapping().is_some(), "{name} advertises {host}, not a service");
        }
    }
    assert_eq!(host_listeners.len(), 1, "one listener for the host: {advertised:?}");
    // The containers keep theirs, and the controller is not published.
    assert_eq!(advertised.get("PLAINTEXT").map(String::as_str), Some("kafka:9092"));
    assert_eq!(env["KAFKA_INTER_BROKER_LISTENER_NAME"], "PLAINTEXT");
    let controller_port: u16 = bound["CONTROLLER"].rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(published.iter().all(|(_, _, c)| *c != controller_port), "the controller port is published");
    // The host listener has no authentication: loopback only.
    for (ip, h, _) in &published {
        assert_eq!(ip.as_deref(), Some("127.0.0.1"), "kafka port {h} is published on every address");
    }
}

/// `${NAME:?message}`: compose stops with the message when NAME is unset or
/// empty. Returns NAME.
fn required_variable(v: &str) -> Option<&str> {
    let inner = v.strip_prefix("${")?.strip_suffix('}')?;
    let (name, message) = inner.split_once(":?")?;
    (!message.trim().is_empty()).then_some(name)
}

#[test]
fn grafana_needs_an_admin_password_from_the_environment_and_no_secret_has_a_default() {
    let raw: Value = serde_yaml::from_str(&read("docker-compose.kafka.yml")).unwrap();
    let pw = raw["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
        .as_str()
        .expect("grafana: GF_SECURITY_ADMIN_PASSWORD is not set (Grafana would start with admin/admin)");
    assert_eq!(
        required_variable(pw),
        Some("GRAFANA_ADMIN_PASSWORD"),
        "grafana's admin password must be ${{GRAFANA_ADMIN_PASSWORD:?…}} (required, no default): {pw}"
    );
    assert_eq!(required_variable("${X:-admin}"), None);
    assert_eq!(required_variable("${X:?}"), None, "a requirement without a message");
    // Nothing secret falls back to a value written in the file; an empty
    // default (the admin token: routes off) is allowed.
    let text = read("docker-compose.kafka.yml");
    let mut rest = text.as_str();
    while let Some(i) = rest.find("${") {
        let expr = &rest[i..=i + rest[i..].find('}').unwrap()];
        rest = &rest[i + expr.len()..];
        if let Some((name, default)) = expr[2..expr.len() - 1].split_once(":-") {
            let secret = ["PASSWORD", "TOKEN", "SECRET", "KEY"].iter().any(|s| name.to_uppercase().contains(s));
            assert!(!secret || default.is_empty(), "{expr}: a secret with a default in the file");
        }
    }
}
