//! A password or token from the environment: `Debug` shows only whether it is set, so a config can be
//! logged or printed whole without leaking it. Also the placeholders of example files that no service
//! takes for a real password ([`is_placeholder`]).

/// A value that is never printed: `Debug` gives `""` when it is empty and `"***"` otherwise.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Passwords that example files and docs use as stand-ins, compared without case and without `-`, `_`,
/// `.` and blanks (so `CHANGE_ME` is `changeme`). Anything that starts with `changeme` counts too: the
/// deploy files' `change-me-too`, `change-me-three`, `change-me-please`.
pub const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "changethis",
    "password",
    "passw0rd",
    "admin",
    "administrator",
    "adminpassword",
    "secret",
    "default",
    "placeholder",
    "example",
    "test",
    "xxx",
    "todo",
    "123456",
    "12345678",
    "letmein",
    "yourpassword",
];

/// True when `value` is one of the [`PLACEHOLDERS`] (or the docs' `...`): a password nobody chose.
pub fn is_placeholder(value: &str) -> bool {
    let trimmed = value.trim();
    if trimmed.chars().all(|c| c == '.') && trimmed.len() >= 3 {
        return true;
    }
    let folded: String = trimmed
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' ' | '\t'))
        .flat_map(char::to_lowercase)
        .collect();
    !folded.is_empty()
        && (folded.starts_with("changeme") || PLACEHOLDERS.contains(&folded.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_whether_it_is_set() {
        let secret: Secret = "hunter2".parse().expect("infallible");
        assert_eq!(format!("{secret:?}"), "\"***\"");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert!(Secret::new("").is_empty());
    }

    fn check(value: &str, expected: bool) {
        assert_eq!(is_placeholder(value), expected, "{value:?}");
    }

    #[test]
    fn placeholders_are_known_stand_ins_only() {
        for value in [
            "changeme",
            "change-me",
            "CHANGE_ME",
            "Change Me",
            "password",
            "PASSWORD",
            "admin",
            "secret",
            "example",
            "change-me-too",
            "change-me-three",
            "change-me-please",
            "...",
            " changeme ",
        ] {
            check(value, true);
        }
        for value in [
            "",
            "  ",
            "hunter2",
            "Zq7vX2kP9mL4",
            "admin@example.org",
            "mypassword",
            "secret-sauce-1234",
            "benchbenchbench",
        ] {
            check(value, false);
        }
    }
}
