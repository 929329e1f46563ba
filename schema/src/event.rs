//! The normalized event of contract §3 and §5 (`v: 1`), the closed value sets it uses, and the repair kinds
//! of §4. Only [`crate::validate`] builds an [`Event`] from client bytes; consumers deserialize it from the
//! stream, where only validated events are published.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::category::Category;

/// The schema version carried by every event.
pub const SCHEMA_VERSION: u8 = 1;

/// What was installed: a container, a VM, a host tool, an add-on inside a container, or a TurnKey
/// appliance container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Lxc,
    Vm,
    Pve,
    Addon,
    Turnkey,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Lxc, Kind::Vm, Kind::Pve, Kind::Addon, Kind::Turnkey];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lxc => "lxc",
            Kind::Vm => "vm",
            Kind::Pve => "pve",
            Kind::Addon => "addon",
            Kind::Turnkey => "turnkey",
        }
    }
}

/// Where an install is in its life. Ranked by [`Status::rank`]; the last four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Installing,
    Validation,
    Configuring,
    Success,
    Failed,
    Aborted,
    Unknown,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Installing,
        Status::Validation,
        Status::Configuring,
        Status::Success,
        Status::Failed,
        Status::Aborted,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Installing => "installing",
            Status::Validation => "validation",
            Status::Configuring => "configuring",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Aborted => "aborted",
            Status::Unknown => "unknown",
        }
    }

    /// installing < validation < configuring < final.
    pub fn rank(self) -> u8 {
        match self {
            Status::Installing => 0,
            Status::Validation => 1,
            Status::Configuring => 2,
            Status::Success | Status::Failed | Status::Aborted | Status::Unknown => 3,
        }
    }

    pub fn is_final(self) -> bool {
        self.rank() == 3
    }

    /// A final that says what happened (success, failed, aborted), as opposed to `unknown`.
    pub fn is_real_final(self) -> bool {
        matches!(self, Status::Success | Status::Failed | Status::Aborted)
    }
}

/// Which repository the script came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RepoSource {
    ProxmoxVE,
    ProxmoxVED,
    #[serde(rename = "external")]
    External,
}

impl RepoSource {
    pub const ALL: [RepoSource; 3] = [
        RepoSource::ProxmoxVE,
        RepoSource::ProxmoxVED,
        RepoSource::External,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RepoSource::ProxmoxVE => "ProxmoxVE",
            RepoSource::ProxmoxVED => "ProxmoxVED",
            RepoSource::External => "external",
        }
    }
}

/// Declares a closed, lower-case value set whose unrecognized values fold into `Unknown`.
macro_rules! folding_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Case-insensitive; anything unrecognized is `Unknown`.
            pub fn fold(text: &str) -> $name {
                let text = text.trim();
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(text))
                    .unwrap_or($name::Unknown)
            }
        }
    };
}

folding_enum!(
    /// CPU vendor as detected by the scripts.
    CpuVendor { Intel => "intel", Amd => "amd", Arm => "arm", Apple => "apple", Qualcomm => "qualcomm", Unknown => "unknown" }
);
folding_enum!(
    /// GPU vendor as detected by the scripts.
    GpuVendor { Intel => "intel", Amd => "amd", Nvidia => "nvidia", Unknown => "unknown" }
);
folding_enum!(
    /// How a GPU is handed to the guest.
    GpuPassthrough { Igpu => "igpu", Dgpu => "dgpu", Vgpu => "vgpu", None => "none", Unknown => "unknown" }
);

/// A known script bug that the rescue pass repaired (contract §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RescueKind {
    /// `"disk_size": ,` or `: }`: the field is treated as absent.
    EmptyValue,
    /// `32G`: the unit is dropped.
    UnitSuffix,
    /// Raw control characters inside a string were escaped.
    ControlChars,
    /// `\xNN` escapes became U+00NN.
    HexEscape,
    /// Invalid UTF-8 became U+FFFD.
    InvalidUtf8,
    /// Bytes after the first complete object were ignored.
    TrailingData,
    /// A quote inside a string that was not escaped was escaped.
    UnescapedQuote,
}

impl RescueKind {
    pub const ALL: [RescueKind; 7] = [
        RescueKind::EmptyValue,
        RescueKind::UnitSuffix,
        RescueKind::ControlChars,
        RescueKind::HexEscape,
        RescueKind::InvalidUtf8,
        RescueKind::TrailingData,
        RescueKind::UnescapedQuote,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RescueKind::EmptyValue => "empty_value",
            RescueKind::UnitSuffix => "unit_suffix",
            RescueKind::ControlChars => "control_chars",
            RescueKind::HexEscape => "hex_escape",
            RescueKind::InvalidUtf8 => "invalid_utf8",
            RescueKind::TrailingData => "trailing_data",
            RescueKind::UnescapedQuote => "unescaped_quote",
        }
    }
}

/// Proof that a value went through validation; it keeps struct literals out of other crates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed(());

/// One accepted event, normalized. Optional fields are `None` when absent, `null` or empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub v: u8,
    /// Time-ordered id (UUIDv7) given by the ingest edge.
    pub event_id: Uuid,
    /// Server time (UTC) at which the edge received the event.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub random_id: String,
    pub execution_id: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub nsapp: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_count: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pve_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_category: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_duration: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_vendor: Option<CpuVendor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_vendor: Option<GpuVendor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_passthrough: Option<GpuPassthrough>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_speed: Option<String>,
    pub repo_source: RepoSource,
    /// `owner/repo` the script was loaded from (newer scripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_slug: Option<String>,
    /// Whether the host has an ARM CPU (newer scripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_arm: Option<bool>,
    /// The host architecture, lower-cased (`amd64`, `arm64`, …; newer scripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The normalized decisive line of `error` (see [`crate::signature`]), on failed, aborted and unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_signature: Option<String>,
    /// True for events the fleet made itself (a stuck install timed out), not sent by a script.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synthetic: bool,
    /// The repairs the rescue pass made to the body (contract §4).
    #[serde(default)]
    pub rescued: Vec<RescueKind>,
    #[serde(skip)]
    pub(crate) sealed: Sealed,
}

impl Event {
    /// The subject this event is published on.
    pub fn subject(&self) -> String {
        crate::names::event_subject(self.kind, self.status)
    }

    /// The wire form: JSON, as published to the stream.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of plain fields into a Vec cannot fail. Sized for a usual event at once
        // rather than grown by doubling.
        let mut out = Vec::with_capacity(1536);
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }
}
