//! Diagnostics: one problem in a config file, with where it is and how to fix it.

use std::fmt;

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// One problem found while loading a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is, when known.
    pub pos: Option<Pos>,
    /// The key path, e.g. `routes[3].match.path` (empty for the document root).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// For a runtime entity (created through the admin API), where it is in the config store
    /// as a JSON pointer (`/consumers/alice/keys/0`); `pos` is then `None`.
    pub pointer: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `pos` for `path`.
    pub fn new(pos: Option<Pos>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pos,
            path: path.into(),
            message: message.into(),
            hint: None,
            pointer: None,
        }
    }

    /// Points the diagnostic at a runtime entity.
    #[must_use]
    pub fn at_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    /// Adds a hint telling the user how to fix the problem.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every problem found in one config source, rendered against that source.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The file name shown in messages.
    pub file: String,
    /// The problems, in source order.
    pub items: Vec<Diagnostic>,
    source: String,
    /// Secret values written literally in the source, hidden in every excerpt.
    pub(crate) secrets: Vec<Span>,
    /// No tree could be read (a YAML syntax error), so excerpts hide values by the key their
    /// line or list belongs to instead (`redacting_lines`).
    by_line: bool,
}

/// Where a value is written: from its first character to just past its last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) start: Pos,
    pub(crate) end: Pos,
}

/// Shown instead of a secret.
const REDACTED: &str = "<redacted>";

/// Whether a scalar under map key `key` is a credential. `in_jwk`: inside an inline `jwk`
/// mapping, whose private members are secrets too.
pub fn secret_key(key: &str, in_jwk: bool) -> bool {
    matches!(
        key,
        // consumers[].keys[] (API keys; scalars under `keys` are never anything else),
        // basic_auth passwords, HMAC secrets, OAuth client secrets.
        "keys" | "secret" | "client_secret" | "password" | "password_hash" | "private_key_pem"
    ) || key.ends_with("_secret")
        || key.ends_with("_password")
        || (in_jwk && matches!(key, "k" | "d" | "p" | "q" | "dp" | "dq" | "qi"))
}

/// `text` with every secret value replaced. Values of four characters or more are replaced
/// wherever they occur; shorter ones only where quoted, so they cannot garble the rest.
pub(crate) fn redact_text(text: &str, values: &[String]) -> String {
    let mut out = text.to_string();
    for v in values {
        let debug = format!("{v:?}");
        if v.chars().count() >= 4 {
            out = out.replace(&debug, REDACTED).replace(v.as_str(), REDACTED);
        } else {
            for quoted in [debug, format!("`{v}`"), format!("'{v}'")] {
                out = out.replace(&quoted, REDACTED);
            }
        }
    }
    out
}

/// Where the value of a credential starts on source line `n` (1-based), read from the text
/// alone: the line is `KEY: value` (possibly a list item, `- KEY: value`) with a credential's
/// key, or a block-list item (`- value`) whose list belongs to such a key.
fn secret_value_start(source: &str, n: usize) -> Option<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let line = *lines.get(n.checked_sub(1)?)?;
    let indent = line.len() - line.trim_start().len();
    let mut at = indent;
    let mut rest = &line[indent..];
    let item = rest.starts_with("- ") || rest == "-";
    if item {
        let after = rest.get(1..).unwrap_or("");
        at += 1 + (after.len() - after.trim_start().len());
        rest = after.trim_start();
    }
    let key_of = |text: &str| -> Option<(String, usize)> {
        let colon = text
            .find(": ")
            .or_else(|| text.strip_suffix(':').map(str::len))?;
        let key = text[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
        Some((key.to_string(), colon + 1))
    };
    if let Some((key, after_colon)) = key_of(rest)
        && secret_key(&key, false)
    {
        return Some(at + after_colon);
    }
    // A line of a value that spans lines (a `|` or `>` block, or a scalar continued on
    // more-indented lines) whose key, on the nearest less-indented line above, is a secret:
    // hidden whole (a pasted private key, say).
    if !line.trim().is_empty() {
        for above in lines[..n - 1].iter().rev() {
            let t = above.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let a_indent = above.len() - t.len();
            if a_indent >= indent {
                continue;
            }
            let t = t.strip_prefix("- ").unwrap_or(t).trim_start();
            if let Some((key, _)) = key_of(t)
                && secret_key(&key, false)
            {
                return Some(indent);
            }
            break;
        }
    }
    if !item {
        return None;
    }
    // A block-list item: its list's key is the nearest line above that is indented less (or
    // as much, for `key:` followed by `- item` at the same indent) and ends in `KEY:`.
    for above in lines[..n - 1].iter().rev() {
        let t = above.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let a_indent = above.len() - t.len();
        if a_indent > indent || (a_indent == indent && t.starts_with('-')) {
            continue;
        }
        let t = t.strip_prefix("- ").unwrap_or(t).trim_start();
        return match t.strip_suffix(':') {
            Some(key) if secret_key(key.trim().trim_matches(|c| c == '"' || c == '\''), false) => {
                Some(at)
            }
            _ => None,
        };
    }
    None
}

impl Diagnostics {
    pub(crate) fn new(file: &str, source: &str, mut items: Vec<Diagnostic>) -> Self {
        items.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)).unwrap_or((usize::MAX, 0)));
        items.dedup();
        Self {
            file: file.to_string(),
            items,
            source: source.to_string(),
            secrets: Vec::new(),
            by_line: false,
        }
    }

    /// For diagnostics without a tree (YAML syntax errors): an excerpt line that holds a
    /// credential's value, found by its key (`password: ...`, `keys: [...]`) or by the key of
    /// the block list it is an item of (`keys:` then `- raw-key`), shows `<redacted>` from the
    /// value on.
    #[must_use]
    pub(crate) fn redacting_lines(mut self) -> Self {
        self.by_line = true;
        self
    }

    /// Source line `n` (1-based) with the secrets written on it hidden.
    fn excerpt(&self, n: usize) -> Option<String> {
        let line = self.source.lines().nth(n.saturating_sub(1))?;
        if self.by_line
            && let Some(at) = secret_value_start(&self.source, n)
        {
            return Some(format!("{}{REDACTED}", line.get(..at).unwrap_or("")));
        }
        let spans: Vec<&Span> = self
            .secrets
            .iter()
            .filter(|s| s.start.line <= n && n <= s.end.line)
            .collect();
        if spans.is_empty() {
            return Some(line.to_string());
        }
        let chars: Vec<char> = line.chars().collect();
        let hidden = |i: usize| {
            let col = i + 1;
            spans.iter().any(|s| {
                let after_start = n > s.start.line || col >= s.start.col;
                let before_end = n < s.end.line || col < s.end.col;
                after_start && before_end
            })
        };
        let mut out = String::with_capacity(line.len());
        let mut in_secret = false;
        for (i, c) in chars.iter().enumerate() {
            if hidden(i) {
                if !in_secret {
                    out.push_str(REDACTED);
                }
                in_secret = true;
            } else {
                in_secret = false;
                out.push(*c);
            }
        }
        Some(out)
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there are no problems.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (d.pos, &d.pointer) {
                (_, Some(ptr)) => write!(f, "error: config store {ptr}")?,
                (Some(p), None) => write!(f, "error: {}:{}:{}", self.file, p.line, p.col)?,
                (None, None) => write!(f, "error: {}", self.file)?,
            }
            if d.pointer.is_none() && !d.path.is_empty() {
                write!(f, ": {}", d.path)?;
            }
            writeln!(f, ": {}", d.message)?;
            if let Some(p) = d.pos
                && let Some(line) = self.excerpt(p.line)
            {
                writeln!(f, "  {:>4} | {}", p.line, line)?;
                writeln!(f, "       | {}^", " ".repeat(p.col.saturating_sub(1)))?;
            }
            if let Some(h) = &d.hint {
                writeln!(f, "  help: {h}")?;
            }
        }
        write!(
            f,
            "{} problem{} in {}",
            self.items.len(),
            if self.items.len() == 1 { "" } else { "s" },
            self.file
        )
    }
}

impl std::error::Error for Diagnostics {}

/// A key path under construction, rendered as `a.b[3].c`.
#[derive(Debug, Clone, Default)]
pub struct KeyPath(Vec<Seg>);

#[derive(Debug, Clone)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

impl KeyPath {
    /// The root path.
    pub fn root() -> Self {
        Self::default()
    }
    /// This path extended by a map key.
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }
    pub(crate) fn segs(&self) -> &[Seg] {
        &self.0
    }
    /// This path extended by a sequence index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}
