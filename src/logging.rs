//! Where log lines go: the journal's native protocol when stderr is connected to the journal
//! (a systemd service), plain text or JSON lines on stderr otherwise.
//!
//! Under journald every `tracing` field becomes a journal field of its own, upper-cased and
//! without a prefix, so `journalctl -u rollguard DEPLOYMENT=checkout-42` and
//! `journalctl MESSAGE_ID=…` work (the events module gives key events a stable
//! `message_id`). Timestamps and colours are left to the journal.

use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Output format for stderr logs (`--log-format`). Ignored when logging to the journal,
/// whose native protocol is structured already.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines with timestamps (colours only on a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Which sink [`init`] chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// Native journal protocol with structured fields.
    Journal,
    /// stderr is the journal but its socket could not be opened: plain lines with
    /// `<N>` syslog priority prefixes, which journald understands.
    JournalStderr,
    /// Plain text on stderr.
    Text,
    /// JSON lines on stderr.
    Json,
}

/// Whether a `$JOURNAL_STREAM` value (`device:inode`) names the given file. systemd sets
/// the variable for the service, but children inherit it with stderr redirected elsewhere,
/// so the variable alone proves nothing (systemd.exec(5) says to compare).
pub fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// Whether this process's stderr is the journal stream systemd connected.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    journal_stream_matches(&value, meta.dev(), meta.ino())
}

/// The sd-daemon(3) priority prefix for a level: what journald maps to `PRIORITY=` when it
/// reads plain lines from a service's stderr.
fn syslog_prefix(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Prepends [`syslog_prefix`] to each line of an inner formatter.
struct SyslogPrefixed<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPrefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(syslog_prefix(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber and returns the sink it chose. `RUST_LOG` overrides the
/// default level (info). Calling it twice keeps the first subscriber.
pub fn init(format: LogFormat) -> Sink {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(j) => {
                // No field prefix: `message_id` must land in the journal's own MESSAGE_ID.
                let j = j
                    .with_syslog_identifier("rollguard".into())
                    .with_field_prefix(None);
                let _ = tracing_subscriber::registry()
                    .with(j.with_filter(filter()))
                    .try_init();
                return Sink::Journal;
            }
            Err(_) => {
                let inner = tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false);
                let fmt = tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .event_format(SyslogPrefixed(inner));
                let _ = tracing_subscriber::registry()
                    .with(fmt.with_filter(filter()))
                    .try_init();
                return Sink::JournalStderr;
            }
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let (layer, sink) = match format {
        LogFormat::Json => (fmt.json().with_ansi(false).boxed(), Sink::Json),
        LogFormat::Text => (
            fmt.with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .boxed(),
            Sink::Text,
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter()))
        .try_init();
    sink
}

/// Colours only on a terminal, and never when `NO_COLOR` is set to anything but the empty
/// string (<https://no-color.org>). Setting `with_ansi` explicitly would otherwise override
/// tracing-subscriber's own `NO_COLOR` check.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_wins_over_a_terminal() {
        assert!(super::colour(true, None));
        assert!(super::colour(true, Some("".into())));
        assert!(!super::colour(true, Some("1".into())));
        assert!(!super::colour(false, None));
    }

    #[test]
    fn journal_stream_must_name_the_file() {
        assert!(journal_stream_matches("8:123", 8, 123));
        assert!(!journal_stream_matches("8:123", 8, 124));
        assert!(!journal_stream_matches("8:123", 9, 123));
        assert!(!journal_stream_matches("8", 8, 123));
        assert!(!journal_stream_matches("x:y", 8, 123));
        assert!(!journal_stream_matches("", 0, 0));
    }

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(syslog_prefix(&Level::ERROR), "<3>");
        assert_eq!(syslog_prefix(&Level::WARN), "<4>");
        assert_eq!(syslog_prefix(&Level::INFO), "<6>");
        assert_eq!(syslog_prefix(&Level::DEBUG), "<7>");
    }
}
