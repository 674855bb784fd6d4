//! A server's own lines on standard error: its start, its stop, warnings, and each request it
//! refused. As text (the default) or, with `--log-format json`, one JSON object per line for a
//! log collector: `{"ts", "level", "server", "msg", …}`.
//!
//! Like the metrics, a line holds no client's words: a refused request is logged as its
//! operation (one of the server's own names, or `invalid`), the refusal's code and the time it
//! took; never a user's name, an image id, a token or a path the client chose (the audit log
//! names the user of every request, where only auditors read it). A client that sends refused
//! requests as fast as it can does not fill the disk through the log: at most
//! [`REFUSALS_PER_SECOND`] refusal lines a second are written, and the next line says how many
//! were left out.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// Refusal lines written in one second at most.
pub const REFUSALS_PER_SECOND: u32 = 20;

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// `node 3: message key=value …`
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("{s:?} is not a log format: text or json")),
        }
    }
}

static FORMAT: AtomicU8 = AtomicU8::new(0);
static SERVER: OnceLock<String> = OnceLock::new();
static REFUSALS: Mutex<Window> = Mutex::new(Window {
    start: None,
    written: 0,
    dropped: 0,
});

/// Refusal lines of the current second.
struct Window {
    start: Option<Instant>,
    written: u32,
    dropped: u64,
}

/// Set the format, and the server's name every line carries (`node 3`, `keeper 1`); once, as
/// the server starts.
pub fn init(format: Format, server: &str) {
    FORMAT.store(format as u8, Ordering::Relaxed);
    let _ = SERVER.set(server.to_string());
}

fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

/// Something the operator should know of.
pub fn info(message: &str, fields: &[(&str, Value)]) {
    write("info", message, fields);
}

/// Something the operator should act on.
pub fn warn(message: &str, fields: &[(&str, Value)]) {
    write("warn", message, fields);
}

/// A request refused with `outcome` (the refusal's code) for `op`, after `took`; within
/// [`REFUSALS_PER_SECOND`].
pub fn refused(op: &'static str, outcome: &'static str, took: Duration) {
    let dropped = {
        let mut w = REFUSALS.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if w.start
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            w.start = Some(now);
            w.written = 0;
        }
        if w.written >= REFUSALS_PER_SECOND {
            w.dropped += 1;
            return;
        }
        w.written += 1;
        std::mem::take(&mut w.dropped)
    };
    let mut fields = vec![
        ("op", json!(op)),
        ("outcome", json!(outcome)),
        ("ms", json!((took.as_secs_f64() * 1e4).round() / 10.0)),
    ];
    if dropped > 0 {
        fields.push(("refusals_left_out", json!(dropped)));
    }
    write("warn", "refused", &fields);
}

fn write(level: &str, message: &str, fields: &[(&str, Value)]) {
    let line = render(format(), level, message, fields);
    // Standard error may be closed (a parent that went away): the server goes on.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// One line, without its newline.
fn render(format: Format, level: &str, message: &str, fields: &[(&str, Value)]) -> String {
    let server = SERVER.get().map_or("obscura", String::as_str);
    match format {
        Format::Json => {
            let mut line = Map::new();
            line.insert(
                "ts".into(),
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            );
            line.insert("level".into(), json!(level));
            line.insert("server".into(), json!(server));
            line.insert("msg".into(), json!(message));
            for (k, v) in fields {
                line.insert((*k).into(), v.clone());
            }
            Value::Object(line).to_string()
        }
        Format::Text => {
            let mut line = format!("{server}: ");
            if level != "info" {
                line.push_str(level);
                line.push_str(": ");
            }
            line.push_str(message);
            for (k, v) in fields {
                match v {
                    Value::String(s) => line.push_str(&format!(" {k}={s}")),
                    v => line.push_str(&format!(" {k}={v}")),
                }
            }
            line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_one_object_with_the_servers_name_and_the_fields() {
        let line = render(
            Format::Json,
            "warn",
            "refused",
            &[("op", json!("lookup")), ("outcome", json!("forbidden"))],
        );
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "refused");
        assert_eq!(v["op"], "lookup");
        assert_eq!(v["outcome"], "forbidden");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        // A message with quotes and a newline stays one line of valid JSON.
        let odd = render(Format::Json, "info", "a \"b\"\nc", &[]);
        assert!(!odd.contains('\n'));
        assert_eq!(
            serde_json::from_str::<Value>(&odd).unwrap()["msg"],
            "a \"b\"\nc"
        );
        let text = render(
            Format::Text,
            "info",
            "listening",
            &[("on", json!("127.0.0.1:1"))],
        );
        assert!(text.ends_with("listening on=127.0.0.1:1"), "{text}");
        assert_eq!("json".parse(), Ok(Format::Json));
        assert!("yaml".parse::<Format>().is_err());
    }

    #[test]
    fn refusals_beyond_the_rate_are_counted_not_written() {
        for _ in 0..REFUSALS_PER_SECOND * 3 {
            refused("lookup", "forbidden", Duration::from_millis(1));
        }
        let w = REFUSALS.lock().unwrap();
        assert!(w.written <= REFUSALS_PER_SECOND);
        assert!(w.dropped >= u64::from(REFUSALS_PER_SECOND), "{}", w.dropped);
    }
}
