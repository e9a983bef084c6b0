//! jq filters for JSON bodies (`json.jq` of `request_transform` and `response_transform`),
//! with jaq, a maintained Rust implementation of the jq language. A filter is parsed and
//! compiled once at load (an unknown filter or variable is a config error with its place).
//!
//! Bounds per request: the input is at most the plugin's `max_body` (read before), the
//! output too (larger: an error), and the run has a deadline (`jq_timeout`). jaq cannot be
//! interrupted, so runs happen on a pool of [`max_running`] threads of their own (not the
//! runtime's: a run that never ends must not hold up shutdown). Past its deadline the
//! request gets its error at once and the run finishes on its thread, so a filter that never
//! ends takes at most those threads. A run waits for a free thread within its deadline
//! (holding nothing meanwhile), so a burst queues rather than fails, and a filter that never
//! ends makes later runs time out. Input is checked by serde_json before jaq reads it (JSON
//! only, at most [`MAX_DEPTH`] levels: jaq's reader recurses without a limit), and so is
//! `fromjson`'s text. Only the first output of the filter is the body; a filter with none is an
//! error. The output is checked to be JSON (jaq's values go beyond it: `nan`, byte strings).
//!
//! The filter sees no environment: `env` and `$ENV` are not defined (a config error), and
//! nor are `debug`, `stderr`, `input` and `halt`.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, Vars, data};
use jaq_json::Val;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

type Data = data::JustLut<Val>;

/// Definitions of jaq's library left out with the natives they call.
const LEFT_OUT_DEFS: [&str; 4] = ["stderr", "debug", "halt", "halt_error"];

/// Names of jaq's library this gateway leaves out: they reach outside the document (the
/// environment, the log), or end the process (`halt`: jaq's own helpers would call
/// `std::process::exit`).
const LEFT_OUT: [&str; 6] = [
    "env",
    "halt",
    "debug_empty",
    "stderr_empty",
    "input",
    "inputs",
];

/// A compiled filter.
pub struct Jq {
    filter: Arc<jaq_core::compile::Filter<Native<Data>>>,
    timeout: Duration,
}

/// Why a filter gave no body.
#[derive(Debug)]
pub enum JqError {
    /// The input is not JSON.
    NotJson,
    /// The filter failed (`error`, a type error such as `.a` of an array) or gave nothing.
    Failed(String),
    /// The output is not JSON or is larger than allowed.
    BadOutput(String),
    /// The run passed its deadline, or no slot freed in time.
    TimedOut,
}

/// The most filter runs at once in the process: one per CPU, at least 2 (runaway filters
/// must leave the runtime's threads some CPU).
pub fn max_running() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// The deepest nesting of arrays and objects a document may have to be given to jaq, whose
/// reader and writer recurse (serde_json's own limit is the same).
pub const MAX_DEPTH: usize = 128;

/// Stack of a jq thread: room for jaq's recursion over values a filter builds.
const STACK: usize = 16 << 20;

/// Whether `input` is JSON nesting at most [`MAX_DEPTH`] levels: jaq's own reader recurses
/// without a limit (a deep document would overflow the stack and end the process) and reads
/// more than JSON (comments, `nan`, `+1`), so nothing reaches it unchecked. serde_json checks
/// the grammar without building anything (iteratively, with no depth limit of its own), then
/// a scan counts the nesting, which strict JSON makes simple. `Err(true)`: too deep;
/// `Err(false)`: not JSON.
pub fn checked(input: &[u8]) -> Result<(), bool> {
    serde_json::from_slice::<serde::de::IgnoredAny>(input).map_err(|_| false)?;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in input {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(true);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `fromjson` (and `tonumber`, `toboolean`, which use it) with the same check as bodies.
fn fromjson() -> jaq_core::native::Fun<Data> {
    jaq_core::native::run(("fromjson", jaq_core::native::v(0), |cv| {
        let out = match &cv.1 {
            Val::TStr(b) if checked(b).is_ok() => jaq_json::read::parse_single(b)
                .map_err(|e| jaq_core::Exn::from(jaq_core::Error::str(e))),
            _ => Err(jaq_core::Exn::from(jaq_core::Error::str(
                "fromjson: not JSON text within 128 levels",
            ))),
        };
        Box::new(core::iter::once(out))
    }))
}

/// Jobs the channel holds per thread (callers hold a slot first, so it never fills).
const QUEUE: usize = 1;

/// One run: the filter, its input, the output's limit, where the result goes, its slot.
type Job = (
    Arc<jaq_core::compile::Filter<Native<Data>>>,
    Vec<u8>,
    usize,
    tokio::sync::oneshot::Sender<Result<Vec<u8>, JqError>>,
    tokio::sync::OwnedSemaphorePermit,
);

/// One slot per jq thread.
fn slots() -> &'static Arc<tokio::sync::Semaphore> {
    static SLOTS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(max_running())))
}

/// The pool's queue, its threads started on first use.
fn pool() -> &'static std::sync::mpsc::SyncSender<Job> {
    static POOL: OnceLock<std::sync::mpsc::SyncSender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE * max_running());
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..max_running() {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("torii-jq-{i}"))
                .stack_size(STACK)
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((filter, input, max_out, reply, _slot)) = job else {
                            return;
                        };
                        // A caller gone past its deadline no longer listens.
                        if !reply.is_closed() {
                            // A panic in jaq fails this run, not the thread.
                            let out =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    run(&filter, &input, max_out)
                                }))
                                .unwrap_or_else(|_| {
                                    Err(JqError::Failed("the filter panicked".into()))
                                });
                            let _ = reply.send(out);
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a jq thread: {e}");
            }
        }
        tx
    })
}

/// The character offset of `part` (a slice of `code`) in `code`, when it is one.
fn offset(code: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(code.as_ptr() as usize)?;
    (start <= code.len()).then(|| code[..start.min(code.len())].chars().count() + 1)
}

/// Deepest bracket nesting accepted in a jq filter. jaq's parser recurses once per bracket
/// without a limit, so a filter of half a million `[` would overflow the stack of the thread
/// that loads it (a config change through the admin API included) and abort the process.
pub const MAX_JQ_NESTING: usize = 128;

/// The deepest nesting of `(`, `[` and `{` outside string literals.
fn nesting(code: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for c in code.chars() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

impl Jq {
    /// Parses and compiles `code`.
    pub fn compile(code: &str, timeout: Duration) -> Result<Self, String> {
        if nesting(code) > MAX_JQ_NESTING {
            return Err(format!(
                "the filter nests brackets more than {MAX_JQ_NESTING} deep"
            ));
        }
        let defs = jaq_core::defs()
            .chain(jaq_std::defs().filter(|d| !LEFT_OUT_DEFS.contains(&d.name)))
            .chain(jaq_json::defs());
        let funs = jaq_core::funs::<Data>()
            .chain(jaq_std::funs().filter(|(name, _, _)| !LEFT_OUT.contains(name)))
            .chain(jaq_json::funs().filter(|(name, _, _)| *name != "fromjson"))
            .chain(core::iter::once(fromjson()));
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let at = |part: &str| match offset(code, part) {
            Some(n) => format!(" at character {n}"),
            None => String::new(),
        };
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| {
                let mut out = Vec::new();
                for (_, e) in errs {
                    match e {
                        jaq_core::load::Error::Lex(es) => {
                            for (_, part) in es {
                                out.push(format!("unexpected text{}", at(part)));
                            }
                        }
                        jaq_core::load::Error::Parse(es) => {
                            for (expect, part) in es {
                                out.push(format!("expected {}{}", expect.as_str(), at(part)));
                            }
                        }
                        jaq_core::load::Error::Io(es) => {
                            for (_, msg) in es {
                                out.push(msg);
                            }
                        }
                    }
                }
                format!("the jq filter does not parse: {}", out.join("; "))
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let mut out = Vec::new();
                for (_, es) in errs {
                    for (name, _) in es {
                        out.push(format!("`{name}`{}", at(name)));
                    }
                }
                format!(
                    "the jq filter names what is not defined: {}",
                    out.join(", ")
                )
            })?;
        Ok(Self {
            filter: Arc::new(filter),
            timeout,
        })
    }

    /// Runs the filter on this thread, without a deadline (for fuzzing and benchmarks).
    #[doc(hidden)]
    pub fn run_here(&self, input: &[u8], max_out: usize) -> Result<Vec<u8>, JqError> {
        run(&self.filter, input, max_out)
    }

    /// Runs the filter on `input`: its first output, as JSON of at most `max_out` bytes.
    pub async fn run(&self, input: Vec<u8>, max_out: usize) -> Result<Vec<u8>, JqError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        // A slot first (one per thread), waited for within the deadline: a caller that gives
        // up never hands its input over, and the slot goes back when the run ends.
        let slot = tokio::time::timeout_at(deadline, slots().clone().acquire_owned())
            .await
            .map_err(|_| JqError::TimedOut)?
            .map_err(|_| JqError::TimedOut)?;
        let (reply, result) = tokio::sync::oneshot::channel();
        pool()
            .try_send((self.filter.clone(), input, max_out, reply, slot))
            .map_err(|_| JqError::TimedOut)?;
        match tokio::time::timeout_at(deadline, result).await {
            Ok(Ok(out)) => out,
            Ok(Err(_)) => Err(JqError::Failed("the filter's run ended early".into())),
            Err(_) => Err(JqError::TimedOut),
        }
    }
}

fn run(
    filter: &jaq_core::compile::Filter<Native<Data>>,
    input: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, JqError> {
    match checked(input) {
        Ok(()) => {}
        Err(true) => {
            return Err(JqError::Failed(format!(
                "the document nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Err(false) => return Err(JqError::NotJson),
    }
    let value = jaq_json::read::parse_single(input).map_err(|_| JqError::NotJson)?;
    let ctx = Ctx::<Data>::new(&filter.lut, Vars::new([]));
    // Not `jaq_core::unwrap_valr`: it ends the process on `halt`.
    let first = filter
        .id
        .run((ctx, value))
        .next()
        .ok_or_else(|| JqError::Failed("the filter gave no output".into()))?
        .map_err(|exn| match exn.get_err() {
            Ok(e) => JqError::Failed(e.to_string()),
            Err(_) => JqError::Failed("the filter halted".into()),
        })?;
    let mut out = Vec::with_capacity(input.len().min(max_out));
    write(&first, &mut out, 0, max_out)?;
    // Numbers jaq made from text (`tonumber`) are written as it lexed them: checked.
    serde_json::from_slice::<serde::de::IgnoredAny>(&out)
        .map_err(|_| JqError::BadOutput("the filter's output is not JSON".into()))?;
    Ok(out)
}

/// Writes a jaq value as JSON into `out`, refusing what JSON cannot say (`nan`, byte
/// strings, keys that are not strings), nesting deeper than [`MAX_DEPTH`], or more than
/// `max` bytes. (jaq's own writer goes through `fmt`, about ten times slower, and writes
/// those values in jq's way rather than refusing them.)
fn write(v: &Val, out: &mut Vec<u8>, depth: usize, max: usize) -> Result<(), JqError> {
    let bad = |what: &str| JqError::BadOutput(format!("the filter's output {what}"));
    if out.len() > max {
        return Err(bad(&format!("is over {max} bytes")));
    }
    if depth > MAX_DEPTH {
        return Err(bad(&format!("nests deeper than {MAX_DEPTH} levels")));
    }
    match v {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Num(jaq_json::Num::Int(i)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes())
        }
        Val::Num(jaq_json::Num::BigInt(b)) => out.extend_from_slice(b.to_string().as_bytes()),
        Val::Num(jaq_json::Num::Float(f)) if f.is_finite() => {
            serde_json::to_writer(&mut *out, f).map_err(|_| bad("has a number JSON cannot say"))?
        }
        // A decimal as the input wrote it (valid JSON, kept to the digit).
        Val::Num(jaq_json::Num::Dec(d)) => out.extend_from_slice(d.as_bytes()),
        Val::Num(_) => return Err(bad("has a number JSON cannot say (nan, infinite)")),
        Val::TStr(b) => string(b, out),
        Val::BStr(_) => return Err(bad("has a byte string")),
        Val::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out, depth + 1, max)?;
            }
            out.push(b']');
        }
        Val::Obj(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match k {
                    Val::TStr(k) => string(k, out),
                    _ => return Err(bad("has an object key that is not a string")),
                }
                out.push(b':');
                write(item, out, depth + 1, max)?;
            }
            out.push(b'}');
        }
    }
    if out.len() > max {
        return Err(bad(&format!("is over {max} bytes")));
    }
    Ok(())
}

/// A JSON string of text bytes (invalid UTF-8 replaced, as jaq reads it).
fn string(b: &[u8], out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(b);
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &*text);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn jq(code: &str) -> Jq {
        Jq::compile(code, Duration::from_millis(500)).unwrap()
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser_recurses() {
        let deep = "[".repeat(500_000);
        let e = Jq::compile(&deep, Duration::from_millis(500))
            .err()
            .unwrap();
        assert!(e.contains("nests brackets"), "{e}");
        // Brackets inside strings do not count; a moderate depth still compiles.
        let quoted = format!("\"{}\"", "[".repeat(1000));
        assert!(Jq::compile(&quoted, Duration::from_millis(500)).is_ok());
        let ok = format!("{}.{}", "[".repeat(50), "]".repeat(50));
        assert!(Jq::compile(&ok, Duration::from_millis(500)).is_ok());
    }

    #[tokio::test]
    async fn reshapes_and_bounds() {
        let out = jq("{name: .data.fullName, skus: [.items[].sku]}")
            .run(
                br#"{"data":{"fullName":"Ada"},"items":[{"sku":"A"},{"sku":"B"}]}"#.to_vec(),
                1024,
            )
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"name": "Ada", "skus": ["A", "B"]})
        );
        // Only the first output.
        assert_eq!(jq(".[]").run(b"[1,2]".to_vec(), 10).await.unwrap(), b"1");
        // Errors of the filter, input that is not JSON, output too large or not JSON.
        assert!(matches!(
            jq(".a").run(b"[1]".to_vec(), 10).await,
            Err(JqError::Failed(_))
        ));
        assert!(matches!(
            jq("empty").run(b"1".to_vec(), 10).await,
            Err(JqError::Failed(_))
        ));
        assert!(matches!(
            jq(".").run(b"{".to_vec(), 10).await,
            Err(JqError::NotJson)
        ));
        assert!(matches!(
            jq("[range(100)]").run(b"1".to_vec(), 20).await,
            Err(JqError::BadOutput(_))
        ));
        assert!(matches!(
            jq("nan").run(b"1".to_vec(), 20).await,
            Err(JqError::BadOutput(_))
        ));
        // Numbers as the input wrote them; strings escaped; what JSON cannot say refused.
        assert_eq!(
            jq(".")
                .run(
                    br#"{"a":1.50,"b":"q\"\n\u00e9","c":[true,null,-7,1e400]}"#.to_vec(),
                    100
                )
                .await
                .unwrap(),
            r#"{"a":1.50,"b":"q\"\né","c":[true,null,-7,1e400]}"#
                .as_bytes()
                .to_vec()
        );
        assert_eq!(jq("1.5 * 2").run(b"1".to_vec(), 20).await.unwrap(), b"3.0");
        assert!(matches!(
            jq("{(1): 2}").run(b"1".to_vec(), 20).await,
            Err(JqError::BadOutput(_)) | Err(JqError::Failed(_))
        ));
    }

    #[tokio::test]
    async fn deep_documents_are_refused_before_jaq_reads_them() {
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        assert!(matches!(
            jq(".").run(deep.into_bytes(), 10).await,
            Err(JqError::Failed(_))
        ));
        assert!(matches!(
            jq(".").run("[".repeat(200_000).into_bytes(), 10).await,
            Err(JqError::NotJson)
        ));
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            jq(".").run(ok.clone().into_bytes(), 1000).await.unwrap(),
            ok.as_bytes()
        );
        // jaq's reader takes comments: a comment must not hide a deep document.
        let hidden = format!("#\"\n{}", "[".repeat(200_000));
        assert!(jq(".").run(hidden.into_bytes(), 10).await.is_err());
        // Nor may `fromjson` (or `tonumber`) read one.
        let deep =
            serde_json::to_vec(&format!("{}{}", "[".repeat(200_000), "]".repeat(200_000))).unwrap();
        assert!(matches!(
            jq("fromjson").run(deep, 10).await,
            Err(JqError::Failed(_))
        ));
        assert_eq!(
            jq("tonumber").run(br#""42""#.to_vec(), 10).await.unwrap(),
            b"42"
        );
    }

    #[tokio::test]
    async fn a_slow_filter_times_out() {
        // Long but finite, so the thread it keeps busy frees up before long.
        let f = Jq::compile("last(range(5000000))", Duration::from_millis(20)).unwrap();
        let start = std::time::Instant::now();
        assert!(matches!(
            f.run(b"1".to_vec(), 10).await,
            Err(JqError::TimedOut)
        ));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn load_errors_say_where() {
        let e = Jq::compile(".a | nosuch", Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.contains("`nosuch` at character 6"), "{e}");
        for code in [
            "env",
            "$ENV",
            "input",
            "debug",
            "stderr",
            "halt",
            "halt_error",
        ] {
            let e = Jq::compile(code, Duration::from_secs(1)).err().unwrap();
            assert!(e.contains("not defined"), "{code}: {e}");
        }
        let e = Jq::compile("{a: ", Duration::from_secs(1)).err().unwrap();
        assert!(e.contains("does not parse"), "{e}");
    }
}
