//! Error categories of contract §6: the closed set that every store and dashboard groups failures by.

use serde::{Deserialize, Serialize};

/// Why an install failed, as a closed set. `Shell`, `Preflight` and `Runtime` are never derived: they are
/// kept because scripts send them (`shell` for exit codes 1 and 2, `preflight` for failed checks before
/// the install, `runtime` from older scripts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Unknown,
    Network,
    Storage,
    Resource,
    Timeout,
    Config,
    Service,
    Permission,
    Apt,
    Proxmox,
    UserAborted,
    CommandNotFound,
    Signal,
    Build,
    Dependency,
    Database,
    Runtime,
    Shell,
    Preflight,
}

impl Category {
    /// Every category, in a stable order (for tables and tests).
    pub const ALL: [Category; 19] = [
        Category::Unknown,
        Category::Network,
        Category::Storage,
        Category::Resource,
        Category::Timeout,
        Category::Config,
        Category::Service,
        Category::Permission,
        Category::Apt,
        Category::Proxmox,
        Category::UserAborted,
        Category::CommandNotFound,
        Category::Signal,
        Category::Build,
        Category::Dependency,
        Category::Database,
        Category::Runtime,
        Category::Shell,
        Category::Preflight,
    ];

    /// The name used on the wire and in every store.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Unknown => "unknown",
            Category::Network => "network",
            Category::Storage => "storage",
            Category::Resource => "resource",
            Category::Timeout => "timeout",
            Category::Config => "config",
            Category::Service => "service",
            Category::Permission => "permission",
            Category::Apt => "apt",
            Category::Proxmox => "proxmox",
            Category::UserAborted => "user_aborted",
            Category::CommandNotFound => "command_not_found",
            Category::Signal => "signal",
            Category::Build => "build",
            Category::Dependency => "dependency",
            Category::Database => "database",
            Category::Runtime => "runtime",
            Category::Shell => "shell",
            Category::Preflight => "preflight",
        }
    }

    /// Parses a category name as scripts send it (any case, surrounding blanks ignored).
    pub fn parse(name: &str) -> Option<Category> {
        let name = name.trim();
        Category::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
