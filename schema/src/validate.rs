//! Validation and normalization of contract §3: the only way to turn client bytes into an [`Event`].
//! It runs the rescue pass, checks every rule of the field table in document order (so the first bad
//! field is the one named), normalizes strings and enums, reclassifies finals and masks the log.

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::category::Category;
use crate::event::{CpuVendor, Event, GpuPassthrough, GpuVendor, Kind, RepoSource, Sealed, Status};
use crate::exit_codes;
use crate::privacy::{self, MAX_ERROR_BYTES};
use crate::rescue;

/// Longest id (`random_id`, `execution_id`).
pub const MAX_ID_LEN: usize = 64;
/// Longest `nsapp`.
pub const MAX_NSAPP_BYTES: usize = 64;
/// Longest os_type, os_version, pve_version and method.
pub const MAX_SHORT_BYTES: usize = 32;
/// Longest cpu_model and gpu_model.
pub const MAX_MODEL_BYTES: usize = 64;
/// Longest ram_speed.
pub const MAX_RAM_SPEED_BYTES: usize = 16;
/// Longest repo_slug (`owner/repo`); a longer one is dropped, not cut.
pub const MAX_REPO_SLUG_BYTES: usize = 128;
/// Longest arch.
pub const MAX_ARCH_BYTES: usize = 16;

/// The kind of a rejection, as named on the wire (`"error"` of the JSON answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    InvalidJson,
    InvalidField,
    MissingField,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::InvalidJson => "invalid_json",
            RejectCode::InvalidField => "invalid_field",
            RejectCode::MissingField => "missing_field",
        }
    }
}

/// Why a body was not accepted; becomes a 400 with a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
    pub field: Option<&'static str>,
}

impl Rejection {
    fn field(code: RejectCode, field: &'static str, message: String) -> Rejection {
        Rejection {
            code,
            message,
            field: Some(field),
        }
    }
}

/// What the server decided about an event besides the event itself; the edge counts these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclassified {
    /// `failed`/`unknown` with exit code 0.
    ToSuccess,
    /// Exit code 129/130 or an interrupt in the log.
    ToAborted,
}

/// An accepted event with what the edge needs to publish and count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event: Event,
    /// `Nats-Msg-Id`: `<execution_id>:<status as sent>`.
    pub msg_id: String,
    /// Fields the contract does not know (ignored).
    pub unknown_fields: usize,
    /// A status value the contract does not know was stored as `unknown`.
    pub status_coerced: bool,
    /// Fields whose value broke their rule and was dropped instead of rejecting the body (`repo_slug`,
    /// `has_arm`), in document order.
    pub dropped: Vec<&'static str>,
    pub reclassified: Option<Reclassified>,
}

/// Server-side facts attached to an event at reception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reception {
    pub event_id: Uuid,
    pub received_at: OffsetDateTime,
}

impl Reception {
    /// Now, with a fresh time-ordered id.
    pub fn now() -> Reception {
        Reception {
            event_id: Uuid::now_v7(),
            received_at: OffsetDateTime::now_utc(),
        }
    }
}

/// Fields as read from the body, before the cross-field rules.
#[derive(Default)]
struct Fields {
    random_id: Option<String>,
    execution_id: Option<String>,
    kind: Option<Kind>,
    nsapp: Option<String>,
    status: Option<(Status, bool)>,
    ct_type: Option<u8>,
    disk_size: Option<u32>,
    core_count: Option<u16>,
    ram_size: Option<u32>,
    os_type: Option<String>,
    os_version: Option<String>,
    pve_version: Option<String>,
    method: Option<String>,
    exit_code: Option<u8>,
    error: Option<String>,
    error_category: Option<Category>,
    install_duration: Option<u32>,
    duration: Option<u32>,
    cpu_vendor: Option<CpuVendor>,
    cpu_model: Option<String>,
    gpu_vendor: Option<GpuVendor>,
    gpu_model: Option<String>,
    gpu_passthrough: Option<GpuPassthrough>,
    ram_speed: Option<String>,
    repo_source: Option<RepoSource>,
    repo_slug: Option<String>,
    has_arm: Option<bool>,
    arch: Option<String>,
    unknown: usize,
    dropped: Vec<&'static str>,
}

/// Turns a request body into an accepted event, or says which field is to blame.
pub fn validate(body: &[u8], reception: Reception) -> Result<Accepted, Rejection> {
    let parsed = rescue::parse_pairs(body).map_err(|e| Rejection {
        code: RejectCode::InvalidJson,
        message: format!(
            "the body is not valid JSON at byte {}: {}",
            e.offset, e.reason
        ),
        field: None,
    })?;
    // As a JSON object: a key sent twice counts once, at its first place, with its last value.
    let mut pairs = parsed.pairs;
    let mut last: [Option<usize>; Field::COUNT] = [None; Field::COUNT];
    let mut order = [Field::RandomId; Field::COUNT];
    let mut fields = 0;
    let mut unknown: Vec<&str> = Vec::new();
    for (i, (key, _)) in pairs.iter().enumerate() {
        match Field::of(key) {
            Some(field) => {
                let first = last[field as usize].is_none();
                last[field as usize] = Some(i);
                if first {
                    order[fields] = field;
                    fields += 1;
                }
            }
            None if !unknown.contains(&key.as_ref()) => unknown.push(key),
            None => {}
        }
    }
    let mut f = Fields {
        unknown: unknown.len(),
        ..Fields::default()
    };
    for &field in &order[..fields] {
        if let Some(i) = last[field as usize] {
            read_field(&mut f, field, &mut pairs[i].1)?;
        }
    }

    let random_id = f.random_id.ok_or_else(|| missing("random_id"))?;
    let execution_id = f.execution_id.unwrap_or_else(|| random_id.clone());
    let kind = f.kind.ok_or_else(|| missing("type"))?;
    let nsapp = f.nsapp.ok_or_else(|| missing("nsapp"))?;
    let (sent_status, status_coerced) = f.status.ok_or_else(|| missing("status"))?;

    let mut event = Event {
        v: crate::event::SCHEMA_VERSION,
        event_id: reception.event_id,
        received_at: reception.received_at,
        random_id,
        execution_id,
        kind,
        nsapp,
        status: sent_status,
        ct_type: f.ct_type,
        disk_size: f.disk_size,
        core_count: f.core_count,
        ram_size: f.ram_size,
        os_type: f.os_type,
        os_version: f.os_version,
        pve_version: f.pve_version,
        method: f.method,
        exit_code: f.exit_code,
        error: f.error,
        error_category: f.error_category,
        install_duration: f.install_duration.or(f.duration),
        cpu_vendor: f.cpu_vendor,
        cpu_model: f.cpu_model,
        gpu_vendor: f.gpu_vendor,
        gpu_model: f.gpu_model,
        gpu_passthrough: f.gpu_passthrough,
        ram_speed: f.ram_speed,
        repo_source: f.repo_source.unwrap_or(RepoSource::ProxmoxVE),
        repo_slug: f.repo_slug,
        has_arm: f.has_arm,
        arch: f.arch,
        error_signature: None,
        synthetic: false,
        rescued: parsed.rescued,
        sealed: Sealed::default(),
    };
    let reclassified = reclassify(&mut event);
    if matches!(
        event.status,
        Status::Failed | Status::Aborted | Status::Unknown
    ) {
        event.error_signature = event.error.as_deref().and_then(crate::signature::signature);
    }
    Ok(Accepted {
        msg_id: crate::names::msg_id(&event.execution_id, sent_status, &event.random_id),
        event,
        unknown_fields: f.unknown,
        status_coerced,
        dropped: f.dropped,
        reclassified,
    })
}

fn missing(field: &'static str) -> Rejection {
    Rejection::field(
        RejectCode::MissingField,
        field,
        format!("the field {field} is required"),
    )
}

fn invalid(field: &'static str, rule: impl std::fmt::Display) -> Rejection {
    Rejection::field(
        RejectCode::InvalidField,
        field,
        format!("the field {field} {rule}"),
    )
}

/// The fields of the field table, each read once per body by [`read_field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    RandomId,
    ExecutionId,
    Type,
    Nsapp,
    Status,
    CtType,
    DiskSize,
    CoreCount,
    RamSize,
    OsType,
    OsVersion,
    PveVersion,
    Method,
    ExitCode,
    Error,
    ErrorCategory,
    InstallDuration,
    Duration,
    CpuVendor,
    GpuVendor,
    GpuPassthrough,
    CpuModel,
    GpuModel,
    RamSpeed,
    RepoSource,
    RepoSlug,
    HasArm,
    Arch,
}

impl Field {
    /// How many fields the table has.
    const COUNT: usize = 28;

    /// The field a key names, None for a key the contract does not know.
    fn of(key: &str) -> Option<Field> {
        Some(match key {
            "random_id" => Field::RandomId,
            "execution_id" => Field::ExecutionId,
            "type" => Field::Type,
            "nsapp" => Field::Nsapp,
            "status" => Field::Status,
            "ct_type" => Field::CtType,
            "disk_size" => Field::DiskSize,
            "core_count" => Field::CoreCount,
            "ram_size" => Field::RamSize,
            "os_type" => Field::OsType,
            "os_version" => Field::OsVersion,
            "pve_version" => Field::PveVersion,
            "method" => Field::Method,
            "exit_code" => Field::ExitCode,
            "error" => Field::Error,
            "error_category" => Field::ErrorCategory,
            "install_duration" => Field::InstallDuration,
            "duration" => Field::Duration,
            "cpu_vendor" => Field::CpuVendor,
            "gpu_vendor" => Field::GpuVendor,
            "gpu_passthrough" => Field::GpuPassthrough,
            "cpu_model" => Field::CpuModel,
            "gpu_model" => Field::GpuModel,
            "ram_speed" => Field::RamSpeed,
            "repo_source" => Field::RepoSource,
            "repo_slug" => Field::RepoSlug,
            "has_arm" => Field::HasArm,
            "arch" => Field::Arch,
            _ => return None,
        })
    }
}

fn read_field(f: &mut Fields, field: Field, value: &mut Value) -> Result<(), Rejection> {
    match field {
        Field::RandomId => f.random_id = id("random_id", value)?,
        Field::ExecutionId => f.execution_id = id("execution_id", value)?,
        Field::Type => f.kind = kind(value)?,
        Field::Nsapp => f.nsapp = nsapp(value)?,
        Field::Status => f.status = status(value)?,
        Field::CtType => f.ct_type = int("ct_type", value, 0, 2)?.map(|n| n as u8),
        Field::DiskSize => f.disk_size = int("disk_size", value, 0, 100_000)?.map(|n| n as u32),
        Field::CoreCount => f.core_count = int("core_count", value, 0, 256)?.map(|n| n as u16),
        Field::RamSize => f.ram_size = int("ram_size", value, 0, 1_048_576)?.map(|n| n as u32),
        // Lower-cased before the cut: lower-casing can lengthen a string (U+0130 is 2 bytes, "i̇" 3).
        Field::OsType => {
            f.os_type =
                raw_string("os_type", value)?.and_then(|s| clean(s.to_lowercase(), MAX_SHORT_BYTES))
        }
        Field::OsVersion => f.os_version = text("os_version", value, MAX_SHORT_BYTES)?,
        Field::PveVersion => f.pve_version = text("pve_version", value, MAX_SHORT_BYTES)?,
        Field::Method => f.method = text("method", value, MAX_SHORT_BYTES)?,
        Field::ExitCode => f.exit_code = int("exit_code", value, 0, 255)?.map(|n| n as u8),
        Field::Error => f.error = error(value)?,
        Field::ErrorCategory => {
            f.error_category =
                text("error_category", value, MAX_SHORT_BYTES)?.and_then(|s| Category::parse(&s))
        }
        Field::InstallDuration => {
            f.install_duration = int("install_duration", value, 0, 86_400)?.map(|n| n as u32)
        }
        Field::Duration => f.duration = int("duration", value, 0, 86_400)?.map(|n| n as u32),
        Field::CpuVendor => {
            f.cpu_vendor = text("cpu_vendor", value, MAX_SHORT_BYTES)?.map(|s| CpuVendor::fold(&s))
        }
        Field::GpuVendor => {
            f.gpu_vendor = text("gpu_vendor", value, MAX_SHORT_BYTES)?.map(|s| GpuVendor::fold(&s))
        }
        Field::GpuPassthrough => {
            f.gpu_passthrough =
                text("gpu_passthrough", value, MAX_SHORT_BYTES)?.map(|s| GpuPassthrough::fold(&s))
        }
        Field::CpuModel => f.cpu_model = text("cpu_model", value, MAX_MODEL_BYTES)?,
        Field::GpuModel => f.gpu_model = text("gpu_model", value, MAX_MODEL_BYTES)?,
        Field::RamSpeed => f.ram_speed = text("ram_speed", value, MAX_RAM_SPEED_BYTES)?,
        Field::RepoSource => f.repo_source = Some(repo_source(value)?),
        Field::RepoSlug => {
            f.repo_slug = kept_or_dropped(&mut f.dropped, "repo_slug", repo_slug(value))
        }
        Field::HasArm => f.has_arm = kept_or_dropped(&mut f.dropped, "has_arm", has_arm(value)),
        Field::Arch => {
            f.arch =
                raw_string("arch", value)?.and_then(|s| clean(s.to_lowercase(), MAX_ARCH_BYTES))
        }
    }
    Ok(())
}

/// A string as sent (taken out of `value`), or a number written without quotes (`"os_version": 12`).
/// `null` is absent.
fn raw_string(field: &'static str, value: &mut Value) -> Result<Option<String>, Rejection> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(std::mem::take(s))),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(invalid(field, "must be a string")),
    }
}

/// A free-text field: CR/LF become spaces, other control characters are dropped, blanks trimmed, cut
/// to `max` bytes at a character boundary. Empty is absent.
fn text(field: &'static str, value: &mut Value, max: usize) -> Result<Option<String>, Rejection> {
    Ok(raw_string(field, value)?.and_then(|s| clean(s, max)))
}

fn clean(s: String, max: usize) -> Option<String> {
    // Nothing to replace, drop, trim or cut (the usual case): the string as sent, without copies.
    if s.len() <= max && s.trim().len() == s.len() && !s.chars().any(char::is_control) {
        return (!s.is_empty()).then_some(s);
    }
    let flat: String = s
        .chars()
        .filter_map(|c| match c {
            '\r' | '\n' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    let trimmed = privacy::cut_at_char(flat.trim(), max).trim_end();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

fn id(field: &'static str, value: &mut Value) -> Result<Option<String>, Rejection> {
    let Some(s) = raw_string(field, value)? else {
        return Ok(None);
    };
    let s = s.trim();
    if !crate::ids::valid_id(s) {
        return Err(invalid(
            field,
            "must be 1 to 64 characters of letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
        ));
    }
    Ok(Some(s.to_string()))
}

fn kind(value: &mut Value) -> Result<Option<Kind>, Rejection> {
    let Some(s) = raw_string("type", value)? else {
        return Ok(None);
    };
    match s.trim().to_ascii_lowercase().as_str() {
        "lxc" => Ok(Some(Kind::Lxc)),
        "vm" => Ok(Some(Kind::Vm)),
        "pve" | "tool" => Ok(Some(Kind::Pve)),
        "addon" => Ok(Some(Kind::Addon)),
        "turnkey" => Ok(Some(Kind::Turnkey)),
        _ => Err(invalid(
            "type",
            "must be one of lxc, vm, pve, addon, turnkey",
        )),
    }
}

fn nsapp(value: &mut Value) -> Result<Option<String>, Rejection> {
    let Some(s) = raw_string("nsapp", value)? else {
        return Ok(None);
    };
    let flat = s.replace(['\r', '\n'], " ");
    let trimmed = flat.trim();
    if trimmed.is_empty() {
        return Err(invalid("nsapp", "must not be empty"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid("nsapp", "must not contain control characters"));
    }
    Ok(Some(
        privacy::cut_at_char(trimmed, MAX_NSAPP_BYTES)
            .trim_end()
            .to_string(),
    ))
}

/// The status and whether an unrecognized value was folded into `unknown`.
fn status(value: &mut Value) -> Result<Option<(Status, bool)>, Rejection> {
    let Some(s) = raw_string("status", value)? else {
        return Ok(None);
    };
    let status = match s.trim().to_ascii_lowercase().as_str() {
        "installing" => Status::Installing,
        "validation" => Status::Validation,
        "configuring" => Status::Configuring,
        "success" | "sucess" | "done" => Status::Success,
        "failed" => Status::Failed,
        "aborted" => Status::Aborted,
        "unknown" => Status::Unknown,
        _ => return Ok(Some((Status::Unknown, true))),
    };
    Ok(Some((status, false)))
}

/// An integer in `min..=max`: a JSON integer, an integral float (`8.0`) or a quoted integer (`"8"`).
fn int(field: &'static str, value: &Value, min: i64, max: i64) -> Result<Option<i64>, Rejection> {
    let out_of_range = || {
        invalid(
            field,
            format_args!("must be an integer from {min} to {max}"),
        )
    };
    let n = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i
            } else if n.is_u64() {
                return Err(out_of_range());
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !f.is_finite() {
                    return Err(invalid(field, "must be a whole number"));
                }
                if f < min as f64 || f > max as f64 {
                    return Err(out_of_range());
                }
                f as i64
            }
        }
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| {
            invalid(
                field,
                format_args!(
                    "must be an integer from {min} to {max}, not {:?}",
                    privacy::cut_at_char(s, 32)
                ),
            )
        })?,
        _ => return Err(invalid(field, "must be a number")),
    };
    if n < min || n > max {
        return Err(out_of_range());
    }
    Ok(Some(n))
}

/// The install log: kept multi-line, masked, cut to the first line and the end.
fn error(value: &mut Value) -> Result<Option<String>, Rejection> {
    let Some(s) = raw_string("error", value)? else {
        return Ok(None);
    };
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    Ok(Some(mask_and_cut(trimmed)))
}

/// Masks a log and cuts it to [`MAX_ERROR_BYTES`], so that the stored text is stable: masking it again
/// changes nothing. A cut at a byte count can split a token (`-10.1.2.3` reads as a version and stays,
/// but a cut right after its `-` leaves `10.1.2.3` alone), so the cut text is masked again, and cut
/// again if masking made it longer (IPv6), until nothing changes; two rounds settle every case seen.
fn mask_and_cut(log: &str) -> String {
    let mut text = privacy::mask(log).into_owned();
    if text.len() <= MAX_ERROR_BYTES {
        return text;
    }
    for _ in 0..4 {
        let cut = privacy::cut_log(&text, MAX_ERROR_BYTES);
        let again = privacy::mask(&cut);
        if again == cut {
            return cut.into_owned();
        }
        text = again.into_owned();
    }
    privacy::cut_log(&text, MAX_ERROR_BYTES).into_owned()
}

/// A field read leniently: `Ok(value)` is kept (`None` when absent, `null` or empty), `Err(())` means the
/// value broke the rule, so it is dropped and the field is recorded in `dropped`.
fn kept_or_dropped<T>(
    dropped: &mut Vec<&'static str>,
    field: &'static str,
    read: Result<Option<T>, ()>,
) -> Option<T> {
    read.unwrap_or_else(|()| {
        dropped.push(field);
        None
    })
}

/// `owner/repo`: two non-empty parts of letters, digits, `.`, `_` and `-`, at most
/// [`MAX_REPO_SLUG_BYTES`] in all. Anything else (a URL, a third part, a number, a boolean) is dropped.
fn repo_slug(value: &Value) -> Result<Option<String>, ()> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.trim(),
        _ => return Err(()),
    };
    if text.is_empty() {
        return Ok(None);
    }
    if is_repo_slug(text) {
        Ok(Some(text.to_string()))
    } else {
        Err(())
    }
}

/// The rule of `repo_slug`: `^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$`, at most [`MAX_REPO_SLUG_BYTES`].
pub fn is_repo_slug(text: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    text.len() <= MAX_REPO_SLUG_BYTES
        && text
            .split_once('/')
            .is_some_and(|(owner, repo)| part(owner) && part(repo))
}

/// `true`/`false`, the strings `"true"`/`"false"` (any case), or the numbers `1`/`0`.
fn has_arm(value: &Value) -> Result<Option<bool>, ()> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(Some(true)),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(Some(false)),
        Value::Number(n) if n.as_f64() == Some(1.0) => Ok(Some(true)),
        Value::Number(n) if n.as_f64() == Some(0.0) => Ok(Some(false)),
        _ => Err(()),
    }
}

fn repo_source(value: &mut Value) -> Result<RepoSource, Rejection> {
    let s = raw_string("repo_source", value)?.unwrap_or_default();
    Ok(match s.trim() {
        "" => RepoSource::ProxmoxVE,
        s if s.eq_ignore_ascii_case("ProxmoxVE") => RepoSource::ProxmoxVE,
        s if s.eq_ignore_ascii_case("ProxmoxVED") => RepoSource::ProxmoxVED,
        _ => RepoSource::External,
    })
}

/// Phrases of an error text that mean the user interrupted the install (contract §3, step 2), matched
/// case-insensitively anywhere in the text.
const INTERRUPT_PHRASES: [&str; 8] = [
    "sigint",
    "ctrl+c",
    "ctrl-c",
    "sighup",
    "aborted by user",
    "user abort",
    "cancelled by user",
    "no changes have been made",
];

/// The phrase groups of contract §3, step 3: for a final whose category is still unknown after the exit
/// code, the first group with a phrase in the (lower-cased) error text names the category.
const TEXT_CATEGORIES: [(Category, &[&str]); 8] = [
    (
        Category::Resource,
        &[
            "out of memory",
            "oom-kill",
            "cannot allocate memory",
            "killed process",
            "memory exhausted",
        ],
    ),
    (
        Category::Storage,
        &[
            "no space left",
            "disk full",
            "quota exceeded",
            "write error",
        ],
    ),
    (
        Category::Network,
        &[
            "could not resolve",
            "connection refused",
            "connection timed out",
            "network is unreachable",
            "temporary failure in name resolution",
            "failed to connect",
            "tls handshake",
            "ssl certificate",
            "curl:",
            "wget:",
        ],
    ),
    (
        Category::Permission,
        &[
            "permission denied",
            "operation not permitted",
            "eacces",
            "must be run as root",
        ],
    ),
    (
        Category::Apt,
        &[
            "unable to locate package",
            "broken packages",
            "unmet dependencies",
            "dpkg was interrupted",
            "held broken packages",
            "e: package",
            "apt-get",
            "dpkg:",
        ],
    ),
    (Category::CommandNotFound, &["command not found"]),
    (Category::Timeout, &["timed out", "timeout"]),
    (
        Category::Database,
        &[
            "prisma",
            "migration.sql",
            "datasource",
            "sqlite database",
            "could not find the migration",
        ],
    ),
];

fn interrupted(lower_error: &str) -> bool {
    INTERRUPT_PHRASES.iter().any(|p| lower_error.contains(p))
}

fn category_of_text(lower_error: &str) -> Option<Category> {
    TEXT_CATEGORIES
        .iter()
        .find(|(_, phrases)| phrases.iter().any(|p| lower_error.contains(p)))
        .map(|(category, _)| *category)
}

/// The reclassification of contract §3, in its order, on `failed`/`unknown` (and the defaults of
/// `aborted`): 1. exit 0 → success; 2. exit 129/130 or an interrupt phrase in the error → aborted;
/// 3. category missing or unknown → the exit code's, else the first phrase group of the error text;
/// 4. missing error → the exit code's description.
fn reclassify(e: &mut Event) -> Option<Reclassified> {
    if !matches!(e.status, Status::Failed | Status::Unknown | Status::Aborted) {
        return None;
    }
    let mut reclassified = None;
    // The phrases are ASCII: ASCII lower-casing finds them, keeps byte offsets and costs no table look-up.
    let lower_error = e.error.as_deref().map(str::to_ascii_lowercase);
    match e.status {
        Status::Failed | Status::Unknown => {
            if e.exit_code == Some(0) {
                e.status = Status::Success;
                e.error = None;
                e.error_category = None;
                return Some(Reclassified::ToSuccess);
            }
            if matches!(e.exit_code, Some(129 | 130))
                || lower_error.as_deref().is_some_and(interrupted)
            {
                e.status = Status::Aborted;
                e.error_category = Some(Category::UserAborted);
                reclassified = Some(Reclassified::ToAborted);
            }
        }
        _ => {
            if e.error_category.is_none() {
                e.error_category = Some(Category::UserAborted);
            }
        }
    }
    if matches!(e.error_category, None | Some(Category::Unknown)) {
        let by_code = e.exit_code.map_or(Category::Unknown, exit_codes::category);
        let by_text = || lower_error.as_deref().and_then(category_of_text);
        e.error_category = Some(match by_code {
            Category::Unknown => by_text().unwrap_or(Category::Unknown),
            known => known,
        });
    }
    if let (None, Some(code)) = (&e.error, e.exit_code) {
        if code != 0 {
            e.error = Some(format!("Exit code {code}: {}", exit_codes::describe(code)));
        }
    }
    reclassified
}
