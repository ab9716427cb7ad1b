//! Logs on stderr, as text or one JSON object per line, filtered by `RUST_LOG`.
//!
//! The text format writes fields the logfmt way: `name=value`, the value quoted and escaped
//! when it holds a space, `=`, a quote or a control character. Fields carry text from the API
//! (task messages, error codes): written raw, a message such as `done job_id=999 to="succeed"`
//! or one with a newline would add fields or lines of its own to the log.

use crate::cli::LogFormat;
use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

/// Installs the process's logger on stderr. `RUST_LOG` is a level or `target=level,...`; a bad
/// value falls back to info, and says so.
pub fn init(format: LogFormat) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match v.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (
                Targets::new().with_default(tracing::Level::INFO),
                Some(format!("{v:?}: {e}")),
            ),
        },
        _ => (Targets::new().with_default(tracing::Level::INFO), None),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(fmt.json().with_filter(filter))
            .init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(fmt.fmt_fields(Logfmt).with_filter(filter))
            .init(),
    }
    if let Some(bad) = bad {
        tracing::warn!(rust_log = %bad, "RUST_LOG not understood; logging at info");
    }
}

/// Whether a value must be quoted to stay one value.
fn needs_quotes(value: &str) -> bool {
    value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == '"')
}

/// Writes one field: the event's message bare (quoted only when it could pass for fields),
/// the others as `name=value`.
pub fn write_field(w: &mut impl fmt::Write, name: &str, value: &str) -> fmt::Result {
    if name == "message" {
        let risky = value
            .chars()
            .any(|c| c.is_control() || c == '=' || c == '"');
        return if risky {
            write!(w, "{value:?}")
        } else {
            w.write_str(value)
        };
    }
    if needs_quotes(value) {
        write!(w, "{name}={value:?}")
    } else {
        write!(w, "{name}={value}")
    }
}

/// The text format's field formatter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logfmt;

impl<'a> MakeVisitor<Writer<'a>> for Logfmt {
    type Visitor = LogfmtVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        LogfmtVisitor {
            writer: target,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes the fields of one event or span.
#[derive(Debug)]
pub struct LogfmtVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl LogfmtVisitor<'_> {
    fn field(&mut self, name: &str, value: &str) {
        if self.result.is_err() {
            return;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        if self.result.is_ok() {
            self.result = write_field(&mut self.writer, name, value);
        }
    }
}

impl Visit for LogfmtVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field.name(), &format!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for LogfmtVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for LogfmtVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> String {
        let mut s = String::new();
        write_field(&mut s, name, value).unwrap();
        s
    }

    #[test]
    fn free_text_cannot_pass_for_fields_or_lines() {
        assert_eq!(field("job_id", "42"), "job_id=42");
        assert_eq!(field("code", "InternalError"), "code=InternalError");
        assert_eq!(
            field("message", r#"done job_id=999 to="succeed""#),
            r#""done job_id=999 to=\"succeed\"""#
        );
        assert_eq!(field("message", "disk full"), "disk full");
        assert_eq!(field("message", "one\ntwo"), r#""one\ntwo""#);
        assert_eq!(
            field("error", "API error X: bad\nINFO forged"),
            r#"error="API error X: bad\nINFO forged""#
        );
        assert_eq!(field("to", ""), r#"to="""#);
        assert_eq!(field("a", "b=c"), r#"a="b=c""#);
    }
}
