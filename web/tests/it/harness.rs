//! Starts ClickHouse and nats-server (testkit), seeds known installs the way production stores them
//! (the events published to the event stream, then the real `telemetry-writer` binary run until
//! ClickHouse holds them all; its migrations create the tables), and runs the web in-process (the same
//! `run` that `main` calls). Direct counts for the assertions come from plain SQL over `installs_final`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::{json, Value};
use testkit::clickhouse::ClickHouseServer;
use testkit::{poll_until, NatsServer, Process, Service};
use time::OffsetDateTime;
use uuid::Uuid;
use web::Config;

/// The key of public install ids in every test web.
pub const ID_KEY: &str = "test-id-key";

/// The public id of an install (what every answer shows instead of the real id).
pub fn public_id(execution_id: &str, started_at: i64) -> String {
    web::ids::IdHasher::new(ID_KEY).install(execution_id, started_at)
}

/// The hostile app name every escaping check uses.
pub const HOSTILE: &str = "<img src=x onerror=alert(1)>";

pub struct Stack {
    pub clickhouse: ClickHouseServer,
    pub nats: NatsServer,
}

pub struct Web {
    pub addr: SocketAddr,
    /// The ops port: `/metrics` is served there only.
    pub ops_addr: SocketAddr,
    pub http: reqwest::Client,
    service: Service,
}

impl Stack {
    /// Servers up, tables created, known installs stored.
    pub async fn seeded() -> Stack {
        Stack::with(seed_events(), seeds().len() as u64).await
    }

    /// Servers up, tables created, `events` (of `installs` installs) stored through the writer.
    pub async fn with(events: Vec<schema::Accepted>, installs: u64) -> Stack {
        let stack = Stack {
            clickhouse: ClickHouseServer::start().expect("clickhouse-server"),
            nats: NatsServer::start().expect("nats-server"),
        };
        stack.seed(events, installs).await;
        stack
    }

    /// Publishes the seed events as the edge does (subject, `Nats-Msg-Id`, wire form), then runs the
    /// ClickHouse writer until `events_final` and `installs_final` hold all of them, and stops it.
    async fn seed(&self, events: Vec<schema::Accepted>, installs: u64) {
        self.seed_expecting(&events, events.len() as u64, installs)
            .await;
    }

    /// [`Stack::seed`] of events that store as `stored` distinct events (fewer than published when some
    /// are second copies of one event under another `Nats-Msg-Id`).
    pub async fn seed_expecting(&self, events: &[schema::Accepted], stored: u64, installs: u64) {
        self.publish(events).await;
        self.store_expecting(stored, installs).await;
    }

    /// Publishes `events` as the edge does (subject, `Nats-Msg-Id`, wire form).
    pub async fn publish(&self, events: &[schema::Accepted]) {
        let client = fleet::nats::connect(&self.nats.url(), "test-seed")
            .await
            .expect("connect");
        let js = jetstream::new(client);
        let settings = schema::names::events_stream(
            schema::names::DEFAULT_EVENTS_MAX_AGE,
            schema::names::DEFAULT_EVENTS_MAX_BYTES,
            1,
        );
        fleet::nats::ensure_stream(&js, &settings)
            .await
            .expect("event stream");
        for accepted in events {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(schema::names::MSG_ID_HEADER, accepted.msg_id.as_str());
            let ack = js
                .publish_with_headers(
                    accepted.event.subject(),
                    headers,
                    accepted.event.to_json().into(),
                )
                .await
                .expect("publish")
                .await
                .expect("puback");
            assert!(!ack.duplicate, "seed {} published twice", accepted.msg_id);
        }
    }

    /// A ClickHouse writer on this stack's broker and database `telemetry`, with `flags` (name, value)
    /// after the common ones.
    pub fn writer(&self, flags: &[(&str, &str)]) -> Process {
        let mut command = Command::new(testkit::bin_path("telemetry-writer"));
        command
            .env_clear()
            .args(["--sink", "clickhouse"])
            .args(["--nats-url", &self.nats.url()])
            .args(["--clickhouse-url", &self.clickhouse.url()])
            .args(["--clickhouse-database", "telemetry"])
            // The oldest seeds are 45 days old: retention must keep them.
            .args(["--retention-days", "36500"])
            .args(["--batch-max-wait-ms", "50"])
            .args(["--log-level", "warn"]);
        for (flag, value) in flags {
            command.args([flag, value]);
        }
        Process::spawn(command.stdout(Stdio::null()).stderr(Stdio::inherit()))
    }

    /// Runs the ClickHouse writer until `events_final` holds `stored` events and `installs_final`
    /// `installs` installs, and stops it.
    async fn store_expecting(&self, stored: u64, installs: u64) {
        // Ready once every migration is applied: a writer stopped earlier would leave the schema half way.
        let (writer, ready) = self.writer_with_ops(&[]);
        poll_until(
            "the writer stored every seed event and install",
            Duration::from_secs(60),
            async || {
                let up = reqwest::get(&ready)
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !up {
                    return Err("writer not ready".to_string());
                }
                let count = |table: &str| {
                    self.clickhouse
                        .query(&format!("SELECT count() FROM telemetry.{table}"))
                        .ok()
                        .and_then(|n| n.trim().parse::<u64>().ok())
                };
                let (found, merged) = (count("events_final"), count("installs_final"));
                if found == Some(stored) && merged == Some(installs) {
                    Ok(())
                } else {
                    Err(format!("events_final {found:?}, installs_final {merged:?}"))
                }
            },
        )
        .await;
        stop_writer(writer).await;
    }

    /// A direct count (one number) from ClickHouse.
    pub fn count(&self, sql: &str) -> u64 {
        self.clickhouse
            .query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The public ids of the rows of `execution_id\ttoUInt32(started_at)` from ClickHouse, in order.
    pub fn public_ids(&self, sql: &str) -> Vec<String> {
        self.clickhouse
            .query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (id, at) = l.split_once('\t').expect("two columns");
                public_id(id, at.parse().expect("started_at"))
            })
            .collect()
    }

    /// The public id of one seeded install.
    pub fn public_id_of(&self, execution_id: &str) -> String {
        let ids = self.public_ids(&format!(
            "SELECT execution_id, toUInt32(started_at) FROM telemetry.installs_final \
             WHERE execution_id = '{execution_id}'"
        ));
        ids.into_iter().next().expect("seeded install")
    }

    /// Rows of `key\tcount` from ClickHouse, as (key, count), in the query's order.
    pub fn pairs(&self, sql: &str) -> Vec<(String, u64)> {
        self.clickhouse
            .query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, n) = l.rsplit_once('\t').expect("two columns");
                (unescape_tsv(k), n.parse().expect("count"))
            })
            .collect()
    }

    /// A web on this stack, once its `/readyz` says ready.
    pub async fn web(&self, tweak: impl FnOnce(&mut Config)) -> Web {
        let web = self.web_started(tweak).await;
        web.wait_ready().await;
        web
    }

    /// A web on this stack, started but not waited for.
    pub async fn web_started(&self, tweak: impl FnOnce(&mut Config)) -> Web {
        let mut config = Config::for_servers(&self.clickhouse.url(), &self.nats.url());
        config.cache_warmup = false;
        config.id_hash_key = fleet::Secret::new(ID_KEY);
        // The web reads as the read-only user, as deployed.
        config.clickhouse_user = testkit::clickhouse::READONLY_USER.into();
        let ops_port = testkit::free_port().expect("free port");
        config.ops_addr = SocketAddr::from(([127, 0, 0, 1], ops_port));
        tweak(&mut config);
        let ops_addr = config.ops_addr;
        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = fleet::nats::connect(&config.common.nats_url, "test-web")
            .await
            .expect("connect");
        let metrics = testkit::recorder(web::metrics::install_recorder);
        let service =
            Service::spawn(|stop| web::run(config, listener, client, Some(metrics), stop));
        Web {
            addr,
            ops_addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            service,
        }
    }

    /// Runs a ClickHouse writer with `flags` until its `/readyz` says ready (its migrations are done),
    /// then stops it.
    pub async fn migrate(&self, flags: &[(&str, &str)]) {
        let (writer, ready) = self.writer_with_ops(flags);
        poll_until("the writer migrated", Duration::from_secs(60), async || {
            reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        stop_writer(writer).await;
    }

    /// [`Stack::writer`] with an ops port of its own; also returns the URL of its `/readyz`.
    fn writer_with_ops(&self, flags: &[(&str, &str)]) -> (Process, String) {
        let ops = format!("127.0.0.1:{}", testkit::free_port().expect("port"));
        let mut all = vec![("--ops-addr", ops.as_str())];
        all.extend_from_slice(flags);
        (self.writer(&all), format!("http://{ops}/readyz"))
    }
}

/// Stops a writer process with SIGTERM and asserts that it exited cleanly.
pub async fn stop_writer(writer: Process) {
    let status = writer.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "telemetry-writer exited with {status}");
}

fn unescape_tsv(text: &str) -> String {
    text.replace("\\t", "\t")
        .replace("\\n", "\n")
        .replace("\\\\", "\\")
}

impl Web {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET that must answer 200 with JSON.
    pub async fn json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// GET that must answer 200; the body as text.
    pub async fn text(&self, path: &str) -> String {
        let resp = self.get(path).await;
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "GET {path}: {text}");
        text
    }

    /// The Prometheus text of the ops port (`/metrics` is not on the public port).
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.ops_addr);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), 200, "GET {url}");
        resp.text().await.expect("body")
    }

    /// Waits for `/readyz` to answer 200. Each probe asks ClickHouse with a 2 s limit, so on a loaded
    /// machine (other suites' servers beside this one) it can take many tries; a failure names the
    /// last answer.
    pub async fn wait_ready(&self) {
        poll_until("readyz 200", Duration::from_secs(120), async || {
            let resp = self
                .http
                .get(self.url("/readyz"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if status == 200 {
                Ok(())
            } else {
                Err(format!("{status}: {body}"))
            }
        })
        .await
    }

    /// Stops the web and returns how long `run` took to return.
    pub async fn shutdown(self) -> Duration {
        let started = Instant::now();
        self.service.stop().await.expect("run");
        started.elapsed()
    }
}

/// One seeded install.
struct Seed {
    app: &'static str,
    kind: &'static str,
    repo: &'static str,
    os: &'static str,
    /// Hours before now of the first event.
    hours_ago: i64,
    /// `None`: still in progress; else status and exit code as the script sends them.
    last: Option<(&'static str, u8)>,
}

const fn seed(
    app: &'static str,
    kind: &'static str,
    repo: &'static str,
    os: &'static str,
    hours_ago: i64,
    last: Option<(&'static str, u8)>,
) -> Seed {
    Seed {
        app,
        kind,
        repo,
        os,
        hours_ago,
        last,
    }
}

/// The known installs: several apps, repos, types and OSes; successes, failures with exit codes,
/// user aborts (exit 130), installs in progress and stuck; spread over 1 hour to 45 days ago.
fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    for i in 0..14 {
        let last = match i % 7 {
            0..=3 => Some(("success", 0)),
            4 => Some(("failed", 100)),
            5 => Some(("failed", 130)),
            _ => Some(("failed", 6)),
        };
        out.push(seed(
            "docker",
            "lxc",
            "ProxmoxVE",
            "debian",
            1 + i * 30,
            last,
        ));
    }
    for i in 0..6 {
        out.push(seed(
            HOSTILE,
            "lxc",
            "ProxmoxVE",
            "ubuntu",
            2 + i * 20,
            Some(("failed", 127)),
        ));
    }
    for i in 0..5 {
        let last = if i < 3 {
            Some(("success", 0))
        } else {
            Some(("failed", 203))
        };
        out.push(seed(
            "Home Assistant OS",
            "vm",
            "ProxmoxVED",
            "alpine",
            3 + i * 40,
            last,
        ));
    }
    out.push(seed(
        "post-pve-install",
        "pve",
        "external",
        "debian",
        5,
        Some(("success", 0)),
    ));
    out.push(seed("jellyfin", "lxc", "ProxmoxVE", "debian", 4, None));
    out.push(seed("jellyfin", "lxc", "ProxmoxVE", "debian", 30, None));
    out.push(seed(
        "jellyfin",
        "lxc",
        "ProxmoxVE",
        "debian",
        20 * 24,
        Some(("unknown", 124)),
    ));
    out.push(seed(
        "pihole",
        "lxc",
        "external",
        "debian",
        45 * 24,
        Some(("success", 0)),
    ));
    out.push(seed(
        "pihole",
        "lxc",
        "external",
        "debian",
        45 * 24 + 3,
        Some(("failed", 100)),
    ));
    out
}

/// How many installs [`seed_events`] makes.
pub fn seed_installs() -> u64 {
    seeds().len() as u64
}

/// The events of the seeded installs, as the edge accepts them (with their `Nats-Msg-Id`).
pub fn seed_events() -> Vec<schema::Accepted> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut events = Vec::new();
    for (n, s) in seeds().iter().enumerate() {
        let id = format!("seed-{n:03}");
        let start = now - s.hours_ago * 3600;
        let installing = json!({
            "random_id": id, "execution_id": id, "type": s.kind, "nsapp": s.app, "status": "installing",
            "os_type": s.os, "os_version": "12", "pve_version": if n % 2 == 0 { "8.4.1" } else { "9.0.3" },
            "core_count": 2 + (n % 3) * 2, "ram_size": 2048, "disk_size": 8 + n % 4,
            "method": "default", "repo_source": s.repo, "cpu_vendor": "intel", "gpu_vendor": "none"
        });
        events.push(accept(&installing, start, 0));
        let Some((status, code)) = s.last else {
            continue;
        };
        let mut last = json!({
            "random_id": id, "execution_id": id, "type": s.kind, "nsapp": s.app, "status": status,
            "exit_code": code, "install_duration": 60 + n * 10
        });
        if code != 0 {
            last["error"] = json!(format!(
                "Installing {}\nconnecting to 192.168.1.20\nE: failure {code} in step {n}\n<script>alert(1)</script>",
                s.app
            ));
        }
        events.push(accept(&last, start + 60 + n as i64 * 10, 1));
    }
    events
}

/// `body` as the edge accepts it at `at` (Unix seconds); `order` orders events of the same second.
pub fn accept(body: &Value, at: i64, order: u32) -> schema::Accepted {
    let received_at = OffsetDateTime::from_unix_timestamp(at).expect("time");
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, at as u64, order);
    schema::validate(
        body.to_string().as_bytes(),
        schema::Reception {
            event_id: Uuid::new_v7(ts),
            received_at,
        },
    )
    .unwrap_or_else(|e| panic!("seed rejected: {e}: {body}"))
}

/// True when `text` appears in `html` escaped the way askama escapes (`&#60;` …) or the DOM serializes
/// (`&lt;` …).
pub fn shows_escaped(html: &str, text: &str) -> bool {
    let askama = text
        .replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;");
    let dom = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    html.contains(&askama) || html.contains(&dom)
}
