//! The exit-code table of contract §6: what each exit code a helper script can
//! report means, and which failure [`Category`] it is counted under. The ingest
//! side uses it to categorise failures whose script sent no category, the web
//! shows it as the exit-code reference table, and the dashboards label codes
//! with [`describe`]. Codes come from several sources that share one number
//! space: the shell (1-3, 124-146), curl (4-95), BSD sysexits (64-78), apt and
//! dpkg (100-102, 255), the scripts' own checks (103-123), systemd, Python,
//! databases, Proxmox VE (200-231), add-on tools, Node.js and application
//! install steps. Codes not in the table fall back to `Signal` when they lie in
//! 129..=191 (a process killed by signal `code - 128`) and to `Unknown`
//! otherwise.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use crate::category::Category;

/// What one exit code means and which category it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCodeInfo {
    pub code: u8,
    pub description: &'static str,
    pub category: Category,
}

/// Unlisted codes in this range are reported as "killed by signal `code - 128`".
const SIGNAL_CODES: RangeInclusive<u8> = 129..=191;

/// Builds one table row; keeps the table below readable.
const fn entry(code: u8, description: &'static str, category: Category) -> ExitCodeInfo {
    ExitCodeInfo {
        code,
        description,
        category,
    }
}

/// Every listed exit code, strictly ascending by code (lookups binary-search it).
/// The category of each code is normative: it must match contract §6 exactly.
#[rustfmt::skip]
static TABLE: [ExitCodeInfo; 162] = {
    use Category::*;
    [
        // Shell: generic failures.
        entry(1, "general error", Unknown),
        entry(2, "misuse of a shell builtin or shell syntax error", Unknown),
        entry(3, "general syntax or argument error", Unknown),
        // curl: transfer errors (see `man curl`, EXIT CODES).
        entry(4, "curl: required feature or protocol not supported", Network),
        entry(5, "curl: could not resolve proxy", Network),
        entry(6, "curl: could not resolve host (DNS lookup failed)", Network),
        entry(7, "curl: failed to connect to host", Network),
        entry(8, "curl: unexpected or unparsable server reply", Network),
        // The scripts' own environment check.
        entry(10, "unsupported environment (privileged or Docker mode required)", Config),
        // curl: transfer errors, continued.
        entry(16, "curl: HTTP/2 framing layer error", Network),
        entry(18, "curl: partial file, transfer ended early", Network),
        entry(22, "curl: server returned an HTTP error (4xx or 5xx)", Network),
        entry(23, "curl: write error (disk full or no permission)", Storage),
        entry(24, "curl: could not write downloaded data to local file", Storage),
        entry(25, "curl: upload failed", Network),
        entry(26, "curl: read error on local file", Storage),
        entry(27, "curl: out of memory", Resource),
        entry(28, "curl: operation timed out", Timeout),
        entry(30, "curl: FTP PORT command failed", Network),
        entry(32, "curl: FTP SIZE command failed", Network),
        entry(33, "curl: HTTP range request failed", Network),
        entry(34, "curl: HTTP POST request failed", Network),
        entry(35, "curl: SSL/TLS connect error (handshake failed)", Network),
        entry(36, "curl: could not resume download", Network),
        entry(39, "curl: LDAP search failed", Network),
        entry(44, "curl: internal error", Network),
        entry(45, "curl: could not bind to the requested network interface", Network),
        entry(46, "curl: bad password", Network),
        entry(47, "curl: too many redirects", Network),
        entry(48, "curl: unknown option passed to libcurl", Network),
        entry(51, "curl: server certificate or SSH host key not trusted", Network),
        entry(52, "curl: server sent an empty reply", Network),
        entry(55, "curl: failed sending network data", Network),
        entry(56, "curl: failed receiving network data (connection reset)", Network),
        entry(57, "curl: unrecoverable poll/select error", Network),
        entry(59, "curl: requested SSL cipher not usable", Network),
        entry(61, "curl: unrecognized transfer encoding", Network),
        entry(63, "curl: maximum file size exceeded", Network),
        // BSD sysexits (64-78); curl uses some of the same numbers, so the
        // descriptions follow the category the contract gives each code.
        entry(64, "usage error (wrong command-line arguments)", Config),
        entry(65, "input data has the wrong format", Unknown),
        entry(66, "input file missing or unreadable", Unknown),
        entry(67, "user unknown", Unknown),
        entry(68, "host name unknown", Network),
        entry(69, "service unavailable", Service),
        entry(70, "internal software error", Unknown),
        entry(71, "operating system error", Unknown),
        entry(72, "critical system file missing", Unknown),
        entry(73, "cannot create output file", Storage),
        entry(74, "input/output error", Storage),
        entry(75, "temporary network failure, try again later", Network),
        entry(76, "remote protocol error", Network),
        entry(77, "permission denied", Permission),
        entry(78, "curl: remote file not found", Network),
        // curl: transfer errors, continued.
        entry(79, "curl: SSH session error", Network),
        entry(92, "curl: HTTP/2 stream error", Network),
        entry(95, "curl: HTTP/3 layer error", Network),
        // apt and dpkg.
        entry(100, "apt: broken packages or unmet dependencies", Apt),
        entry(101, "apt: bad package sources or configuration", Apt),
        entry(102, "apt: dpkg lock held by another process", Apt),
        // The scripts' own validation and container setup (103-123).
        entry(103, "validation: shell is not bash", Config),
        entry(104, "validation: not running as root", Permission),
        entry(105, "validation: Proxmox VE version not supported", Config),
        entry(106, "validation: unsupported CPU architecture", Config),
        entry(107, "validation: kernel parameters could not be read", Config),
        entry(108, "validation: kernel limits exceeded", Config),
        entry(109, "no free container ID found", Proxmox),
        entry(110, "default variables could not be applied", Proxmox),
        entry(111, "app defaults file not available", Proxmox),
        entry(112, "invalid install menu option", Config),
        entry(113, "container under-provisioned, user aborted update", UserAborted),
        entry(114, "container storage too low, user aborted update", UserAborted),
        entry(115, "download of the install functions failed or was incomplete", Network),
        entry(116, "default network bridge vmbr0 not found", Config),
        entry(117, "container did not reach the running state", Proxmox),
        entry(118, "container got no IP address before the timeout", Timeout),
        entry(119, "no storage available for container root disks", Storage),
        entry(120, "no storage available for container templates", Storage),
        entry(121, "container network not ready, no IP after retries", Network),
        entry(122, "no internet connectivity, user declined to continue", UserAborted),
        entry(123, "local IP address detection failed", Network),
        // Shell: timeout(1), exec failures and death by signal (128 + N).
        entry(124, "command timed out (timeout expired)", Timeout),
        entry(125, "command could not be started", Config),
        entry(126, "command not executable (permission denied)", Permission),
        entry(127, "command not found", CommandNotFound),
        entry(128, "invalid argument to exit", Signal),
        entry(129, "hangup (SIGHUP), terminal closed", UserAborted),
        entry(130, "interrupted by Ctrl+C (SIGINT)", UserAborted),
        entry(131, "quit (SIGQUIT), core dumped", Signal),
        entry(132, "illegal instruction (SIGILL)", Signal),
        entry(134, "aborted (SIGABRT)", Signal),
        entry(137, "killed (SIGKILL), usually out of memory", Resource),
        entry(139, "segmentation fault (SIGSEGV)", Unknown),
        entry(141, "broken pipe (SIGPIPE)", Signal),
        entry(143, "terminated (SIGTERM)", Signal),
        entry(144, "killed by signal 16 (SIGSTKFLT on Linux)", Signal),
        entry(146, "killed by signal 18 (SIGCONT on Linux)", Signal),
        // systemd, permissions and builds.
        entry(150, "systemd: service failed to start", Service),
        entry(151, "systemd: service unit not found", Service),
        entry(152, "permission denied (EACCES)", Permission),
        entry(153, "build or compile step failed", Build),
        entry(154, "native addon build failed (node-gyp)", Build),
        // Python, pip and uv.
        entry(160, "python: virtual environment missing or broken", Dependency),
        entry(161, "python: dependency resolution failed", Dependency),
        entry(162, "python: package installation refused or aborted", Dependency),
        // Databases: PostgreSQL (170-173), MySQL/MariaDB (180-183), MongoDB (190-193).
        entry(170, "PostgreSQL: connection failed", Database),
        entry(171, "PostgreSQL: authentication failed", Database),
        entry(172, "PostgreSQL: database or user creation failed", Database),
        entry(173, "PostgreSQL: version check or upgrade failed", Database),
        entry(180, "MySQL/MariaDB: connection failed", Database),
        entry(181, "MySQL/MariaDB: authentication failed", Database),
        entry(182, "MySQL/MariaDB: database or user creation failed", Database),
        entry(183, "MySQL/MariaDB: version check or upgrade failed", Database),
        entry(190, "MongoDB: connection failed", Database),
        entry(191, "MongoDB: authentication failed", Database),
        entry(192, "MongoDB: database or user creation failed", Database),
        entry(193, "MongoDB: version check or upgrade failed", Database),
        // Proxmox VE: container creation, storage, templates, pct and qm.
        entry(200, "Proxmox: could not create lock file", Proxmox),
        entry(203, "container ID not set", Config),
        entry(204, "container OS type not set", Config),
        entry(205, "invalid container ID (must be 100 or higher)", Config),
        entry(206, "container ID already in use", Config),
        entry(207, "password contains unescaped special characters", Config),
        entry(208, "invalid network settings (DNS, MAC or address format)", Config),
        entry(209, "Proxmox: container creation failed", Proxmox),
        entry(210, "Proxmox: cluster not quorate", Proxmox),
        entry(211, "Proxmox: timed out waiting for the template lock", Timeout),
        entry(212, "Proxmox: storage type only holds VM disks, not containers", Proxmox),
        entry(213, "Proxmox: storage does not allow rootdir content", Proxmox),
        entry(214, "not enough free storage space", Storage),
        entry(215, "Proxmox: container created but not listed", Proxmox),
        entry(216, "Proxmox: rootfs entry missing from container config", Proxmox),
        entry(217, "storage not accessible", Storage),
        entry(218, "Proxmox: template file corrupted or incomplete", Proxmox),
        entry(219, "CephFS cannot hold container disks, use RBD", Storage),
        entry(220, "Proxmox: template path could not be resolved", Proxmox),
        entry(221, "Proxmox: template file not readable", Proxmox),
        entry(222, "Proxmox: template download failed", Proxmox),
        entry(223, "Proxmox: template missing after download", Proxmox),
        entry(224, "backup storage (PBS) cannot hold container disks", Storage),
        entry(225, "Proxmox: no template for the requested OS and version", Proxmox),
        entry(226, "Proxmox: pct or qm command failed", Proxmox),
        entry(231, "Proxmox: LXC stack upgrade failed", Proxmox),
        // Tools and add-on scripts.
        entry(232, "tool must run on the Proxmox host, not inside a container", Config),
        entry(233, "application not installed, nothing to update", Config),
        entry(234, "Proxmox: no containers found", Proxmox),
        entry(235, "backup or restore failed", Storage),
        entry(236, "required hardware not detected", Config),
        entry(237, "add-on dependency installation failed", Dependency),
        entry(238, "OS or distribution not supported by this add-on", Config),
        // Node.js and npm.
        entry(239, "npm/Node.js: runtime or dependency failure", Dependency),
        entry(243, "Node.js: JavaScript heap out of memory", Resource),
        entry(245, "Node.js: invalid command-line option", Config),
        entry(246, "Node.js: internal JavaScript parse error", Unknown),
        entry(247, "Node.js: fatal internal error", Unknown),
        entry(248, "Node.js: invalid native addon or N-API failure", Unknown),
        entry(249, "npm/pnpm/yarn: unknown fatal error", Unknown),
        // Application install and update.
        entry(250, "download of the application release failed", Network),
        entry(251, "extraction of the application archive failed", Storage),
        entry(252, "unknown application error", Unknown),
        entry(253, "invalid application configuration", Config),
        entry(254, "user cancelled the update", UserAborted),
        // dpkg.
        entry(255, "dpkg: fatal internal error", Apt),
    ]
};

/// Finds a listed code.
fn find(code: u8) -> Option<&'static ExitCodeInfo> {
    TABLE
        .binary_search_by_key(&code, |info| info.code)
        .ok()
        .map(|index| &TABLE[index])
}

/// Describes an exit code in a few words. Listed codes get their own description,
/// unlisted codes in 129..=191 read "killed by signal N" (N = code - 128), 0 is
/// "success" and anything else is "unknown exit code".
pub fn describe(code: u8) -> Cow<'static, str> {
    if code == 0 {
        return Cow::Borrowed("success");
    }
    match find(code) {
        Some(info) => Cow::Borrowed(info.description),
        None if SIGNAL_CODES.contains(&code) => {
            Cow::Owned(format!("killed by signal {}", code - 128))
        }
        None => Cow::Borrowed("unknown exit code"),
    }
}

/// The category an exit code is counted under: the listed one, `Signal` for
/// unlisted codes in 129..=191, `Unknown` for everything else (0 included;
/// callers never ask for 0 as a failure).
pub fn category(code: u8) -> Category {
    match find(code) {
        Some(info) => info.category,
        None if SIGNAL_CODES.contains(&code) => Category::Signal,
        None => Category::Unknown,
    }
}

/// Every listed code in ascending order (for the web's exit-code table and tests).
pub fn table() -> &'static [ExitCodeInfo] {
    &TABLE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contract §6, copied row by row as written there, independently of `TABLE`.
    const CONTRACT: &[(Category, &str)] = &[
        (Category::Unknown, "1-3, 65-67, 70-72, 139, 246-249, 252"),
        (Category::Network, "4-8, 16, 18, 22, 25, 30, 32-36, 39, 44-48, 51, 52, 55-57, 59, 61, 63, 68, 75, 76, 78, 79, 92, 95, 115, 121, 123, 250"),
        (Category::Storage, "23, 24, 26, 73, 74, 119, 120, 214, 217, 219, 224, 235, 251"),
        (Category::Resource, "27, 137, 243"),
        (Category::Timeout, "28, 118, 124, 211"),
        (Category::Config, "10, 64, 103, 105-108, 112, 116, 125, 203-208, 232, 233, 236, 238, 245, 253"),
        (Category::Service, "69, 150, 151"),
        (Category::Permission, "77, 104, 126, 152"),
        (Category::Apt, "100-102, 255"),
        (Category::Proxmox, "109-111, 117, 200, 209, 210, 212, 213, 215, 216, 218, 220-223, 225, 226, 231, 234"),
        (Category::UserAborted, "113, 114, 122, 129, 130, 254"),
        (Category::CommandNotFound, "127"),
        (Category::Signal, "128, 131, 132, 134, 141, 143, 144, 146"),
        (Category::Build, "153, 154"),
        (Category::Dependency, "160-162, 237, 239"),
        (Category::Database, "170-173, 180-183, 190-193"),
    ];

    /// Expands a contract list such as "4-8, 16, 18" into its codes.
    fn codes(list: &str) -> Vec<u8> {
        list.split(',')
            .flat_map(|part| {
                let part = part.trim();
                let (lo, hi) = part.split_once('-').unwrap_or((part, part));
                let lo: u8 = lo.trim().parse().expect("contract code");
                let hi: u8 = hi.trim().parse().expect("contract code");
                assert!(lo <= hi, "contract range {part} is reversed");
                lo..=hi
            })
            .collect()
    }

    /// What contract §6 says a code's category is, including the fallbacks.
    fn contract_category(code: u8) -> Category {
        CONTRACT
            .iter()
            .find(|(_, list)| codes(list).contains(&code))
            .map(|&(category, _)| category)
            .unwrap_or(if (129..=191).contains(&code) {
                Category::Signal
            } else {
                Category::Unknown
            })
    }

    fn check(code: u8, expected: Category) {
        assert_eq!(category(code), expected, "category of exit code {code}");
    }

    #[test]
    fn range_edges() {
        // Both ends of every range of contract §6 and the codes just outside them.
        let cases: &[(Category, &[u8])] = &[
            (
                Category::Unknown,
                &[
                    0, 1, 3, 9, 11, 15, 17, 19, 21, 29, 31, 37, 38, 40, 43, 49, 50, 53, 54, 58, 60,
                    62, 65, 67, 70, 72, 80, 91, 93, 94, 96, 99, 139, 194, 199, 201, 202, 227, 230,
                    240, 242, 244, 246, 249, 252,
                ],
            ),
            (
                Category::Network,
                &[
                    4, 8, 16, 18, 22, 25, 30, 32, 36, 39, 44, 48, 51, 52, 55, 57, 59, 61, 63, 68,
                    75, 76, 78, 79, 92, 95, 115, 121, 123, 250,
                ],
            ),
            (
                Category::Storage,
                &[23, 24, 26, 73, 74, 119, 120, 214, 217, 219, 224, 235, 251],
            ),
            (Category::Resource, &[27, 137, 243]),
            (Category::Timeout, &[28, 118, 124, 211]),
            (
                Category::Config,
                &[
                    10, 64, 103, 105, 108, 112, 116, 125, 203, 208, 232, 233, 236, 238, 245, 253,
                ],
            ),
            (Category::Service, &[69, 150, 151]),
            (Category::Permission, &[77, 104, 126, 152]),
            (Category::Apt, &[100, 102, 255]),
            (
                Category::Proxmox,
                &[
                    109, 111, 117, 200, 209, 210, 212, 213, 215, 216, 218, 220, 223, 225, 226, 231,
                    234,
                ],
            ),
            (Category::UserAborted, &[113, 114, 122, 129, 130, 254]),
            (Category::CommandNotFound, &[127]),
            (
                Category::Signal,
                &[
                    128, 131, 132, 133, 134, 135, 136, 138, 140, 141, 142, 143, 144, 145, 146, 147,
                    149, 155, 159, 163, 169, 174, 179, 184, 189,
                ],
            ),
            (Category::Build, &[153, 154]),
            (Category::Dependency, &[160, 162, 237, 239]),
            (
                Category::Database,
                &[170, 173, 180, 183, 190, 191, 192, 193],
            ),
        ];
        for &(expected, members) in cases {
            for &code in members {
                check(code, expected);
            }
        }
    }

    #[test]
    fn every_code_matches_the_contract() {
        for code in 0..=255u8 {
            check(code, contract_category(code));
        }
    }

    #[test]
    fn every_contract_code_is_listed_exactly_once() {
        let mut seen = [0u32; 256];
        for (_, list) in CONTRACT {
            for code in codes(list) {
                seen[code as usize] += 1;
            }
        }
        for code in 0..=255u8 {
            let in_contract = seen[code as usize];
            assert!(
                in_contract <= 1,
                "code {code} is in {in_contract} contract rows"
            );
            let in_table = TABLE.iter().filter(|info| info.code == code).count();
            assert_eq!(
                in_table as u32, in_contract,
                "code {code} in TABLE vs contract"
            );
        }
        assert_eq!(TABLE.len(), 162);
    }

    #[test]
    fn table_is_strictly_ascending() {
        for pair in TABLE.windows(2) {
            assert!(
                pair[0].code < pair[1].code,
                "codes {} and {} are out of order or duplicated",
                pair[0].code,
                pair[1].code
            );
        }
        assert_eq!(table(), &TABLE[..]);
    }

    #[test]
    fn descriptions_are_non_empty() {
        for info in table() {
            let text = info.description;
            assert!(
                !text.trim().is_empty(),
                "code {} has no description",
                info.code
            );
            assert!(
                text.is_ascii(),
                "code {} description is not ASCII",
                info.code
            );
            assert!(
                !text.ends_with('.'),
                "code {} description ends in a period",
                info.code
            );
            assert_eq!(describe(info.code), text);
        }
    }

    #[test]
    fn unlisted_codes_are_described() {
        assert_eq!(describe(140), "killed by signal 12");
        assert_eq!(describe(133), "killed by signal 5");
        assert_eq!(describe(189), "killed by signal 61");
        assert_eq!(describe(0), "success");
        assert_eq!(describe(9), "unknown exit code");
        assert_eq!(describe(194), "unknown exit code");
        assert_eq!(category(0), Category::Unknown);
    }

    #[test]
    fn listed_codes_keep_their_own_description() {
        assert_eq!(
            describe(121),
            "container network not ready, no IP after retries"
        );
        assert_eq!(
            describe(122),
            "no internet connectivity, user declined to continue"
        );
        assert_eq!(describe(191), "MongoDB: authentication failed");
        assert_eq!(category(191), Category::Database);
        assert_eq!(category(137), Category::Resource);
        assert_eq!(category(139), Category::Unknown);
    }
}
