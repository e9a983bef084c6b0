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
}

impl Diagnostic {
    /// A diagnostic at `pos` for `path`.
    pub fn new(pos: Option<Pos>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pos,
            path: path.into(),
            message: message.into(),
            hint: None,
        }
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
}

impl Diagnostics {
    pub(crate) fn new(file: &str, source: &str, mut items: Vec<Diagnostic>) -> Self {
        items.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)).unwrap_or((usize::MAX, 0)));
        items.dedup();
        Self {
            file: file.to_string(),
            items,
            source: source.to_string(),
        }
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
            match d.pos {
                Some(p) => write!(f, "error: {}:{}:{}", self.file, p.line, p.col)?,
                None => write!(f, "error: {}", self.file)?,
            }
            if !d.path.is_empty() {
                write!(f, ": {}", d.path)?;
            }
            writeln!(f, ": {}", d.message)?;
            if let Some(p) = d.pos
                && let Some(line) = self.source.lines().nth(p.line.saturating_sub(1))
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
