//! The fleet on a real JetStream cluster: three nats-server processes on loopback, the event stream at
//! three replicas, the edge and the ClickHouse writer connected with every node's URL, and simulated
//! script traffic (retrying as the scripts do, recording every answer). Mid-load the node that leads
//! the event stream is killed with SIGKILL and started again. Afterwards every event that got a 2xx is
//! in ClickHouse exactly once, and every acknowledged install has one row in `installs_final`.

use std::time::Duration;

use async_nats::jetstream;
use clap::Parser;
use schema::names::EVENTS_STREAM;
use testkit::clickhouse::ClickHouseServer;
use testkit::{poll_until, poll_until_every, NatsCluster, Service};
use traffic::verify::{check, ClickHouse, Ledger};

/// The index of the node that leads the event stream now.
async fn stream_leader(js: &jetstream::Context, cluster: &NatsCluster) -> usize {
    let mut stream = js.get_stream(EVENTS_STREAM).await.expect("event stream");
    let info = stream.info().await.expect("stream info");
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader");
    (0..cluster.len())
        .find(|i| leader == format!("n{}", i + 1))
        .unwrap_or_else(|| panic!("unknown leader {leader}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_and_doubles_nothing_at_three_replicas() {
    let mut cluster = NatsCluster::start(3).expect("nats cluster");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let urls = cluster.urls();

    // The edge, in this process, against every node, creating the stream at R3.
    let mut ingest_config = ingest::Config::for_nats(&urls);
    ingest_config.stream_replicas = 3;
    ingest_config.rate_limit_rpm = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let edge = format!("http://{}", listener.local_addr().expect("addr"));
    let client = fleet::nats::connect(&urls, "test-ingest")
        .await
        .expect("connect");
    let edge_client = client.clone();
    let ingest =
        Service::spawn(|stop| ingest::run(ingest_config, listener, edge_client, None, stop));
    let http = reqwest::Client::new();
    poll_until("the edge is ready", Duration::from_secs(30), async || {
        http.get(format!("{edge}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let js = jetstream::new(client.clone());
    let info = js
        .get_stream(EVENTS_STREAM)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(info.config.num_replicas, 3, "the event stream is at R3");

    // The ClickHouse writer, in this process.
    let mut writer_config = writer::Config::for_nats(&urls);
    writer_config.sink = writer::config::SinkChoice::Clickhouse;
    writer_config.clickhouse_url = ch.url();
    writer_config.batch_size = 500;
    writer_config.batch_max_wait_ms = 50;
    writer_config.write_timeout_secs = 5;
    writer_config.ack_wait_secs = 8;
    writer_config.retry_max_delay_ms = 500;
    let writer_client = fleet::nats::connect(&urls, "test-writer")
        .await
        .expect("connect");
    let writer = Service::spawn(|stop| {
        writer::run(
            writer_config,
            writer_client,
            None,
            writer::Statuses::default(),
            stop,
        )
    });

    // Script traffic for 16 s, retrying as the scripts do, every answer recorded.
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record.tsv");
    let url = format!("{edge}/telemetry");
    let record_arg = record.to_string_lossy().into_owned();
    let simulate = traffic::simulate::Config::parse_from([
        "telemetry-simulate",
        "--url",
        &url,
        "--rate",
        "120",
        "--duration",
        "16",
        "--timeout",
        "5",
        "--retry-failed",
        "--record",
        &record_arg,
        "--quiet",
    ]);
    let load = tokio::spawn(traffic::simulate::run(simulate, std::future::pending()));

    // Mid-load: kill the stream's leader, let the others elect a new one, start it again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let leader = stream_leader(&js, &cluster).await;
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.restart(leader).expect("restart the killed node");
    let summary = load.await.expect("join").expect("simulation");
    assert!(summary.accepted > 500, "too little load: {summary:?}");
    assert_eq!(summary.unfinished, 0, "{summary:?}");

    // Every replica current again: the restarted node caught up.
    poll_until_every(
        "all three replicas current",
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || {
            let Ok(mut stream) = js.get_stream(EVENTS_STREAM).await else {
                return false;
            };
            let Ok(info) = stream.info().await else {
                return false;
            };
            info.cluster.as_ref().is_some_and(|c| {
                c.leader.is_some() && c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current)
            })
        },
    )
    .await;

    // What the edge acknowledged against what ClickHouse holds, once the writer caught up.
    let ledger = Ledger::read(&record).expect("record");
    let clickhouse = ClickHouse {
        http: http.clone(),
        url: ch.url(),
        user: "default".into(),
        password: String::new(),
        database: "telemetry".into(),
    };
    let report = poll_until_every(
        "every acknowledged event in clickhouse",
        Duration::from_secs(40),
        Duration::from_millis(500),
        async || match check(&ledger, &clickhouse, None).await {
            Ok(report) if report.lost() == 0 => Ok(report),
            Ok(report) => Err(format!(
                "\n{}\nleader killed: n{}\nits log:\n{}",
                report.table(),
                leader + 1,
                cluster.log(leader)
            )),
            Err(e) => Err(format!("checking clickhouse: {e:#}")),
        },
    )
    .await;
    println!("{}", report.table());
    assert!(
        report.passed(),
        "{}\nleader killed: n{}\nits log:\n{}",
        report.table(),
        leader + 1,
        cluster.log(leader)
    );
    assert_eq!(
        report.rows[0].acknowledged,
        report.rows[0].stored,
        "{}",
        report.table()
    );
    assert!(report.rows[1].acknowledged > 100, "{}", report.table());

    writer.stop().await.expect("writer");
    ingest.stop().await.expect("ingest");
}
