//! Tidy: rules of the codebase that a reviewer should not have to check by eye, run over the repo's
//! files with every test run. Each rule lists every offender (path and line) in its failure:
//!
//! - every Rust file opens with a `//!` paragraph that says what it is for;
//! - stream, subject and KV bucket names are spelled once, in `schema/src/names.rs` (read at test time):
//!   a string literal elsewhere that is such a name, or a subject under the names' common prefix, fails;
//! - a service crate (ingest, writer, aggregator, alerter, web) does not depend on another service crate
//!   in any dependency table of its manifest; services share code through `schema` and `fleet`.
//!
//! Files come from `git ls-files` (tracked and new, not ignored), or, outside a git checkout, from a walk
//! that skips `target`, `.tools`, `.stack` and hidden folders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates that are deployed on their own and must not depend on one another.
const SERVICES: [&str; 5] = ["ingest", "writer", "aggregator", "alerter", "web"];

/// Where the shared names are defined, relative to the repo root.
const NAMES_FILE: &str = "schema/src/names.rs";

/// Folders a directory walk never enters.
const SKIPPED_DIRS: [&str; 3] = ["target", ".tools", ".stack"];

#[test]
fn every_rust_file_opens_with_a_doc_paragraph() {
    let root = repo_root();
    let offenders = missing_docs(&root, &rust_files(&root));
    assert!(
        offenders.is_empty(),
        "files that do not open with a `//!` paragraph saying what they are for:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn stream_subject_and_bucket_names_are_spelled_only_in_schema_names() {
    let root = repo_root();
    let names = Names::parse(&read(&root.join(NAMES_FILE)));
    assert!(
        names.exact.len() >= 6 && !names.subject_roots.is_empty(),
        "too few names read from {NAMES_FILE}: {names:?}"
    );
    let offenders = spelled_names(&root, &rust_files(&root), &names);
    assert!(
        offenders.is_empty(),
        "name literals outside {NAMES_FILE} (use its constants or `schema::names::event_subject`):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn service_crates_do_not_depend_on_each_other() {
    let root = repo_root();
    let offenders = service_dependencies(&root);
    assert!(
        offenders.is_empty(),
        "service crates that depend on another service crate (move the shared code to schema or \
         fleet, or run the other service as a process in tests):\n{}",
        offenders.join("\n")
    );
}

/// Each rule finds what is planted in a small repo of its own, and passes what is clean there.
#[test]
fn every_rule_finds_planted_offenders() {
    let real = Names::parse(&read(&repo_root().join(NAMES_FILE)));
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    let stream = real.exact.iter().next().expect("a name");
    let subject = format!("{}anything.at.all", real.subject_roots[0]);
    write(NAMES_FILE, &read(&repo_root().join(NAMES_FILE)));
    write("ingest/src/lib.rs", "//! Fine.\n\npub fn f() {}\n");
    write(
        "ingest/src/bare.rs",
        "\n// a plain comment first\npub fn f() {}\n",
    );
    write(
        "writer/tests/it/names.rs",
        &format!(
            "//! Spells names.\n\nfn f() {{\n    let a = \"{stream}\";\n    let b = r#\"{subject}\"#;\n    \
             // \"{stream}\" in a comment is fine\n    let c = \"writes to {stream}, by op\";\n}}\n"
        ),
    );
    write("target/debug/build/out.rs", "no doc, skipped\n");
    write(
        "web/Cargo.toml",
        "[package]\nname = \"web\"\n\n[dependencies]\nschema.workspace = true\n\n\
         [dev-dependencies]\nwriter = { path = \"../writer\" }\n",
    );
    write(
        "alerter/Cargo.toml",
        "[package]\nname = \"alerter\"\n\n[target.'cfg(unix)'.build-dependencies.stats]\n\
         package = \"aggregator\"\npath = \"../aggregator\"\n",
    );
    write(
        "ingest/Cargo.toml",
        "[package]\nname = \"ingest\"\n\n[dependencies]\nfleet = { path = \"../fleet\" }\n",
    );

    let files = rust_files(root);
    assert_eq!(
        files,
        [
            "ingest/src/bare.rs",
            "ingest/src/lib.rs",
            "schema/src/names.rs",
            "writer/tests/it/names.rs"
        ]
        .map(PathBuf::from),
        "the walk skips target"
    );
    assert_eq!(
        missing_docs(root, &files),
        ["ingest/src/bare.rs: opens with `// a plain comment first`"]
    );
    assert_eq!(
        spelled_names(root, &files, &real),
        [
            format!("writer/tests/it/names.rs:4: \"{stream}\""),
            format!("writer/tests/it/names.rs:5: \"{subject}\""),
        ]
    );
    assert_eq!(
        service_dependencies(root),
        [
            "alerter/Cargo.toml [target.'cfg(unix)'.build-dependencies.stats]: alerter depends on the \
             service crate aggregator",
            "web/Cargo.toml [dev-dependencies]: web depends on the service crate writer",
        ]
    );
}

// ------------------------------------------------------------------------------------------------
// The repo and its files

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `.rs` files of the repo, relative to `root`, sorted.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut files = git_files(root).unwrap_or_else(|| {
        let mut files = Vec::new();
        walk(root, Path::new(""), &mut files);
        files
    });
    files.retain(|f| f.extension().is_some_and(|e| e == "rs") && root.join(f).is_file());
    files.sort();
    files.dedup();
    files
}

/// Tracked and new (not ignored) files, when `root` is a git checkout and git runs.
fn git_files(root: &Path) -> Option<Vec<PathBuf>> {
    if !root.join(".git").exists() {
        return None;
    }
    let out = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(
        text.split('\0')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
    )
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = rel.join(&*name);
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !name.starts_with('.') && !SKIPPED_DIRS.contains(&&*name) {
                walk(root, &path, out);
            }
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Rule: a `//!` paragraph first

fn missing_docs(root: &Path, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|file| {
            let text = read(&root.join(file));
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            match first {
                Some(line) if line.starts_with("//!") => None,
                Some(line) => Some(format!("{}: opens with `{line}`", file.display())),
                None => Some(format!("{}: empty", file.display())),
            }
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Rule: names spelled once

/// The names of `schema/src/names.rs` that a literal elsewhere must not spell.
#[derive(Debug)]
struct Names {
    /// Stream and bucket names, subject prefixes and wildcards: a literal equal to one is an offender.
    exact: BTreeSet<String>,
    /// The common start of the subjects, up to its last dot (`telemetry.v1.`): a literal that starts
    /// with it is a subject spelled out.
    subject_roots: Vec<String>,
}

impl Names {
    /// Reads `pub const NAME: &str = "value";` lines whose NAME is a stream, subject or bucket name.
    fn parse(source: &str) -> Names {
        let mut exact = BTreeSet::new();
        let mut subjects = Vec::new();
        for line in source.lines() {
            let Some(rest) = line.trim().strip_prefix("pub const ") else {
                continue;
            };
            let Some((ident, value)) = rest.split_once(": &str = \"") else {
                continue;
            };
            let Some(value) = value.strip_suffix("\";") else {
                continue;
            };
            let is_subject = ident.ends_with("_SUBJECTS") || ident.ends_with("_SUBJECT_PREFIX");
            if is_subject || ident.ends_with("_STREAM") || ident.ends_with("_BUCKET") {
                exact.insert(value.to_string());
            }
            if is_subject {
                subjects.push(value.to_string());
            }
        }
        Names {
            exact,
            subject_roots: subject_roots(&subjects),
        }
    }

    fn spelled_by(&self, literal: &str) -> bool {
        self.exact.contains(literal) || self.subject_roots.iter().any(|r| literal.starts_with(r))
    }
}

/// The common prefix of `subjects` up to and including its last dot; each subject's own prefix up to
/// its last dot when they share none.
fn subject_roots(subjects: &[String]) -> Vec<String> {
    let up_to_last_dot = |s: &str| s.rfind('.').map(|i| s[..=i].to_string());
    let common = subjects.iter().skip(1).fold(
        subjects.first().cloned().unwrap_or_default(),
        |common, s| {
            let len = common
                .chars()
                .zip(s.chars())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a.len_utf8())
                .sum();
            common[..len].to_string()
        },
    );
    match up_to_last_dot(&common) {
        Some(root) => vec![root],
        None => subjects.iter().filter_map(|s| up_to_last_dot(s)).collect(),
    }
}

fn spelled_names(root: &Path, files: &[PathBuf], names: &Names) -> Vec<String> {
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| *f != Path::new(NAMES_FILE)) {
        for (line, literal) in string_literals(&read(&root.join(file))) {
            if names.spelled_by(&literal) {
                offenders.push(format!("{}:{line}: {literal:?}", file.display()));
            }
        }
    }
    offenders
}

/// The string literals of Rust source (plain, raw, byte and C strings), unescaped, with the line each
/// starts on. Comments, char literals and lifetimes are skipped.
fn string_literals(source: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Advances over chars[i..to], counting lines.
    let skip = |i: &mut usize, line: &mut usize, to: usize| {
        *line += chars[*i..to.min(chars.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count();
        *i = to.min(chars.len());
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len());
            skip(&mut i, &mut line, end);
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            let mut j = i;
            while j < chars.len() {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            skip(&mut i, &mut line, j);
        } else if c == '"' {
            let start = line;
            let (text, end) = quoted(&chars, i + 1);
            out.push((start, text));
            skip(&mut i, &mut line, end);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 3..chars.len())
                    .find(|&j| chars[j] == '\'')
                    .map_or(chars.len(), |j| j + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                i + 3
            } else {
                i + 1
            };
            skip(&mut i, &mut line, end);
        } else if c.is_alphanumeric() || c == '_' {
            let end = (i..chars.len())
                .find(|&j| !(chars[j].is_alphanumeric() || chars[j] == '_'))
                .unwrap_or(chars.len());
            let word: String = chars[i..end].iter().collect();
            let after = chars.get(end).copied();
            if matches!(word.as_str(), "r" | "br" | "cr") && matches!(after, Some('#' | '"')) {
                let hashes = (end..chars.len()).take_while(|&j| chars[j] == '#').count();
                let open = end + hashes;
                if chars.get(open) == Some(&'"') {
                    let start = line;
                    let close: String = std::iter::once('"')
                        .chain(std::iter::repeat_n('#', hashes))
                        .collect();
                    let body: String = chars[open + 1..].iter().collect();
                    let len = body.find(&close).unwrap_or(body.len());
                    let text: String = body[..len].to_string();
                    let end = open + 1 + text.chars().count() + close.chars().count();
                    out.push((start, text));
                    skip(&mut i, &mut line, end);
                    continue;
                }
            }
            if matches!(word.as_str(), "b" | "c") && after == Some('"') {
                let start = line;
                let (text, end) = quoted(&chars, end + 1);
                out.push((start, text));
                skip(&mut i, &mut line, end);
                continue;
            }
            // `b'x'` is a byte literal: the loop sees its quote next.
            skip(&mut i, &mut line, end);
        } else {
            i += 1;
            line += usize::from(c == '\n');
        }
    }
    out
}

/// The unescaped text of a `"…"` literal whose content starts at `from`, and the index after its
/// closing quote.
fn quoted(chars: &[char], from: usize) -> (String, usize) {
    let mut text = String::new();
    let mut j = from;
    while j < chars.len() {
        match chars[j] {
            '"' => return (text, j + 1),
            '\\' => {
                let escaped = chars.get(j + 1).copied().unwrap_or('\\');
                j += 2;
                match escaped {
                    'n' => text.push('\n'),
                    't' => text.push('\t'),
                    'r' => text.push('\r'),
                    '0' => text.push('\0'),
                    '\n' => {
                        while j < chars.len() && chars[j].is_whitespace() {
                            j += 1;
                        }
                    }
                    'x' => {
                        let hex: String = chars[j..(j + 2).min(chars.len())].iter().collect();
                        text.extend(u8::from_str_radix(&hex, 16).ok().map(char::from));
                        j += 2;
                    }
                    'u' => {
                        let close = (j..chars.len()).find(|&k| chars[k] == '}');
                        let hex: String = chars[(j + 1).min(chars.len())..close.unwrap_or(j)]
                            .iter()
                            .collect();
                        text.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
                        j = close.map_or(chars.len(), |k| k + 1);
                    }
                    other => text.push(other),
                }
            }
            other => {
                text.push(other);
                j += 1;
            }
        }
    }
    (text, j)
}

// ------------------------------------------------------------------------------------------------
// Rule: no service depends on another

/// Every dependency of a service crate on another service crate, as `manifest [table]: message`.
fn service_dependencies(root: &Path) -> Vec<String> {
    let mut offenders = Vec::new();
    for service in SERVICES {
        let manifest = format!("{service}/Cargo.toml");
        let Ok(text) = std::fs::read_to_string(root.join(&manifest)) else {
            continue;
        };
        for dep in dependencies(&text) {
            if let Some(other) = dep.service().filter(|other| *other != service) {
                offenders.push(format!(
                    "{manifest} [{}]: {service} depends on the service crate {other}",
                    dep.table
                ));
            }
        }
    }
    offenders
}

/// One dependency entry of a manifest.
#[derive(Debug, Default, PartialEq)]
struct Dependency {
    /// The table it is declared in, as written (`dependencies`, `target.'cfg(unix)'.dev-dependencies`,
    /// `dependencies.foo`).
    table: String,
    /// The name it is used under.
    key: String,
    /// `package = "…"`, when renamed.
    package: Option<String>,
    /// `path = "…"`, when a path dependency.
    path: Option<String>,
}

impl Dependency {
    /// The service crate this entry points at, by package name, key or path folder.
    fn service(&self) -> Option<&'static str> {
        let folder = self
            .path
            .as_deref()
            .map(|p| p.trim_end_matches('/').rsplit('/').next().unwrap_or(p));
        let name = self.package.as_deref().unwrap_or(&self.key);
        SERVICES
            .into_iter()
            .find(|s| name == *s || folder == Some(*s))
    }
}

/// The dependency entries of a manifest, from a line reading of its TOML: `[*dependencies]` tables
/// (also under `target.…`) with `name = …` lines, and `[*dependencies.name]` tables with their
/// `package`/`path` keys. Inline tables are single lines in TOML, so `package` and `path` of an entry
/// are on its line.
fn dependencies(manifest: &str) -> Vec<Dependency> {
    let mut out: Vec<Dependency> = Vec::new();
    // The current table: not a dependency table, one of entries, or one entry of its own.
    enum Table {
        Other,
        Entries(String),
        Entry,
    }
    let mut table = Table::Other;
    let mut lines = manifest.lines();
    while let Some(raw) = lines.next() {
        let mut line = strip_comment(raw).trim().to_string();
        if line.is_empty() {
            continue;
        }
        // A value whose brackets span lines (an array inside an inline table) is read as one line.
        while open_brackets(&line) > 0 {
            let Some(more) = lines.next() else {
                break;
            };
            line.push(' ');
            line.push_str(strip_comment(more).trim());
        }
        let line = line.as_str();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let header = header.trim_end_matches(']').trim().to_string();
            let parts = split_dotted(&header);
            let kind = parts.iter().rposition(|p| is_dependency_table(p));
            table = match kind {
                Some(k) if k + 1 == parts.len() => Table::Entries(header),
                Some(k) if k + 2 == parts.len() => {
                    out.push(Dependency {
                        table: header,
                        key: unquote(&parts[k + 1]),
                        ..Dependency::default()
                    });
                    Table::Entry
                }
                _ => Table::Other,
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        match &table {
            Table::Other => {}
            Table::Entries(header) => {
                let key = split_dotted(key)
                    .first()
                    .map(|k| unquote(k))
                    .unwrap_or_default();
                out.push(Dependency {
                    table: header.clone(),
                    key,
                    package: inline_value(value, "package"),
                    path: inline_value(value, "path"),
                });
            }
            Table::Entry => {
                let entry = out.last_mut().expect("the entry of this table");
                match key {
                    "package" => entry.package = Some(unquote(value.trim())),
                    "path" => entry.path = Some(unquote(value.trim())),
                    _ => {}
                }
            }
        }
    }
    out
}

fn is_dependency_table(part: &str) -> bool {
    matches!(
        part,
        "dependencies"
            | "dev-dependencies"
            | "dev_dependencies"
            | "build-dependencies"
            | "build_dependencies"
    )
}

/// A line without its `#` comment (a `#` inside a string stays).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// How many `{`/`[` outside strings are not closed on `line`.
fn open_brackets(line: &str) -> i32 {
    let mut quote = None;
    let mut open = 0;
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '{' | '[') => open += 1,
            (None, '}' | ']') => open -= 1,
            _ => {}
        }
    }
    open
}

/// `a.'b.c'."d"` → `a`, `'b.c'`, `"d"` (dots inside quotes do not split).
fn split_dotted(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote = None;
    for c in key.chars() {
        match (quote, c) {
            (None, '.') => parts.push(String::new()),
            (None, '"' | '\'') => {
                quote = Some(c);
                parts.last_mut().expect("a part").push(c);
            }
            (Some(q), _) if c == q => {
                quote = None;
                parts.last_mut().expect("a part").push(c);
            }
            _ => parts.last_mut().expect("a part").push(c),
        }
    }
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

fn unquote(text: &str) -> String {
    text.trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_string()
}

/// The string value of `key` inside an inline table `{ key = "…", … }`.
fn inline_value(value: &str, key: &str) -> Option<String> {
    let inner = value.trim().strip_prefix('{')?.strip_suffix('}')?;
    inner.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (unquote(k) == key).then(|| unquote(v))
    })
}

// ------------------------------------------------------------------------------------------------
// The readers themselves

#[test]
fn string_literals_cases() {
    let check = |source: &str, expected: &[(usize, &str)]| {
        let got = string_literals(source);
        let got: Vec<(usize, &str)> = got.iter().map(|(l, s)| (*l, s.as_str())).collect();
        assert_eq!(got, expected, "{source}");
    };
    check(r#"let a = "x";"#, &[(1, "x")]);
    check("// \"no\"\nlet a = \"yes\";", &[(2, "yes")]);
    check("/* \"no\" /* nested \"no\" */ */ \"yes\"", &[(1, "yes")]);
    check(r#""a\"b\\" "c""#, &[(1, "a\"b\\"), (1, "c")]);
    check(
        r##"r#"a "quoted" b"# r"c""##,
        &[(1, "a \"quoted\" b"), (1, "c")],
    );
    check(
        r#"b"bytes" c"cstr" br"raw""#,
        &[(1, "bytes"), (1, "cstr"), (1, "raw")],
    );
    check(r#"let q = '"'; let s = "after";"#, &[(1, "after")]);
    check(r#"fn f<'a>(x: &'a str) -> char { '\'' } "s""#, &[(1, "s")]);
    check(r#"b'"' "s""#, &[(1, "s")]);
    check(r#"'\'' "s" '"'"#, &[(1, "s")]);
    check("\"one\ntwo\" \"three\"", &[(1, "one\ntwo"), (2, "three")]);
    check("\"a\\\n    b\" \"\\x41\\u{42}\"", &[(1, "ab"), (2, "AB")]);
    check("for_r\"x\" r", &[(1, "x")]);
}

#[test]
fn names_cases() {
    let names = Names::parse(
        "/// doc\npub const EVENTS_STREAM: &str = \"S_EVENTS\";\n\
         pub const EVENTS_SUBJECT_PREFIX: &str = \"t.v1.events\";\n\
         pub const EVENTS_SUBJECTS: &str = \"t.v1.events.>\";\n\
         pub const ALERTS_SUBJECT_PREFIX: &str = \"t.v1.alerts\";\n\
         pub const STATS_BUCKET: &str = \"t_stats\";\n\
         pub const MSG_ID_HEADER: &str = \"Msg-Id\";\n",
    );
    let check = |literal: &str, spelled: bool| {
        assert_eq!(
            names.spelled_by(literal),
            spelled,
            "{literal:?} in {names:?}"
        );
    };
    check("S_EVENTS", true);
    check("t_stats", true);
    check("t.v1.events.>", true);
    check("t.v1.events.lxc.failed", true);
    check("t.v1.anything", true);
    check("Msg-Id", false);
    check("t_stats_written_total", false);
    check("writes to t_stats", false);
    check("S_EVENTS_2", false);
    check("t.v2.events", false);
}

#[test]
fn subject_roots_cases() {
    let check = |subjects: &[&str], expected: &[&str]| {
        let subjects: Vec<String> = subjects.iter().map(|s| s.to_string()).collect();
        assert_eq!(subject_roots(&subjects), expected, "{subjects:?}");
    };
    check(&["a.v1.events", "a.v1.alerts.>"], &["a.v1."]);
    check(&["a.v1.events"], &["a.v1."]);
    check(&["a.events", "b.alerts"], &["a.", "b."]);
    check(&[], &[]);
}

#[test]
fn dependencies_cases() {
    let check = |manifest: &str, expected: &[(&str, &str, Option<&str>)]| {
        let got: Vec<(String, String, Option<&'static str>)> = dependencies(manifest)
            .into_iter()
            .map(|d| {
                let service = d.service();
                (d.table, d.key, service)
            })
            .collect();
        let expected: Vec<(String, String, Option<&str>)> = expected
            .iter()
            .map(|(t, k, s)| (t.to_string(), k.to_string(), *s))
            .collect();
        assert_eq!(got, expected, "{manifest}");
    };
    check(
        "[package]\nname = \"web\" # writer = 1\n[dependencies]\nschema.workspace = true\n\
         writer = { path = \"../writer\" } # the sink\n",
        &[
            ("dependencies", "schema", None),
            ("dependencies", "writer", Some("writer")),
        ],
    );
    check(
        "[dev-dependencies]\nstore = { package = \"writer\", version = \"0.1\" }\n\
         agg = { path = \"../aggregator/\" }\n\"alerter\" = \"0.1\"\n",
        &[
            ("dev-dependencies", "store", Some("writer")),
            ("dev-dependencies", "agg", Some("aggregator")),
            ("dev-dependencies", "alerter", Some("alerter")),
        ],
    );
    check(
        "[target.'cfg(unix)'.build-dependencies]\ningest = \"1\"\n[features]\nwriter = []\n",
        &[(
            "target.'cfg(unix)'.build-dependencies",
            "ingest",
            Some("ingest"),
        )],
    );
    check(
        "[dependencies.sink]\nversion = \"1\"\npackage = \"writer\"\n[lints]\nworkspace = true\n",
        &[("dependencies.sink", "sink", Some("writer"))],
    );
    check(
        "[dependencies]\ntokio = { version = \"1\", features = [\n  \"rt\", # why\n], package = \"web\" }\n\
         serde = \"1\"\n",
        &[("dependencies", "tokio", Some("web")), ("dependencies", "serde", None)],
    );
}
