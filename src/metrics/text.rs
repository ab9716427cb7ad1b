//! The Prometheus text format, version 0.0.4: how a family header and a sample are written,
//! label values and HELP escaped, numbers formatted. A format is an [`Exposition`]; the
//! renderer feeds it families and samples and knows nothing of the syntax, so a second format
//! (OpenMetrics) is a sibling implementation, not a flag threaded through the renderer.

use std::io::{self, Write};

/// A sample value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A count.
    U(u64),
    /// A signed integer (timestamps).
    I(i64),
    /// Anything else.
    F(f64),
}

/// A family's type, as the `# TYPE` line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram: `_bucket`, `_sum` and `_count` samples.
    Histogram,
    /// A summary: quantile, `_sum` and `_count` samples.
    Summary,
}

impl Kind {
    /// The name the text format gives the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// The last task a counter or a histogram bucket counted, shown beside its sample in
/// OpenMetrics: `# {job_id="..."} <value> <timestamp>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    /// The task's job id.
    pub job_id: i64,
    /// 1 on a counter, the task's duration on a bucket.
    pub value: Num,
    /// The task's end, unix seconds.
    pub timestamp: i64,
}

/// A page's format, as content negotiation chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0, with exemplars.
    OpenMetrics,
}

impl Format {
    /// The media type of a page in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Something that writes a metrics page: family headers, each followed by that family's
/// samples, then the end of the page.
pub trait Exposition {
    /// Starts a family: its HELP and TYPE.
    fn family(&mut self, name: &str, help: &str, kind: Kind) -> io::Result<()>;
    /// One sample of the family last started; `name` carries any suffix (`_bucket`, ...).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Num) -> io::Result<()>;
    /// One sample with the exemplar of the last task it counted; a format without exemplars
    /// writes the sample alone.
    fn sample_with(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: Num,
        exemplar: Option<&Exemplar>,
    ) -> io::Result<()> {
        let _ = exemplar;
        self.sample(name, labels, value)
    }
    /// Whether it writes exemplars (the renderer skips looking them up otherwise).
    fn wants_exemplars(&self) -> bool {
        false
    }
    /// Text this format wrote earlier (families of the same page, kept), as is.
    fn raw(&mut self, text: &[u8]) -> io::Result<()>;
    /// The page is complete.
    fn finish(&mut self) -> io::Result<()>;
}

/// The 0.0.4 text format, written to `W`.
#[derive(Debug)]
pub struct Text<W> {
    w: W,
}

impl<W: Write> Text<W> {
    /// A writer of the text format into `w`.
    pub fn new(w: W) -> Self {
        Text { w }
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.w
    }

    /// The underlying writer, borrowed.
    pub fn get_ref(&self) -> &W {
        &self.w
    }
}

impl<W: Write> Exposition for Text<W> {
    fn family(&mut self, name: &str, help: &str, kind: Kind) -> io::Result<()> {
        write_family(&mut self.w, name, help, kind, false)
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Num) -> io::Result<()> {
        write_series(&mut self.w, name, labels, value)?;
        self.w.write_all(b"\n")
    }

    fn raw(&mut self, text: &[u8]) -> io::Result<()> {
        self.w.write_all(text)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// A family's `# HELP` and `# TYPE` lines; `quote`: whether HELP escapes `"` too (OpenMetrics).
fn write_family(
    w: &mut impl Write,
    name: &str,
    help: &str,
    kind: Kind,
    quote: bool,
) -> io::Result<()> {
    w.write_all(b"# HELP ")?;
    w.write_all(name.as_bytes())?;
    w.write_all(b" ")?;
    escape(w, help, quote)?;
    w.write_all(b"\n# TYPE ")?;
    w.write_all(name.as_bytes())?;
    w.write_all(b" ")?;
    w.write_all(kind.as_str().as_bytes())?;
    w.write_all(b"\n")
}

/// `name{labels} value`, without the line's end.
fn write_series(
    w: &mut impl Write,
    name: &str,
    labels: &[(&str, &str)],
    value: Num,
) -> io::Result<()> {
    w.write_all(name.as_bytes())?;
    write_labels(w, labels)?;
    w.write_all(b" ")?;
    write_num(w, value)
}

/// `{a="1",b="2"}`, nothing for no labels.
fn write_labels(w: &mut impl Write, labels: &[(&str, &str)]) -> io::Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    w.write_all(b"{")?;
    for (k, (n, v)) in labels.iter().enumerate() {
        if k > 0 {
            w.write_all(b",")?;
        }
        w.write_all(n.as_bytes())?;
        w.write_all(b"=\"")?;
        escape_label(w, v)?;
        w.write_all(b"\"")?;
    }
    w.write_all(b"}")
}

/// OpenMetrics 1.0.0 text, written to `W`: counters typed by their name without `_total`
/// (their samples keep it), HELP escaped as label values are, exemplars after the samples
/// that have one, `# EOF` at the end.
#[derive(Debug)]
pub struct OpenMetrics<W> {
    w: W,
}

impl<W: Write> OpenMetrics<W> {
    /// A writer of OpenMetrics into `w`.
    pub fn new(w: W) -> Self {
        OpenMetrics { w }
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.w
    }

    /// The underlying writer, borrowed.
    pub fn get_ref(&self) -> &W {
        &self.w
    }
}

impl<W: Write> Exposition for OpenMetrics<W> {
    fn family(&mut self, name: &str, help: &str, kind: Kind) -> io::Result<()> {
        let name = match kind {
            Kind::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        write_family(&mut self.w, name, help, kind, true)
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Num) -> io::Result<()> {
        self.sample_with(name, labels, value, None)
    }

    fn sample_with(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: Num,
        exemplar: Option<&Exemplar>,
    ) -> io::Result<()> {
        write_series(&mut self.w, name, labels, value)?;
        if let Some(e) = exemplar {
            self.w.write_all(b" # ")?;
            // A job id is a number: written as one, with nothing to escape or allocate.
            self.w.write_all(b"{job_id=\"")?;
            write_num(&mut self.w, Num::I(e.job_id))?;
            self.w.write_all(b"\"} ")?;
            write_num(&mut self.w, e.value)?;
            self.w.write_all(b" ")?;
            write_num(&mut self.w, Num::I(e.timestamp))?;
        }
        self.w.write_all(b"\n")
    }

    fn wants_exemplars(&self) -> bool {
        true
    }

    fn raw(&mut self, text: &[u8]) -> io::Result<()> {
        self.w.write_all(text)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.w.write_all(b"# EOF\n")?;
        self.w.flush()
    }
}

/// The format `Accept` prefers: OpenMetrics when an `application/openmetrics-text` entry has
/// a weight above zero and at least that of any entry the text format answers (`text/plain`,
/// `text/*`, `*/*`); the text format otherwise, also with no header at all. Pure.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let (mut open, mut text) = (0.0f64, 0.0f64);
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0;
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v.trim().parse::<f64>().unwrap_or(0.0).clamp(0.0, 1.0);
            }
        }
        match media.as_str() {
            "application/openmetrics-text" => open = open.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if open > 0.0 && open >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Writes a value: integers as digits, floats as the shortest text that reads back the same,
/// and the special values as `NaN`, `+Inf`, `-Inf`.
pub fn write_num(w: &mut impl Write, value: Num) -> io::Result<()> {
    match value {
        Num::U(v) => write_u64(w, v),
        Num::I(v) => {
            if v < 0 {
                w.write_all(b"-")?;
            }
            write_u64(w, v.unsigned_abs())
        }
        Num::F(v) if v.is_nan() => w.write_all(b"NaN"),
        Num::F(v) if v == f64::INFINITY => w.write_all(b"+Inf"),
        Num::F(v) if v == f64::NEG_INFINITY => w.write_all(b"-Inf"),
        // Plain decimals read best; past these magnitudes they would run to hundreds of digits.
        Num::F(v) if v != 0.0 && !(1e-6..1e21).contains(&v.abs()) => write!(w, "{v:e}"),
        Num::F(v) => write!(w, "{v}"),
    }
}

fn write_u64(w: &mut impl Write, mut v: u64) -> io::Result<()> {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    w.write_all(&buf[i..])
}

/// A label value: backslash, double quote and line feed escaped; everything else (UTF-8
/// included) as is.
pub fn escape_label(w: &mut impl Write, v: &str) -> io::Result<()> {
    escape(w, v, true)
}

/// A HELP text: backslash and line feed escaped (a double quote is legal there).
pub fn escape_help(w: &mut impl Write, v: &str) -> io::Result<()> {
    escape(w, v, false)
}

fn escape(w: &mut impl Write, v: &str, quote: bool) -> io::Result<()> {
    let special = |b: u8| b == b'\\' || b == b'\n' || (quote && b == b'"');
    let mut rest = v.as_bytes();
    // Runs of ordinary bytes are written whole; every special byte is ASCII, so a split never
    // falls inside a UTF-8 sequence.
    while let Some(at) = rest.iter().position(|&b| special(b)) {
        w.write_all(&rest[..at])?;
        w.write_all(match rest[at] {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            _ => b"\\\"",
        })?;
        rest = &rest[at + 1..];
    }
    w.write_all(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_names_counters_without_total_and_ends_the_page() {
        let mut out = OpenMetrics::new(Vec::new());
        out.family("a_done_total", "Done \"tasks\".\nMore", Kind::Counter)
            .unwrap();
        let ex = Exemplar {
            job_id: 42,
            value: Num::U(1),
            timestamp: 1_700_000_000,
        };
        out.sample_with(
            "a_done_total",
            &[("status", "failed")],
            Num::U(3),
            Some(&ex),
        )
        .unwrap();
        out.sample("a_done_total", &[("status", "succeed")], Num::U(0))
            .unwrap();
        out.family("b_seconds", "Durations.", Kind::Histogram)
            .unwrap();
        let d = Exemplar {
            job_id: 7,
            value: Num::F(12.5),
            timestamp: 1_700_000_001,
        };
        out.sample_with("b_seconds_bucket", &[("le", "+Inf")], Num::U(1), Some(&d))
            .unwrap();
        out.finish().unwrap();
        let text = String::from_utf8(out.into_inner()).unwrap();
        assert_eq!(
            text,
            "# HELP a_done Done \\\"tasks\\\".\\nMore\n# TYPE a_done counter\n\
             a_done_total{status=\"failed\"} 3 # {job_id=\"42\"} 1 1700000000\n\
             a_done_total{status=\"succeed\"} 0\n\
             # HELP b_seconds Durations.\n# TYPE b_seconds histogram\n\
             b_seconds_bucket{le=\"+Inf\"} 1 # {job_id=\"7\"} 12.5 1700000001\n# EOF\n"
        );
        // The text format writes the same sample without its exemplar.
        let mut plain = Text::new(Vec::new());
        plain
            .sample_with("a_done_total", &[], Num::U(3), Some(&ex))
            .unwrap();
        assert_eq!(plain.into_inner(), b"a_done_total 3\n");
    }

    #[test]
    fn accept_headers_choose_the_format_by_weight() {
        use Format::{OpenMetrics as Om, Text as Tx};
        for (accept, want) in [
            // Prometheus 2.x and 3.x defaults.
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                Om,
            ),
            (
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                Om,
            ),
            ("text/plain;version=0.0.4;q=1,*/*;q=0.1", Tx),
            ("application/openmetrics-text", Om),
            ("Application/OpenMetrics-Text; Q=0.9, text/plain; q=0.2", Om),
            ("text/plain;q=0.9, application/openmetrics-text;q=0.5", Tx),
            ("application/openmetrics-text;q=0, text/plain", Tx),
            ("application/openmetrics-text;q=0", Tx),
            ("*/*", Tx),
            ("application/json", Tx),
            ("", Tx),
        ] {
            assert_eq!(negotiate(Some(accept)), want, "{accept}");
        }
        assert_eq!(negotiate(None), Tx);
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }

    fn num(v: Num) -> String {
        let mut out = Vec::new();
        write_num(&mut out, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn label(v: &str) -> String {
        let mut out = Vec::new();
        escape_label(&mut out, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline_only() {
        assert_eq!(label(r"C:\dir"), r"C:\\dir");
        assert_eq!(label(r#"say "hi""#), r#"say \"hi\""#);
        assert_eq!(label("two\nlines"), r"two\nlines");
        assert_eq!(label("tab\tstays"), "tab\tstays");
        assert_eq!(label("实例-ü"), "实例-ü", "UTF-8 is written as is");
        assert_eq!(label(r#"\"\n"#), r#"\\\"\\n"#);
        assert_eq!(label(""), "");
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        let mut out = Vec::new();
        escape_help(&mut out, "a \"quoted\" \\ word\nnext").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"a "quoted" \\ word\nnext"#
        );
    }

    #[test]
    fn numbers_are_written_as_the_format_reads_them() {
        assert_eq!(num(Num::U(0)), "0");
        assert_eq!(num(Num::U(u64::MAX)), "18446744073709551615");
        assert_eq!(num(Num::I(-1_795_750_948)), "-1795750948");
        assert_eq!(num(Num::I(i64::MIN)), "-9223372036854775808");
        assert_eq!(num(Num::F(0.25)), "0.25");
        assert_eq!(num(Num::F(3.0)), "3");
        assert_eq!(num(Num::F(f64::NAN)), "NaN");
        assert_eq!(num(Num::F(f64::INFINITY)), "+Inf");
        assert_eq!(num(Num::F(f64::NEG_INFINITY)), "-Inf");
        assert_eq!(num(Num::F(-0.0)), "-0");
        assert_eq!(num(Num::F(1e300)), "1e300");
        assert_eq!(num(Num::F(1.5e-9)), "1.5e-9");
        for v in [0.1, 1.0 / 3.0, 1e300, 1.5e-9, 123_456.789, -2.5] {
            assert_eq!(num(Num::F(v)).parse::<f64>().unwrap(), v, "{v} reads back");
        }
    }

    #[test]
    fn a_family_is_help_type_then_samples() {
        let mut t = Text::new(Vec::new());
        t.family("x_total", "Counts \\ things.\nReally.", Kind::Counter)
            .unwrap();
        t.sample("x_total", &[("a", "1"), ("b", "q\"")], Num::U(2))
            .unwrap();
        t.sample("x_total", &[], Num::U(3)).unwrap();
        t.finish().unwrap();
        assert_eq!(
            String::from_utf8(t.into_inner()).unwrap(),
            "# HELP x_total Counts \\\\ things.\\nReally.\n# TYPE x_total counter\n\
             x_total{a=\"1\",b=\"q\\\"\"} 2\nx_total 3\n"
        );
    }

    #[test]
    fn promtool_reads_every_escape_and_special_value() {
        // The unit tests above pin our reading of the format; promtool is the reference reader.
        let mut t = Text::new(Vec::new());
        t.family(
            "edge_values",
            "Values \"quoted\", \\ and\nnewline.",
            Kind::Gauge,
        )
        .unwrap();
        let cases = [
            ("nan", Num::F(f64::NAN)),
            ("inf", Num::F(f64::INFINITY)),
            ("neg_inf", Num::F(f64::NEG_INFINITY)),
            ("neg_zero", Num::F(-0.0)),
            ("frac", Num::F(0.125)),
            ("big", Num::F(1e300)),
            ("neg", Num::I(-5)),
        ];
        for (case, v) in cases {
            let value = format!("{case} \\ \" \n 实例");
            t.sample("edge_values", &[("case", case), ("v", &value)], v)
                .unwrap();
        }
        let page = t.into_inner();
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is installed (scripts/install-test-tools)");
        child.stdin.take().unwrap().write_all(&page).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.trim().is_empty(), "{said}");
    }
}
