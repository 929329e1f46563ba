//! `telemetry-import`: brings the running service's history (a PocketBase collection, a ClickHouse table
//! of received events, or JSON lines) into the fleet's ClickHouse through the same rules as live
//! traffic. Each record becomes the body a script would have sent, `schema::validate` repairs,
//! normalizes, reclassifies and masks it, and the event is received at the record's `created` with a
//! deterministic id ([`map`]), so the writer's ClickHouse sink and its idempotent merge make a second
//! import change nothing. Three stages overlap: one task reads the source, another runs the batch read
//! before through the rules, and the batch before that is inserted. After each insert ClickHouse
//! confirmed, the checkpoint ([`state`]) moves on, so a killed import continues where it stopped.

pub mod config;
pub mod from_clickhouse;
pub mod from_file;
pub mod from_pocketbase;
pub mod map;
pub mod progress;
pub mod report;
pub mod state;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use schema::Event;
use tokio::sync::{mpsc, watch};

use crate::clickhouse::ClickHouseSink;
use crate::sink::{process, Outcome, Verdict};
pub use config::ImportConfig;
use config::{redact_url, SourceArgs};
use progress::{Progress, Unit};
pub use report::Report;
use state::{Checkpoint, Cursor, Installs, StateError};

/// Why an import stopped before the end of its source. Each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Source(String),
    #[error("target clickhouse: {0}")]
    Target(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("interrupted; the checkpoint is saved, the same command continues the import")]
    Interrupted,
}

impl ImportError {
    /// The process exit code (see [`config::EXIT_CODES`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            ImportError::State(_) => 1,
            ImportError::Source(_) => 3,
            ImportError::Target(_) => 4,
            ImportError::Interrupted => 5,
        }
    }
}

/// Why a call to a source failed, as far as retrying goes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Down, busy or timed out: retrying may help.
    #[error("{0}")]
    Transient(String),
    /// Not allowed with these credentials.
    #[error("{0}")]
    Denied(String),
    /// Retrying cannot help.
    #[error("{0}")]
    Permanent(String),
}

impl From<Failure> for ImportError {
    fn from(failure: Failure) -> ImportError {
        match failure {
            Failure::Transient(e) => ImportError::Source(format!("{e} (gave up retrying)")),
            Failure::Denied(e) | Failure::Permanent(e) => ImportError::Source(e),
        }
    }
}

/// Retries of something that is down: the fleet's backoff, for at most `retry_for` since the first
/// failure.
pub struct Patience {
    retry_for: Duration,
    since: Option<Instant>,
    delays: backon::ExponentialBackoff,
}

impl Patience {
    pub fn new(retry_for: Duration) -> Patience {
        Patience {
            retry_for,
            since: None,
            delays: fleet::retry::backoff(Duration::from_secs(5)).build(),
        }
    }

    /// After a failure of `what`: waits before the next try and says true, or says false when the
    /// failures have lasted `retry_for`.
    pub async fn wait(&mut self, what: &str, error: &str) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.retry_for {
            return false;
        }
        let wait = self.delays.next().unwrap_or(Duration::from_secs(5));
        tracing::warn!(what, error, ?wait, "unavailable, retrying");
        tokio::time::sleep(wait).await;
        true
    }
}

/// A text cut to at most `max` bytes at a character boundary, for messages.
pub fn cut(text: &str, max: usize) -> &str {
    schema::privacy::cut_at_char(text, max)
}

/// Records as read from a source, and the cursor after the last of them.
pub struct RawBatch {
    pub items: Vec<Result<map::Record, String>>,
    pub cursor: Cursor,
    /// Progress units this batch moved the cursor by (records, or bytes of a file).
    pub advanced: u64,
}

/// A batch ready to store: the events, the rejections, and where the source stands after it.
pub struct Prepared {
    pub events: Vec<Event>,
    pub rejected: Vec<String>,
    pub read: u64,
    pub cursor: Cursor,
    pub advanced: u64,
}

/// Runs every record of a batch through the edge's rules.
pub fn prepare(raw: RawBatch) -> Prepared {
    let read = raw.items.len() as u64;
    let mut events = Vec::with_capacity(raw.items.len());
    let mut rejected = Vec::new();
    for item in raw.items {
        match item.and_then(map::to_event) {
            Ok(event) => events.push(event),
            Err(kind) => rejected.push(kind),
        }
    }
    Prepared {
        events,
        rejected,
        read,
        cursor: raw.cursor,
        advanced: raw.advanced,
    }
}

/// An open source.
enum Source {
    Pocketbase(Box<from_pocketbase::PocketBaseReader>),
    Clickhouse(Box<from_clickhouse::ClickHouseReader>),
    File(Box<from_file::FileReader>),
}

impl Source {
    async fn open(
        args: &SourceArgs,
        cursor: &Cursor,
        retry_for: Duration,
    ) -> Result<Source, Failure> {
        Ok(match args {
            SourceArgs::Pocketbase(a) => Source::Pocketbase(Box::new(
                from_pocketbase::PocketBaseReader::open(a, cursor, retry_for).await?,
            )),
            SourceArgs::Clickhouse(a) => Source::Clickhouse(Box::new(
                from_clickhouse::ClickHouseReader::open(a, cursor, retry_for).await?,
            )),
            SourceArgs::File(a) => Source::File(Box::new(
                from_file::FileReader::open(&a.path, cursor).await?,
            )),
        })
    }

    fn unit(&self) -> Unit {
        match self {
            Source::File(_) => Unit::Bytes,
            _ => Unit::Records,
        }
    }

    async fn remaining(&mut self) -> Option<u64> {
        match self {
            Source::Pocketbase(r) => r.remaining().await,
            Source::Clickhouse(r) => r.remaining().await,
            Source::File(r) => r.remaining(),
        }
    }

    async fn next_batch(&mut self, max: usize) -> Result<Option<RawBatch>, Failure> {
        match self {
            Source::Pocketbase(r) => r.next_batch(max).await,
            Source::Clickhouse(r) => r.next_batch(max).await,
            Source::File(r) => r.next_batch(max).await,
        }
    }
}

/// Reads and prepares batches ahead of the writer, in two stages that overlap: this task reads the
/// source while another runs the batch read before through the edge's rules. Stops at the end, at an
/// error (passed on in order, after the batches before it), or when the writer is gone.
async fn read_ahead(
    mut source: Source,
    batch_size: usize,
    tx: mpsc::Sender<Result<Prepared, ImportError>>,
) {
    let (raw_tx, mut raw_rx) = mpsc::channel::<Result<(RawBatch, Duration), ImportError>>(1);
    let preparer = tokio::spawn(async move {
        while let Some(raw) = raw_rx.recv().await {
            let message = match raw {
                Ok((raw, read_in)) => {
                    let preparing = Instant::now();
                    match tokio::task::spawn_blocking(move || prepare(raw)).await {
                        Ok(prepared) => {
                            tracing::debug!(?read_in, prepared_in = ?preparing.elapsed(), "batch read");
                            Ok(prepared)
                        }
                        Err(e) => Err(ImportError::Source(format!("preparing a batch: {e}"))),
                    }
                }
                Err(e) => Err(e),
            };
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed {
                return;
            }
        }
    });
    loop {
        let reading = Instant::now();
        let message = match source.next_batch(batch_size).await {
            Ok(None) => break,
            Ok(Some(raw)) => Ok((raw, reading.elapsed())),
            Err(failure) => Err(failure.into()),
        };
        let failed = message.is_err();
        if raw_tx.send(message).await.is_err() || failed {
            break;
        }
    }
    drop(raw_tx);
    let _ = preparer.await;
}

/// The end of an import: its report, and why it stopped early, if it did.
pub struct Finished {
    pub report: Report,
    pub error: Option<ImportError>,
}

impl Finished {
    pub fn exit_code(&self) -> u8 {
        self.error.as_ref().map_or(0, ImportError::exit_code)
    }
}

/// Resolves once `stop` says true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One import run.
struct Import {
    config: ImportConfig,
    state_path: Option<PathBuf>,
    checkpoint: Checkpoint,
    installs: Installs,
    sink: ClickHouseSink,
    stop: watch::Receiver<bool>,
}

/// Imports the source of `config` until its end, an error, or `shutdown` (after which the batch in
/// hand is still stored and checkpointed).
pub async fn run(
    config: ImportConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Finished {
    let started = Instant::now();
    let source_key = config.source.key();
    let target = format!(
        "clickhouse {} database {}",
        redact_url(&config.target.clickhouse_url),
        config.target.clickhouse_database
    );
    let (stop_tx, stop) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let state_path = config.state_path();
    let opened = open_state(&config, state_path.as_deref(), &source_key);
    let (checkpoint, installs) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            signal.abort();
            return Finished {
                report: Report::new(source_key, target, &Default::default()),
                error: Some(e.into()),
            };
        }
    };
    let read_before = checkpoint.totals.read;
    let mut import = Import {
        sink: ClickHouseSink::new(&config.sink_settings()),
        config,
        state_path,
        checkpoint,
        installs,
        stop,
    };
    let result = import.run().await;
    signal.abort();
    let mut report = Report::new(source_key, target, &import.checkpoint.totals);
    report.complete = result.is_ok();
    report.read_this_run = import.checkpoint.totals.read - read_before;
    report.seconds_this_run = started.elapsed().as_secs_f64();
    Finished {
        report,
        error: result.err(),
    }
}

fn open_state(
    config: &ImportConfig,
    path: Option<&std::path::Path>,
    source: &str,
) -> Result<(Checkpoint, Installs), StateError> {
    let Some(path) = path else {
        if config.state.is_some() {
            tracing::warn!("stdin cannot be resumed, --state is ignored");
        }
        return Ok((Checkpoint::new(source), Installs::in_memory()));
    };
    let checkpoint = if config.restart {
        Checkpoint::new(source)
    } else {
        Checkpoint::load(path, source)?.unwrap_or_else(|| Checkpoint::new(source))
    };
    if checkpoint.cursor != Cursor::Start {
        tracing::info!(state = %path.display(), cursor = ?checkpoint.cursor, read = checkpoint.totals.read, "continuing from the checkpoint");
    }
    let installs = Installs::open(&state::installs_path(path), config.restart)?;
    Ok((checkpoint, installs))
}

impl Import {
    async fn run(&mut self) -> Result<(), ImportError> {
        self.migrate().await?;
        let retry_for = self.config.retry_for();
        let opened = tokio::select! {
            opened = Source::open(&self.config.source, &self.checkpoint.cursor, retry_for) => opened?,
            () = stopped(&mut self.stop) => return Err(ImportError::Interrupted),
        };
        let mut source = opened;
        let remaining = source.remaining().await;
        let mut progress = Progress::new(
            self.config.progress,
            Duration::from_secs(self.config.progress_secs),
            source.unit(),
            self.checkpoint.position,
            remaining.map(|r| r + self.checkpoint.position),
        );
        tracing::info!(source = %self.checkpoint.source, remaining = ?remaining, "import starting");
        // While a batch is inserted, the next waits here, one is prepared and one is read.
        let (tx, mut rx) = mpsc::channel(1);
        let reader = tokio::spawn(read_ahead(source, self.config.batch_size as usize, tx));
        let result = loop {
            let waiting = Instant::now();
            let message = tokio::select! {
                biased;
                () = stopped(&mut self.stop) => break Err(ImportError::Interrupted),
                message = rx.recv() => message,
            };
            let batch = match message {
                None => break Ok(()),
                Some(Err(e)) => break Err(e),
                Some(Ok(batch)) => batch,
            };
            let (events, waited) = (batch.events.len(), waiting.elapsed());
            let writing = Instant::now();
            if let Err(e) = self.store(batch).await {
                break Err(e);
            }
            tracing::debug!(events, ?waited, stored_in = ?writing.elapsed(), "batch stored");
            progress.update(self.checkpoint.position, &self.checkpoint.totals);
        };
        reader.abort();
        progress.finish();
        result
    }

    /// Creates and migrates the target like the writer does, retrying while ClickHouse is down.
    async fn migrate(&mut self) -> Result<(), ImportError> {
        let mut patience = Patience::new(self.config.retry_for());
        loop {
            let error = tokio::select! {
                r = self.sink.migrate() => match r {
                    Ok(_) => return Ok(()),
                    Err(e) => e.to_string(),
                },
                () = stopped(&mut self.stop) => return Err(ImportError::Interrupted),
            };
            let waited = tokio::select! {
                w = patience.wait("target clickhouse", &error) => w,
                () = stopped(&mut self.stop) => return Err(ImportError::Interrupted),
            };
            if !waited {
                return Err(ImportError::Target(format!("{error} (gave up retrying)")));
            }
        }
    }

    /// Writes one batch (retrying while ClickHouse is down), then moves the checkpoint past it.
    async fn store(&mut self, batch: Prepared) -> Result<(), ImportError> {
        let verdicts = self.write(&batch.events).await?;
        let totals = &mut self.checkpoint.totals;
        let mut stored = Vec::with_capacity(batch.events.len());
        for (event, verdict) in batch.events.iter().zip(&verdicts) {
            match verdict {
                Verdict::Stored => stored.push(event.execution_id.as_str()),
                Verdict::Poison(reason) => {
                    tracing::debug!(event_id = %event.event_id, reason, "clickhouse refused an event");
                    *totals
                        .rejected
                        .entry(map::STORE_REJECTED.to_string())
                        .or_default() += 1;
                }
            }
        }
        for kind in batch.rejected {
            *totals.rejected.entry(kind).or_default() += 1;
        }
        totals.read += batch.read;
        totals.written += stored.len() as u64;
        self.installs.add(stored)?;
        self.checkpoint.totals.installs = self.installs.len();
        self.checkpoint.cursor = batch.cursor;
        self.checkpoint.position += batch.advanced;
        if let Some(path) = &self.state_path {
            self.checkpoint.save(path)?;
        }
        Ok(())
    }

    async fn write(&mut self, events: &[Event]) -> Result<Vec<Verdict>, ImportError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut patience = Patience::new(self.config.retry_for());
        loop {
            let error = match process(&self.sink, events).await {
                Outcome::Done(verdicts) => return Ok(verdicts),
                Outcome::Retry(e) => e.to_string(),
            };
            let waited = tokio::select! {
                w = patience.wait("target clickhouse", &error) => w,
                () = stopped(&mut self.stop) => return Err(ImportError::Interrupted),
            };
            if !waited {
                return Err(ImportError::Target(format!("{error} (gave up retrying)")));
            }
        }
    }
}
