//! Mail: composing an alert or resolution (plain text and HTML with the figures, top exit codes and
//! signatures, and a link to the dashboard) or a digest of the alerts beyond the mail budget, and sending
//! it over SMTP with lettre. One send is one attempt; retrying is the caller's business.
//!
//! App names and signatures are client text: a subject is our words first, then the name in double
//! quotes, cleaned ([`quoted`]: no control or invisible formatting characters, one line, at most
//! [`SUBJECT_NAME_CHARS`] characters); lettre encodes non-ASCII text (RFC 2047).

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use schema::alert::{AlertEvent, FoldedAlert, Kind, Rule, Scope};

use crate::config::{Config, SmtpTls};

/// Why a mail could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("bad address {0:?}: {1}")]
    Address(String, lettre::address::AddressError),
    #[error("SMTP_TO is empty")]
    NoRecipient,
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// An SMTP connection recipe and the envelope.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

fn mailbox(text: &str) -> Result<Mailbox, MailError> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|e| MailError::Address(text.to_string(), e))
}

impl Mailer {
    /// From the SMTP_* settings. Fails on a bad address or TLS set-up, not on an unreachable server.
    pub fn new(config: &Config) -> Result<Mailer, MailError> {
        let host = config.smtp_host.as_str();
        let builder = match config.smtp_tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
        };
        let mut builder = builder
            .port(config.smtp_port)
            .timeout(Some(Duration::from_secs(config.smtp_timeout_secs)));
        if let Some(user) = &config.smtp_user {
            let password = config
                .smtp_password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let to = config
            .smtp_to
            .iter()
            .filter(|t| !t.trim().is_empty())
            .map(|t| mailbox(t))
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(MailError::NoRecipient);
        }
        Ok(Mailer {
            transport: builder.build(),
            from: mailbox(&config.smtp_from)?,
            to,
        })
    }

    pub fn recipients(&self) -> usize {
        self.to.len()
    }

    /// Builds the message; `message_id` makes a resend recognizable as the same mail.
    pub fn message(
        &self,
        subject: &str,
        text: String,
        html: String,
        message_id: &str,
    ) -> Result<Message, MailError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!("<{message_id}@telemetry-alerter>")));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        Ok(builder.multipart(MultiPart::alternative_plain_html(text, html))?)
    }

    /// One attempt to hand the message to the SMTP server.
    pub async fn send(&self, message: Message) -> Result<(), MailError> {
        self.transport.send(message).await?;
        Ok(())
    }

    /// The mail of an alert or resolution.
    pub fn alert(&self, event: &AlertEvent) -> Result<Message, MailError> {
        let (subject, text, html) = compose(event);
        self.message(&subject, text, html, &event.alert_id.to_string())
    }
}

/// Most characters of client text in a subject.
pub const SUBJECT_NAME_CHARS: usize = 40;
/// Most characters of client text in a mail's body lines.
const BODY_NAME_CHARS: usize = 200;

/// Invisible characters that reorder or hide text (bidirectional controls, zero-width characters, the
/// soft hyphen, the byte-order mark).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Client text made safe to show: whitespace runs (newlines included) become one space, control and
/// invisible characters go, double quotes become single ones, at most `max` characters (an ellipsis
/// marks a cut), the whole in double quotes; `"?"` when nothing is left.
pub fn quoted(text: &str, max: usize) -> String {
    let mut clean = String::with_capacity(text.len().min(4 * max));
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !clean.is_empty();
            continue;
        }
        if c.is_control() || invisible(c) {
            continue;
        }
        if space {
            clean.push(' ');
            space = false;
        }
        clean.push(if c == '"' { '\'' } else { c });
    }
    let count = clean.chars().count();
    if count > max {
        clean = clean.chars().take(max.saturating_sub(1)).collect();
        clean.push('…');
    }
    if clean.is_empty() {
        clean.push('?');
    }
    format!("\"{clean}\"")
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "n/a".to_string(), |r| format!("{:.1}%", r * 100.0))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the mail is about, in a few words: ours first, then the client's text quoted and cut to
/// `max` characters.
pub fn headline(event: &AlertEvent, max: usize) -> String {
    let who = match event.scope {
        Scope::Global => "all installs".to_string(),
        Scope::App => format!("app {}", quoted(&event.subject, max)),
        Scope::Signature => quoted(&event.subject, max),
    };
    let window = quoted(&event.window, 16);
    let window = window.trim_matches('"');
    match (event.rule, event.kind) {
        (Rule::FailureRate, Kind::Alert) => format!(
            "failure rate {} ({} failed of {} decided) in {window}: {who}",
            percent(event.failure_rate),
            event.failed,
            event.success + event.failed,
        ),
        (Rule::FailureRate, Kind::Resolved) => format!(
            "resolved: failure rate back to {} in {window}: {who}",
            percent(event.failure_rate),
        ),
        (Rule::NewSignature, _) => format!(
            "new error signature in {} installs within {window}: {who}",
            event.started
        ),
    }
}

/// The subject of an alert or resolution.
pub fn subject(event: &AlertEvent) -> String {
    format!("[telemetry] {}", headline(event, SUBJECT_NAME_CHARS))
}

/// Subject, plain text and HTML of the digest of the alerts beyond the mail budget of one period.
pub fn compose_digest(
    period_start: time::OffsetDateTime,
    budget: u32,
    folded: &[FoldedAlert],
    total: u64,
) -> (String, String, String) {
    let from = period_start
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let subject = format!(
        "[telemetry] digest: {total} alert(s) beyond the mail budget of {budget} from {from}"
    );
    let intro = format!(
        "{total} alert(s) were not mailed one by one: the {budget} mail(s) of the period that began {from} were sent. Each is recorded on TELEMETRY_ALERTS and shown on the dashboard."
    );
    let mut text = format!("{intro}\n\n");
    let mut html = format!("<html><body><p>{}</p><ul>", escape(&intro));
    for f in folded {
        text.push_str(&format!("  {}  {}\n", f.at, f.line));
        html.push_str(&format!("<li>{} {}</li>", f.at, escape(&f.line)));
    }
    html.push_str("</ul>");
    let more = total.saturating_sub(folded.len() as u64);
    if more > 0 {
        text.push_str(&format!("  ... and {more} more\n"));
        html.push_str(&format!("<p>... and {more} more</p>"));
    }
    html.push_str("</body></html>");
    (subject, text, html)
}

/// Subject, plain text and HTML of an alert or resolution.
pub fn compose(event: &AlertEvent) -> (String, String, String) {
    let subject = subject(event);
    let mut figures: Vec<(String, String)> = Vec::new();
    if event.rule == Rule::FailureRate {
        figures.push(("Failure rate".into(), percent(event.failure_rate)));
        figures.push((
            "Threshold".into(),
            event
                .threshold
                .map_or_else(|| "n/a".to_string(), |t| percent(Some(t))),
        ));
        for (name, value) in [
            ("Installs started", event.started),
            ("Success", event.success),
            ("Failed", event.failed),
            ("Aborted", event.aborted),
            ("Unknown", event.unknown),
        ] {
            figures.push((name.into(), value.to_string()));
        }
    } else {
        figures.push(("Signature".into(), event.subject.clone()));
        figures.push(("Installs".into(), event.started.to_string()));
    }
    figures.push(("Window".into(), event.window.clone()));
    figures.push(("Time (UTC)".into(), event.at.to_string()));

    let headline = headline(event, BODY_NAME_CHARS);
    let mut text = format!("{headline}\n\n");
    for (name, value) in &figures {
        text.push_str(&format!("{name}: {value}\n"));
    }
    let mut html = format!("<html><body><h2>{}</h2><table>", escape(&headline));
    for (name, value) in &figures {
        html.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            escape(name),
            escape(value)
        ));
    }
    html.push_str("</table>");

    if !event.apps.is_empty() {
        text.push_str("\nApps:\n");
        html.push_str("<h3>Apps</h3><ul>");
        for app in &event.apps {
            text.push_str(&format!("  {} ({})\n", app.name, app.count));
            html.push_str(&format!("<li>{} ({})</li>", escape(&app.name), app.count));
        }
        html.push_str("</ul>");
    }
    if !event.top_exit_codes.is_empty() {
        text.push_str("\nTop exit codes:\n");
        html.push_str("<h3>Top exit codes</h3><ul>");
        for c in &event.top_exit_codes {
            text.push_str(&format!(
                "  {} ({}): {} x{}\n",
                c.code,
                c.category.as_str(),
                c.description,
                c.count
            ));
            html.push_str(&format!(
                "<li><b>{}</b> ({}): {} &times;{}</li>",
                c.code,
                c.category.as_str(),
                escape(&c.description),
                c.count
            ));
        }
        html.push_str("</ul>");
    }
    if !event.top_signatures.is_empty() {
        text.push_str("\nTop error signatures:\n");
        html.push_str("<h3>Top error signatures</h3><ul>");
        for s in &event.top_signatures {
            text.push_str(&format!("  {} x{}\n", s.signature, s.count));
            html.push_str(&format!(
                "<li><code>{}</code> &times;{}</li>",
                escape(&s.signature),
                s.count
            ));
        }
        html.push_str("</ul>");
    }
    text.push_str(&format!("\nDashboard: {}\n", event.dashboard_url));
    html.push_str(&format!(
        "<p><a href=\"{0}\">{0}</a></p></body></html>",
        escape(&event.dashboard_url)
    ));
    (subject, text, html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::stats::{ExitCodeCount, SignatureCount};
    use time::OffsetDateTime;

    fn event(kind: Kind) -> AlertEvent {
        AlertEvent {
            v: 1,
            alert_id: uuid::Uuid::nil(),
            kind,
            rule: Rule::FailureRate,
            scope: Scope::App,
            subject: "docker".into(),
            at: OffsetDateTime::UNIX_EPOCH,
            window: "24h".into(),
            threshold: Some(0.2),
            failure_rate: Some(0.5),
            started: 40,
            success: 20,
            failed: 20,
            aborted: 0,
            unknown: 0,
            apps: vec![],
            top_exit_codes: vec![ExitCodeCount {
                code: 100,
                category: schema::Category::Apt,
                description: "apt <failed>".into(),
                count: 20,
            }],
            top_signatures: vec![SignatureCount {
                signature: "E: Unable to locate package <x>".into(),
                count: 20,
            }],
            dashboard_url: "http://dash/dashboard/apps/docker".into(),
        }
    }

    fn check(kind: Kind, subject: &str, in_text: &[&str], in_html: &[&str]) {
        let (s, text, html) = compose(&event(kind));
        assert_eq!(s, subject);
        for needle in in_text {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        for needle in in_html {
            assert!(html.contains(needle), "{needle:?} not in {html}");
        }
    }

    #[test]
    fn mails_carry_the_figures_and_the_link() {
        check(
            Kind::Alert,
            "[telemetry] failure rate 50.0% (20 failed of 40 decided) in 24h: app \"docker\"",
            &[
                "Failure rate: 50.0%",
                "Failed: 20",
                "100 (apt)",
                "E: Unable to locate package <x> x20",
                "http://dash/dashboard/apps/docker",
            ],
            &[
                "apt &lt;failed&gt;",
                "<code>E: Unable to locate package &lt;x&gt;</code>",
                "href=\"http://dash/dashboard/apps/docker\"",
            ],
        );
        check(
            Kind::Resolved,
            "[telemetry] resolved: failure rate back to 50.0% in 24h: app \"docker\"",
            &["Threshold: 20.0%"],
            &["<h2>resolved: failure rate back to 50.0% in 24h: app &quot;docker&quot;"],
        );
    }

    fn check_quoted(text: &str, expected: &str) {
        assert_eq!(quoted(text, SUBJECT_NAME_CHARS), expected, "{text:?}");
    }

    #[test]
    fn client_text_is_quoted_cleaned_and_cut() {
        check_quoted("docker", "\"docker\"");
        check_quoted("Home Assistant OS", "\"Home Assistant OS\"");
        // Header injection: line breaks are spaces, no second header line.
        check_quoted(
            "x\r\nBcc: victim@example.org",
            "\"x Bcc: victim@example.org\"",
        );
        check_quoted("a\n\n\t  b", "\"a b\"");
        check_quoted("  padded  ", "\"padded\"");
        check_quoted("nul\0bell\u{7}del\u{7f}", "\"nulbelldel\"");
        // Quotes cannot close ours.
        check_quoted("say \"hi\"", "\"say 'hi'\"");
        // Non-ASCII stays (lettre encodes it); invisible and reordering characters go.
        check_quoted("Grünes Häuschen 🏠", "\"Grünes Häuschen 🏠\"");
        check_quoted("evil\u{202E}gpj.exe\u{200B}", "\"evilgpj.exe\"");
        check_quoted("\u{FEFF}\u{2066}", "\"?\"");
        check_quoted("", "\"?\"");
        // At most 40 characters, an ellipsis marks the cut (characters, not bytes).
        check_quoted(&"a".repeat(40), &format!("\"{}\"", "a".repeat(40)));
        check_quoted(&"a".repeat(41), &format!("\"{}…\"", "a".repeat(39)));
        check_quoted(&"ü".repeat(100), &format!("\"{}…\"", "ü".repeat(39)));
    }

    /// The subject of a hostile app name stays one line of our words, whatever the name.
    #[test]
    fn subjects_start_with_our_words_and_stay_one_line() {
        let mut e = event(Kind::Alert);
        e.subject = format!(
            "[telemetry] URGENT\r\nBcc: all@example.org {}",
            "x".repeat(500)
        );
        let s = subject(&e);
        assert!(
            s.starts_with(
                "[telemetry] failure rate 50.0% (20 failed of 40 decided) in 24h: app \""
            ),
            "{s}"
        );
        assert!(!s.contains('\n') && !s.contains('\r'), "{s:?}");
        assert!(s.chars().count() < 120, "{s}");
        let message = Mailer::new(&crate::Config::for_nats("nats://x"))
            .expect("mailer")
            .alert(&e)
            .expect("message");
        let raw = String::from_utf8(message.formatted()).expect("utf-8");
        assert!(!raw.contains("\r\nBcc:"), "{raw}");
    }
}
