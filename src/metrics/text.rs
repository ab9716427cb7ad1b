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

/// Something that writes a metrics page: family headers, each followed by that family's
/// samples, then the end of the page.
pub trait Exposition {
    /// Starts a family: its HELP and TYPE.
    fn family(&mut self, name: &str, help: &str, kind: Kind) -> io::Result<()>;
    /// One sample of the family last started; `name` carries any suffix (`_bucket`, ...).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Num) -> io::Result<()>;
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
    /// The media type of what it writes.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// A writer of the text format into `w`.
    pub fn new(w: W) -> Self {
        Text { w }
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.w
    }
}

impl<W: Write> Exposition for Text<W> {
    fn family(&mut self, name: &str, help: &str, kind: Kind) -> io::Result<()> {
        self.w.write_all(b"# HELP ")?;
        self.w.write_all(name.as_bytes())?;
        self.w.write_all(b" ")?;
        escape_help(&mut self.w, help)?;
        self.w.write_all(b"\n# TYPE ")?;
        self.w.write_all(name.as_bytes())?;
        self.w.write_all(b" ")?;
        self.w.write_all(kind.as_str().as_bytes())?;
        self.w.write_all(b"\n")
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Num) -> io::Result<()> {
        let w = &mut self.w;
        w.write_all(name.as_bytes())?;
        if !labels.is_empty() {
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
            w.write_all(b"}")?;
        }
        w.write_all(b" ")?;
        write_num(w, value)?;
        w.write_all(b"\n")
    }

    fn raw(&mut self, text: &[u8]) -> io::Result<()> {
        self.w.write_all(text)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.w.flush()
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
