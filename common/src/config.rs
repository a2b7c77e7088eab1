//! Layered configuration: one file for every process (`configs/recsys.toml`),
//! every key overridable by `RECSYS__SECTION__KEY`; each process deserialises
//! only the sections it reads.
//!
//! Mistakes stop the process at start, named: a section no process reads
//! (not in [`SECTIONS`]), or a key unknown to a section the process reads,
//! whether it comes from the file or from a `RECSYS__…` variable. A key in a
//! section another process reads is that process's to check (every section
//! has an owner, so every misspelt key stops at least the process it was
//! meant for; `config check` of each binary finds it without starting it).
//! Values from variables stay strings until a field asks for a number or a
//! boolean, so an id such as `0123` keeps its zero.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The file read when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "configs/recsys.toml";

/// Names the configuration file when no `--config` is given (containers set it).
pub const CONFIG_FILE_ENV: &str = "RECSYS_CONFIG";

/// Prefix of the variables that override keys: `RECSYS__SECTION__KEY`.
pub const ENV_PREFIX: &str = "RECSYS__";

/// Every top-level section of the configuration file, each read by at least
/// one process. A section outside this list is a mistake in every process.
pub const SECTIONS: &[&str] = &[
    "admin",
    "ingest",
    "kafka",
    "model",
    "popularity",
    "redis",
    "serving",
    "tracking",
    "trainer",
    "training",
    "updater",
];

/// The file [`load_layered`] reads: `file` (which must exist), else the one
/// `RECSYS_CONFIG` names (which must exist too), else [`DEFAULT_CONFIG_FILE`]
/// when present; `None` = defaults and environment only.
pub fn config_file(file: Option<&Path>, env: Option<&config::Map<String, String>>) -> Option<PathBuf> {
    let from_env = match env {
        None => std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from),
        Some(map) => map.get(CONFIG_FILE_ENV).map(PathBuf::from),
    };
    match file.map(Path::to_path_buf).or(from_env) {
        Some(f) => Some(f),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
    }
}

/// Loads `T` from the file [`config_file`] picks, overlaid with the
/// environment: `env = None` reads the process's variables, `Some(map)` only
/// the map (so tests need not mutate the process environment). Unknown keys
/// are errors (see the module docs).
pub fn load_layered<T: DeserializeOwned>(
    file: Option<&Path>,
    env: Option<config::Map<String, String>>,
) -> Result<T, config::ConfigError> {
    load_sections(file, env, &[])
}

/// [`load_layered`] for a process that reads only part of some sections
/// (`partial`, e.g. the updater reads `[training.rerank]` of `[training]`):
/// a key directly under one of them that `T` does not read is left to the
/// process owning the whole section.
pub fn load_sections<T: DeserializeOwned>(
    file: Option<&Path>,
    env: Option<config::Map<String, String>>,
    partial: &[&str],
) -> Result<T, config::ConfigError> {
    let path = config_file(file, env.as_ref());
    let mut b = config::Config::builder();
    if let Some(f) = &path {
        b = b.add_source(config::File::from(f.as_path()).required(true));
    }
    // No `try_parsing`: it would turn "0123" into 123 before any field is
    // seen; numeric and boolean fields parse their strings themselves.
    b = b.add_source(
        config::Environment::with_prefix("RECSYS").prefix_separator("__").separator("__").source(env.clone()),
    );
    let mut ignored = Vec::new();
    let t: T = serde_ignored::deserialize(b.build()?, |p| ignored.push(p.to_string()))?;
    let unknown: Vec<String> = ignored.into_iter().filter(|p| !foreign(p, partial)).collect();
    if unknown.is_empty() {
        Ok(t)
    } else {
        Err(config::ConfigError::Message(describe_unknown(&unknown, path.as_deref(), env.as_ref())))
    }
}

/// A process's settings: the sections it reads, and the checks that stop it
/// at start naming the key at fault.
pub trait Settings: DeserializeOwned {
    /// Sections this process reads only part of (see [`load_sections`]).
    const PARTIAL_SECTIONS: &'static [&'static str] = &[];

    /// Rejects values that cannot work, naming the key.
    fn validate(&self) -> Result<(), String>;
}

/// Loads `S` like [`load_layered`] and checks it: what every process does at
/// start and what its `config check` does.
pub fn load_settings<S: Settings>(
    file: Option<&Path>,
    env: Option<config::Map<String, String>>,
) -> Result<S, config::ConfigError> {
    let s: S = load_sections(file, env, S::PARTIAL_SECTIONS)?;
    s.validate().map_err(config::ConfigError::Message)?;
    Ok(s)
}

/// What `config print` shows of a process reading `S` (the process's
/// variables applied), or why it would not start.
pub fn effective<S: Settings + Serialize>(file: Option<&Path>) -> anyhow::Result<Effective> {
    let s: S = load_settings(file, None)?;
    Effective::of(&s).map_err(anyhow::Error::msg)
}

/// A key ignored because another process reads it: a whole known section,
/// or a key directly under a section this process reads only part of.
fn foreign(path: &str, partial: &[&str]) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    match parts.as_slice() {
        [section] => SECTIONS.contains(section),
        [section, _] => partial.contains(section),
        _ => false,
    }
}

/// The variables (as set) whose key is `path` or lies under it.
fn env_vars_for(path: &str, env: Option<&config::Map<String, String>>) -> Vec<String> {
    let names: Vec<String> = match env {
        Some(map) => map.keys().cloned().collect(),
        None => std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect(),
    };
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| {
            let lower = n.to_lowercase();
            let Some(key) = lower.strip_prefix(&ENV_PREFIX.to_lowercase()) else { return false };
            let key = key.replace("__", ".");
            key == path || key.starts_with(&format!("{path}."))
        })
        .collect();
    out.sort();
    out
}

fn in_file(path: &str, file: &Path) -> bool {
    config::Config::builder()
        .add_source(config::File::from(file))
        .build()
        .is_ok_and(|c| c.get::<config::Value>(path).is_ok())
}

fn describe_unknown(unknown: &[String], file: Option<&Path>, env: Option<&config::Map<String, String>>) -> String {
    let each: Vec<String> = unknown
        .iter()
        .map(|key| {
            let what =
                if key.contains('.') { format!("unknown key `{key}`") } else { format!("unknown section [{key}]") };
            let mut origins = Vec::new();
            if let Some(f) = file.filter(|f| in_file(key, f)) {
                origins.push(format!("in {}", f.display()));
            }
            let vars = env_vars_for(key, env);
            if !vars.is_empty() {
                origins.push(format!("from the environment variable {}", vars.join(", ")));
            }
            if origins.is_empty() {
                what
            } else {
                format!("{what} {}", origins.join(" and "))
            }
        })
        .collect();
    let hint = if unknown.iter().any(|k| !k.contains('.')) {
        format!(" (known sections: {})", SECTIONS.join(", "))
    } else {
        " (misspelt? see configs/recsys.toml for every key)".to_owned()
    };
    format!("{}{hint}", each.join("; "))
}

/// A list setting from the file (`["a", "b"]`) or from one environment
/// variable (`RECSYS__INGEST__CORS_ORIGINS=a,b`: comma-separated, blanks
/// trimmed, empty items dropped). The loader never guesses types
/// (`"0123"` stays a string), so a list field opts in with
/// `#[serde(deserialize_with = "common::config::list_or_commas")]`.
pub fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(l) => l,
        Either::Commas(s) => s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect(),
    })
}

/// Returns the message of the first failed check, for `validate` functions
/// that name the offending key.
pub fn first_failure(checks: &[(bool, &str)]) -> Result<(), String> {
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, msg)) => Err((*msg).to_owned()),
        None => Ok(()),
    }
}

/// A process's effective configuration as TOML (for `config print`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective(toml::Table);

impl Effective {
    /// The settings `s` as a TOML table.
    pub fn of<T: Serialize>(s: &T) -> Result<Effective, String> {
        let mut t = toml::Table::try_from(s).map_err(|e| format!("rendering the configuration as TOML: {e}"))?;
        t.iter_mut().for_each(|(_, v)| tidy_floats(v));
        Ok(Effective(t))
    }

    /// Adds the sections of `other` (a process that loads two settings types).
    pub fn merge(mut self, other: Effective) -> Effective {
        for (k, v) in other.0 {
            self.0.entry(k).or_insert(v);
        }
        self
    }

    /// The TOML text with every secret masked: `token` / `password` /
    /// `secret` keys, the password of a URL (`redis://:pw@host`), and the
    /// path and query of webhook URLs (Telegram puts its bot token there).
    pub fn render_masked(&self) -> String {
        let mut t = self.0.clone();
        mask_table(&mut t, "");
        toml::to_string_pretty(&t).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Shows an `f32` field as written (`0.1`, not `0.10000000149011612`): a
/// value an `f32` holds exactly is printed as the shortest `f32` decimal.
fn tidy_floats(v: &mut toml::Value) {
    match v {
        toml::Value::Float(f) if f64::from(*f as f32) == *f => {
            if let Ok(short) = (*f as f32).to_string().parse::<f64>() {
                *f = short;
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(tidy_floats),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| tidy_floats(v)),
        _ => {}
    }
}

/// What replaces a secret in `config print`.
pub const MASK: &str = "[redacted]";

fn mask_table(t: &mut toml::Table, path: &str) {
    for (k, v) in t.iter_mut() {
        let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        match v {
            toml::Value::Table(inner) => mask_table(inner, &here),
            toml::Value::String(s) if !s.is_empty() => {
                let lower = k.to_lowercase();
                if ["token", "password", "secret"].iter().any(|w| lower.contains(w)) && !lower.ends_with("_file") {
                    *s = MASK.to_owned();
                } else if here.ends_with("webhook.url") {
                    *s = mask_url_path(s);
                } else if s.contains("://") {
                    *s = mask_url_password(s);
                }
            }
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::String(s) = item {
                        *s = mask_url_password(s);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `scheme://user:password@host/…` → `scheme://user:[redacted]@host/…`.
pub fn mask_url_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:{MASK}{}", &url[..start], &rest[..colon], &rest[at..]),
        // A lone user part is a password in some schemes (redis://pw@host).
        None => format!("{}{MASK}{}", &url[..start], &rest[at..]),
    }
}

/// `https://host/bot<token>/sendMessage?x=y` → `https://host/[redacted]`.
pub fn mask_url_path(url: &str) -> String {
    let masked = mask_url_password(url);
    let Some(start) = masked.find("://").map(|i| i + 3) else { return MASK.to_owned() };
    match masked[start..].find(['/', '?', '#']) {
        Some(i) => format!("{}/{MASK}", &masked[..start + i]),
        None => masked,
    }
}

/// `[kafka]`: shared by every process that talks to the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Partition count of topics created at start-up.
    pub partitions: i32,
    /// Replication factor of topics created at start-up.
    pub replication_factor: i32,
    /// Prepended to every topic name (isolates environments and test runs).
    pub topic_prefix: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            partitions: 6,
            replication_factor: 1,
            topic_prefix: String::new(),
        }
    }
}

impl KafkaConfig {
    /// A topic's full name: the prefix and one of `schemas::topics`.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{}", self.topic_prefix, name)
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        first_failure(&[
            (!self.brokers.trim().is_empty(), "kafka.brokers must not be empty"),
            (self.partitions > 0, "kafka.partitions must be > 0"),
            (self.replication_factor > 0, "kafka.replication_factor must be > 0"),
        ])
    }
}

/// `[redis]`: where the updater writes and serving reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// One Redis node: `redis://host:port/db` (or `rediss://` for TLS). Empty
    /// when [`RedisConfig::cluster_nodes`] names a cluster.
    pub url: String,
    /// A Redis Cluster: some of its nodes (`redis://host:port`), from which the
    /// client learns the rest. Empty for a single node (`url`). A list in the
    /// file; comma-separated in `RECSYS__REDIS__CLUSTER_NODES`.
    #[serde(deserialize_with = "list_or_commas")]
    pub cluster_nodes: Vec<String>,
    /// Prepended to every key (`schemas::RedisKeys`); include the separator.
    pub prefix: String,
    /// Connection attempt timeout, ms.
    pub connect_timeout_ms: u64,
    /// How long one command may take before it fails, ms.
    pub response_timeout_ms: u64,
    /// How many replicas must have acknowledged a writer's Redis writes
    /// (`WAIT`) before it moves its progress past them (the updater's stored
    /// and committed offsets). Unset: 1 with `cluster_nodes` (a failover then
    /// loses nothing acknowledged), 0 for a single node (nothing to wait for).
    /// See [`RedisConfig::replicas_to_wait`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replicas_acked: Option<u32>,
    /// How long one `WAIT` may block, ms; fewer replicas by then fails the
    /// step (retried). Below `response_timeout_ms`, so the reply comes in time.
    pub replicas_ack_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            prefix: "recsys:".into(),
            connect_timeout_ms: 1_000,
            response_timeout_ms: 1_000,
            min_replicas_acked: None,
            replicas_ack_timeout_ms: 500,
        }
    }
}

impl RedisConfig {
    /// The key builder for this prefix.
    pub fn keys(&self) -> schemas::RedisKeys {
        schemas::RedisKeys::new(self.prefix.clone())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// The replicas a write must reach before progress moves past it:
    /// `min_replicas_acked`, or by default 1 on a cluster and 0 on one node.
    pub fn replicas_to_wait(&self) -> u32 {
        self.min_replicas_acked.unwrap_or(u32::from(self.is_cluster()))
    }

    /// How long one `WAIT` may block.
    pub fn replicas_ack_timeout(&self) -> Duration {
        Duration::from_millis(self.replicas_ack_timeout_ms)
    }

    /// Whether this names a Redis Cluster (`cluster_nodes`) rather than one node.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// Where it connects, for logs and errors: the URL, or the seed nodes.
    pub fn target(&self) -> String {
        if self.is_cluster() {
            format!("cluster {}", self.cluster_nodes.iter().map(|u| mask_url_password(u)).collect::<Vec<_>>().join(","))
        } else {
            mask_url_password(&self.url)
        }
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let (single, cluster) = (!self.url.trim().is_empty(), self.is_cluster());
        if single && cluster {
            return Err("redis.url and redis.cluster_nodes are both set: name one node (url) or a cluster's \
                 seed nodes (cluster_nodes), not both (set redis.url = \"\" to use the cluster)"
                .to_owned());
        }
        if !single && !cluster {
            return Err("redis: set either redis.url (one node) or redis.cluster_nodes (a cluster)".to_owned());
        }
        if cluster && self.prefix.contains(['{', '}']) {
            return Err("redis.prefix must not contain { or } with redis.cluster_nodes: a hash tag in the prefix \
                 would put every key in one cluster slot"
                .to_owned());
        }
        if let Some(bad) =
            self.cluster_nodes.iter().find(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            return Err(format!(
                "redis.cluster_nodes: {:?} must start with redis:// or rediss://",
                mask_url_password(bad)
            ));
        }
        first_failure(&[
            (
                cluster
                    || self.url.starts_with("redis://")
                    || self.url.starts_with("rediss://")
                    || self.url.starts_with("unix://"),
                "redis.url must start with redis://, rediss:// or unix://",
            ),
            (self.connect_timeout_ms > 0, "redis.connect_timeout_ms must be > 0"),
            (self.response_timeout_ms > 0, "redis.response_timeout_ms must be > 0"),
            (
                self.replicas_to_wait() == 0
                    || (self.replicas_ack_timeout_ms > 0 && self.replicas_ack_timeout_ms < self.response_timeout_ms),
                "redis.replicas_ack_timeout_ms must be > 0 and < redis.response_timeout_ms (a WAIT longer than the \
                 response timeout fails as a timeout instead of answering)",
            ),
        ])
    }
}

/// `[model]`: where model versions live (written by the trainer, read by the
/// updater and serving).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// Root of the version directories and `CURRENT`.
    pub artifacts_dir: PathBuf,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { artifacts_dir: PathBuf::from("artifacts/models") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Both {
        kafka: KafkaConfig,
        redis: RedisConfig,
        model: ModelConfig,
    }

    fn repo_config() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml")
    }

    #[test]
    fn shared_sections_of_the_shipped_file_are_the_defaults() {
        let b: Both = load_layered(Some(&repo_config()), Some(config::Map::new())).unwrap();
        assert_eq!(b.kafka, KafkaConfig::default());
        assert_eq!(b.redis, RedisConfig::default());
        assert_eq!(b.model, ModelConfig::default());
    }

    #[test]
    fn contract_environment_overrides_apply() {
        let env = config::Map::from([
            ("RECSYS__KAFKA__BROKERS".to_owned(), "k1:9092,k2:9092".to_owned()),
            ("RECSYS__REDIS__URL".to_owned(), "redis://10.1.1.1:6380".to_owned()),
            ("RECSYS__REDIS__PREFIX".to_owned(), "staging:".to_owned()),
            ("RECSYS__MODEL__ARTIFACTS_DIR".to_owned(), "/srv/models".to_owned()),
        ]);
        let b: Both = load_layered(Some(&repo_config()), Some(env)).unwrap();
        assert_eq!(b.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(b.redis.url, "redis://10.1.1.1:6380");
        assert_eq!(b.redis.keys().prefix(), "staging:");
        assert_eq!(b.model.artifacts_dir, PathBuf::from("/srv/models"));
    }

    #[test]
    fn a_named_file_must_exist_and_bad_values_name_their_key() {
        assert!(load_layered::<Both>(Some(Path::new("/nonexistent/recsys.toml")), None).is_err());
        let r = RedisConfig { url: "http://x".into(), ..RedisConfig::default() };
        assert!(r.validate().unwrap_err().contains("redis.url"));
        let k = KafkaConfig { partitions: 0, ..KafkaConfig::default() };
        assert!(k.validate().unwrap_err().contains("kafka.partitions"));
    }

    #[test]
    fn writes_wait_for_one_replica_on_a_cluster_unless_told_otherwise() {
        let nodes = vec!["redis://127.0.0.1:7000".to_owned()];
        let cluster = RedisConfig { url: String::new(), cluster_nodes: nodes, ..RedisConfig::default() };
        assert_eq!(cluster.replicas_to_wait(), 1);
        assert_eq!(RedisConfig::default().replicas_to_wait(), 0);
        let off = RedisConfig { min_replicas_acked: Some(0), ..cluster.clone() };
        assert_eq!((off.replicas_to_wait(), off.validate()), (0, Ok(())));
        let two = RedisConfig { min_replicas_acked: Some(2), ..RedisConfig::default() };
        assert_eq!(two.replicas_to_wait(), 2);
        // A WAIT must answer before the command's response timeout.
        let slow = RedisConfig { replicas_ack_timeout_ms: 1_000, ..cluster.clone() };
        assert!(slow.validate().unwrap_err().contains("redis.replicas_ack_timeout_ms"));
        let slow_off = RedisConfig { min_replicas_acked: Some(0), ..slow };
        assert_eq!(slow_off.validate(), Ok(()));
    }

    #[test]
    fn redis_is_one_node_or_a_cluster_never_both() {
        let nodes = vec!["redis://127.0.0.1:7000".to_owned(), "redis://127.0.0.1:7001".to_owned()];
        let both = RedisConfig { cluster_nodes: nodes.clone(), ..RedisConfig::default() };
        let e = both.validate().unwrap_err();
        assert!(e.contains("redis.url") && e.contains("redis.cluster_nodes") && e.contains("not both"), "{e}");
        let neither = RedisConfig { url: String::new(), ..RedisConfig::default() };
        assert!(neither.validate().unwrap_err().contains("either"));
        let cluster = RedisConfig { url: String::new(), cluster_nodes: nodes.clone(), ..RedisConfig::default() };
        assert_eq!(cluster.validate(), Ok(()));
        assert!(cluster.is_cluster());
        let bad =
            RedisConfig { url: String::new(), cluster_nodes: vec!["127.0.0.1:7000".into()], ..RedisConfig::default() };
        assert!(bad.validate().unwrap_err().contains("redis.cluster_nodes"));
        let tagged = RedisConfig { prefix: "{r}:".into(), ..cluster.clone() };
        assert!(tagged.validate().unwrap_err().contains("redis.prefix"));
        // The environment gives the list comma-separated; the file as a list.
        let env = config::Map::from([
            ("RECSYS__REDIS__URL".to_owned(), String::new()),
            ("RECSYS__REDIS__CLUSTER_NODES".to_owned(), "redis://127.0.0.1:7000, redis://127.0.0.1:7001".to_owned()),
        ]);
        let b: Both = load_layered(Some(&repo_config()), Some(env)).unwrap();
        assert_eq!(b.redis.cluster_nodes, nodes);
        assert_eq!(b.redis.validate(), Ok(()));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[redis]\nurl = \"\"\ncluster_nodes = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]\n",
        )
        .unwrap();
        let b: Both = load_layered(Some(&f), Some(config::Map::new())).unwrap();
        assert_eq!(b.redis.cluster_nodes, nodes);
    }

    #[test]
    fn recsys_config_names_the_file_when_no_flag_does() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("other.toml");
        std::fs::write(&f, "[kafka]\nbrokers = \"from-file:9092\"\n").unwrap();
        let env = config::Map::from([(CONFIG_FILE_ENV.to_owned(), f.display().to_string())]);
        let b: Both = load_layered(None, Some(env.clone())).unwrap();
        assert_eq!(b.kafka.brokers, "from-file:9092");
        // An explicit file wins over the variable.
        let b: Both = load_layered(Some(&repo_config()), Some(env)).unwrap();
        assert_eq!(b.kafka.brokers, KafkaConfig::default().brokers);
        // A named file that is missing is an error, not silently the defaults.
        let missing = config::Map::from([(CONFIG_FILE_ENV.to_owned(), "/nonexistent/x.toml".to_owned())]);
        assert!(load_layered::<Both>(None, Some(missing)).is_err());
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let f = dir.path().join("recsys.toml");
        std::fs::write(&f, text).unwrap();
        f
    }

    #[test]
    fn an_unknown_key_in_the_file_names_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "[kafka]\nbrokers = \"k:9092\"\nbrokerz = \"typo:9092\"\n");
        let err = load_layered::<Both>(Some(&f), Some(config::Map::new())).unwrap_err().to_string();
        assert!(err.contains("unknown key `kafka.brokerz`"), "{err}");
        assert!(err.contains(&f.display().to_string()), "{err}");
        // A section no process reads is unknown too.
        let f = write(&dir, "[kafak]\nbrokers = \"k:9092\"\n");
        let err = load_layered::<Both>(Some(&f), Some(config::Map::new())).unwrap_err().to_string();
        assert!(err.contains("unknown section [kafak]") && err.contains("known sections"), "{err}");
        // Nested tables are checked as deep as the process reads them.
        let f = write(&dir, "[redis.pool]\nsize = 4\n");
        let err = load_layered::<Both>(Some(&f), Some(config::Map::new())).unwrap_err().to_string();
        assert!(err.contains("`redis.pool`"), "{err}");
    }

    #[test]
    fn an_unknown_variable_names_the_variable() {
        let env = config::Map::from([("RECSYS__REDIS__PREFIKS".to_owned(), "x:".to_owned())]);
        let err = load_layered::<Both>(Some(&repo_config()), Some(env)).unwrap_err().to_string();
        assert!(err.contains("RECSYS__REDIS__PREFIKS") && err.contains("`redis.prefiks`"), "{err}");
        assert!(!err.contains(&format!("in {}", repo_config().display())), "the key is not in the file: {err}");
        let env = config::Map::from([("RECSYS__SERVNG__LISTEN".to_owned(), "0.0.0.0:1".to_owned())]);
        let err = load_layered::<Both>(Some(&repo_config()), Some(env)).unwrap_err().to_string();
        assert!(err.contains("RECSYS__SERVNG__LISTEN") && err.contains("[servng]"), "{err}");
        // Other variables are not ours: RECSYS_CONFIG, RECSYS_LOG_FORMAT, RUST_LOG.
        let env = config::Map::from([
            ("RECSYS_LOG_FORMAT".to_owned(), "json".to_owned()),
            ("RUST_LOG".to_owned(), "debug".to_owned()),
        ]);
        load_layered::<Both>(Some(&repo_config()), Some(env)).unwrap();
    }

    #[test]
    fn sections_of_other_processes_are_theirs_to_check() {
        // Both reads kafka, redis and model; [serving] and [training] belong to others.
        let env = config::Map::from([
            ("RECSYS__SERVING__LISTEN".to_owned(), "0.0.0.0:1".to_owned()),
            ("RECSYS__TRAINING__NOT_A_KEY".to_owned(), "1".to_owned()),
        ]);
        load_layered::<Both>(Some(&repo_config()), Some(env)).unwrap();

        // A process reading part of a section: keys beside its part are the
        // owner's, keys inside its part are its own.
        #[derive(Debug, Deserialize)]
        struct Rerank {
            #[allow(dead_code)]
            enabled: bool,
        }
        #[derive(Debug, Deserialize)]
        struct Training {
            #[allow(dead_code)]
            rerank: Rerank,
        }
        #[derive(Debug, Deserialize)]
        struct Partial {
            #[allow(dead_code)]
            training: Training,
        }
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "[training]\nfactors = 3\n[training.rerank]\nenabled = true\n[training.gate]\nx = 1\n");
        load_sections::<Partial>(Some(&f), Some(config::Map::new()), &["training"]).unwrap();
        let f = write(&dir, "[training.rerank]\nenabled = true\nenabeld = false\n");
        let err = load_sections::<Partial>(Some(&f), Some(config::Map::new()), &["training"]).unwrap_err().to_string();
        assert!(err.contains("`training.rerank.enabeld`"), "{err}");
    }

    #[test]
    fn strings_stay_strings_and_numbers_and_booleans_parse_from_variables() {
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        struct Trainer {
            chat_id: String,
            enabled: bool,
            count: u64,
            ratio: f32,
            cutoff: Option<i64>,
        }
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        struct S {
            trainer: Trainer,
            kafka: KafkaConfig,
        }
        let env = config::Map::from([
            ("RECSYS__TRAINER__CHAT_ID".to_owned(), "0123".to_owned()),
            ("RECSYS__TRAINER__ENABLED".to_owned(), "true".to_owned()),
            ("RECSYS__TRAINER__COUNT".to_owned(), "0042".to_owned()),
            ("RECSYS__TRAINER__RATIO".to_owned(), "0.25".to_owned()),
            ("RECSYS__TRAINER__CUTOFF".to_owned(), "1440000000000".to_owned()),
            ("RECSYS__KAFKA__TOPIC_PREFIX".to_owned(), "1e3".to_owned()),
            ("RECSYS__KAFKA__PARTITIONS".to_owned(), "12".to_owned()),
        ]);
        let s: S = load_layered(None, Some(env)).unwrap();
        assert_eq!(s.trainer.chat_id, "0123", "the leading zero is kept");
        assert_eq!(s.kafka.topic_prefix, "1e3", "not turned into 1000");
        assert!(s.trainer.enabled);
        assert_eq!((s.trainer.count, s.trainer.ratio, s.trainer.cutoff), (42, 0.25, Some(1_440_000_000_000)));
        assert_eq!(s.kafka.partitions, 12);
        let env = config::Map::from([("RECSYS__KAFKA__PARTITIONS".to_owned(), "twelve".to_owned())]);
        let err = load_layered::<S>(None, Some(env)).unwrap_err().to_string();
        assert!(err.contains("partitions"), "{err}");
    }

    #[test]
    fn the_shipped_file_has_exactly_the_known_sections() {
        let t: toml::Table = std::fs::read_to_string(repo_config()).unwrap().parse().unwrap();
        let mut in_file: Vec<&str> = t.keys().map(String::as_str).collect();
        in_file.sort_unstable();
        assert_eq!(in_file, SECTIONS, "configs/recsys.toml and common::config::SECTIONS disagree");
    }

    #[test]
    fn print_masks_every_secret() {
        #[derive(Serialize)]
        struct Webhook {
            url: String,
            chat_id: String,
        }
        #[derive(Serialize)]
        struct S {
            admin: crate::AdminConfig,
            redis: RedisConfig,
            webhook: Webhook,
        }
        let s = S {
            admin: crate::AdminConfig {
                token: crate::Secret::new("s3cret-admin-token-0123"),
                token_file: Some("/run/secrets/t".into()),
            },
            redis: RedisConfig { url: "redis://:hunter2@cache:6379/0".into(), ..RedisConfig::default() },
            webhook: Webhook { url: "https://api.telegram.org/bot123:ABC/sendMessage".into(), chat_id: "0123".into() },
        };
        let text = Effective::of(&s).unwrap().render_masked();
        for secret in ["s3cret-admin-token-0123", "hunter2", "123:ABC", "sendMessage"] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        assert!(text.contains("redis://:[redacted]@cache:6379/0"), "{text}");
        assert!(text.contains("https://api.telegram.org/[redacted]"), "{text}");
        assert!(text.contains("/run/secrets/t") && text.contains("\"0123\""), "{text}");
        // The rendering is TOML again.
        let back: toml::Table = text.parse().unwrap();
        assert_eq!(back["redis"]["prefix"].as_str(), Some("recsys:"));
        assert_eq!(mask_url_password("redis://user:pw@h/1"), "redis://user:[redacted]@h/1");
        // f32 fields print as written.
        #[derive(Serialize)]
        struct F {
            a: f32,
            b: f64,
            c: Vec<f32>,
        }
        let t = Effective::of(&F { a: 0.1, b: 0.1, c: vec![0.3, 0.7] }).unwrap().render_masked();
        assert_eq!(t, "a = 0.1\nb = 0.1\nc = [\n    0.3,\n    0.7,\n]\n");
        assert_eq!(mask_url_password("redis://h:6379"), "redis://h:6379");
        assert_eq!(mask_url_password("redis://pw@h"), "redis://[redacted]@h");
    }
}
