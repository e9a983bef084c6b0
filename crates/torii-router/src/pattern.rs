//! Path patterns: exact patterns with `{param}` and `{*catch_all}` segments,
//! and segment-boundary prefix patterns.

use std::fmt;

use crate::normalize::{PathError, check_dot_param, decode_segment_into, scan_segment};

/// How a [`PathPattern`] is matched against a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// The whole path must match; a trailing slash is significant.
    Exact,
    /// The path must equal the pattern or continue below it on a segment
    /// boundary; a trailing slash on the pattern is ignored.
    Prefix,
}

/// One segment of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A literal segment, in canonical (normalised) form.
    Static(String),
    /// `{name}`: matches exactly one non-empty segment.
    Param(String),
    /// `{*name}`: matches one or more remaining segments (exact patterns only,
    /// last segment only); the value may contain `/`.
    CatchAll(String),
}

/// The segments of a pattern, shared by both [`PathPattern`] variants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatternSegments {
    segments: Vec<Segment>,
    trailing_slash: bool,
}

impl PatternSegments {
    /// The parsed segments, root first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the pattern ends with `/` (always `false` for prefixes).
    pub fn trailing_slash(&self) -> bool {
        self.trailing_slash
    }
}

/// A parsed path pattern. See [`PathPattern::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    /// An exact pattern such as `/users/{id}` or `/files/{*rest}`.
    Exact(PatternSegments),
    /// A prefix pattern such as `/admin` or `/tenants/{t}`.
    Prefix(PatternSegments),
}

/// Why a pattern could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The literal parts violate the path rules of
    /// [`normalize_path`](crate::normalize_path).
    #[error("invalid pattern path: {0}")]
    Path(#[from] PathError),
    /// A `{...}` segment whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid parameter name in segment {segment:?}")]
    InvalidParamName {
        /// The offending raw segment.
        segment: String,
    },
    /// `{` or `}` somewhere other than around a whole segment.
    #[error("'{{' or '}}' outside a whole-segment parameter in {segment:?}")]
    StrayBrace {
        /// The offending raw segment.
        segment: String,
    },
    /// The same parameter name appears twice.
    #[error("duplicate parameter name {name:?}")]
    DuplicateParam {
        /// The repeated name.
        name: String,
    },
    /// A `{*catch_all}` that is not the last segment (a trailing slash after
    /// it counts as a further segment).
    #[error("a catch-all parameter must be the last segment")]
    CatchAllNotLast,
    /// A `{*catch_all}` in a prefix pattern (a prefix already matches
    /// everything below it).
    #[error("a catch-all parameter is not allowed in a prefix pattern")]
    CatchAllInPrefix,
}

fn valid_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses a raw segment that contains a brace.
fn parse_param(raw: &str) -> Result<Segment, PatternError> {
    let Some(inner) = raw.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        return Err(PatternError::StrayBrace {
            segment: raw.to_owned(),
        });
    };
    let (catch_all, name) = match inner.strip_prefix('*') {
        Some(name) => (true, name),
        None => (false, inner),
    };
    if name.contains(['{', '}']) {
        return Err(PatternError::StrayBrace {
            segment: raw.to_owned(),
        });
    }
    if !valid_param_name(name) {
        return Err(PatternError::InvalidParamName {
            segment: raw.to_owned(),
        });
    }
    Ok(if catch_all {
        Segment::CatchAll(name.to_owned())
    } else {
        Segment::Param(name.to_owned())
    })
}

impl PathPattern {
    /// Parses a pattern of the given kind.
    ///
    /// The text must start with `/`. A parameter is a whole segment `{name}`
    /// (or `{*name}` for a catch-all, exact patterns only, last segment
    /// only); names are `[A-Za-z_][A-Za-z0-9_]*` and unique within a pattern.
    /// Literal segments are normalised with the rules of
    /// [`normalize_path`](crate::normalize_path) (so `/a/%7Eb` and `/a/~b`
    /// are the same pattern, `//a` is `/a`, and dot segments are resolved).
    pub fn parse(kind: PathKind, text: &str) -> Result<PathPattern, PatternError> {
        if text.is_empty() {
            return Err(PathError::Empty.into());
        }
        let Some(body) = text.strip_prefix('/') else {
            return Err(PathError::NotAbsolute.into());
        };
        let mut segments: Vec<Segment> = Vec::new();
        let mut trailing_slash = false;
        let mut offset = 1;
        let mut raw_segments = body.split('/').peekable();
        while let Some(raw) = raw_segments.next() {
            let last = raw_segments.peek().is_none();
            let seg_offset = offset;
            offset += raw.len() + 1;
            trailing_slash = false;
            if raw.contains(['{', '}']) {
                segments.push(parse_param(raw)?);
                continue;
            }
            scan_segment(raw, seg_offset)?;
            let mut decoded = String::with_capacity(raw.len());
            decode_segment_into(raw, &mut decoded);
            check_dot_param(&decoded)?;
            match decoded.as_str() {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                _ => {
                    segments.push(Segment::Static(decoded));
                    continue;
                }
            }
            trailing_slash = last;
        }
        if segments.is_empty() {
            trailing_slash = false;
        }
        for (i, seg) in segments.iter().enumerate() {
            if let Segment::CatchAll(_) = seg {
                if kind == PathKind::Prefix {
                    return Err(PatternError::CatchAllInPrefix);
                }
                if i + 1 != segments.len() || trailing_slash {
                    return Err(PatternError::CatchAllNotLast);
                }
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for seg in &segments {
            if let Segment::Param(name) | Segment::CatchAll(name) = seg {
                if names.contains(&name.as_str()) {
                    return Err(PatternError::DuplicateParam { name: name.clone() });
                }
                names.push(name);
            }
        }
        let parsed = PatternSegments {
            segments,
            trailing_slash: trailing_slash && kind == PathKind::Exact,
        };
        Ok(match kind {
            PathKind::Exact => PathPattern::Exact(parsed),
            PathKind::Prefix => PathPattern::Prefix(parsed),
        })
    }

    /// Whether this is an exact or a prefix pattern.
    pub fn kind(&self) -> PathKind {
        match self {
            PathPattern::Exact(_) => PathKind::Exact,
            PathPattern::Prefix(_) => PathKind::Prefix,
        }
    }

    fn inner(&self) -> &PatternSegments {
        match self {
            PathPattern::Exact(s) | PathPattern::Prefix(s) => s,
        }
    }

    /// The parsed segments, root first.
    pub fn segments(&self) -> &[Segment] {
        &self.inner().segments
    }

    /// Whether the (exact) pattern ends with `/`.
    pub fn trailing_slash(&self) -> bool {
        self.inner().trailing_slash
    }

    /// The parameter names, in path order (a catch-all comes last).
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments().iter().filter_map(|s| match s {
            Segment::Static(_) => None,
            Segment::Param(n) | Segment::CatchAll(n) => Some(n.as_str()),
        })
    }

    /// A key equal for patterns that match exactly the same paths: kind,
    /// segments with parameter names erased, and the trailing slash.
    pub(crate) fn shape_key(&self) -> String {
        let mut key = String::from(match self.kind() {
            PathKind::Exact => "=",
            PathKind::Prefix => "^",
        });
        for seg in self.segments() {
            key.push('/');
            // Static text can never contain a raw brace, so no ambiguity.
            match seg {
                Segment::Static(s) => key.push_str(s),
                Segment::Param(_) => key.push_str("{}"),
                Segment::CatchAll(_) => key.push_str("{*}"),
            }
        }
        if self.trailing_slash() {
            key.push('/');
        }
        key
    }
}

impl fmt::Display for PathPattern {
    /// Renders the normalised pattern text (without the kind).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments().is_empty() {
            return f.write_str("/");
        }
        for seg in self.segments() {
            match seg {
                Segment::Static(s) => write!(f, "/{s}")?,
                Segment::Param(n) => write!(f, "/{{{n}}}")?,
                Segment::CatchAll(n) => write!(f, "/{{*{n}}}")?,
            }
        }
        if self.trailing_slash() {
            f.write_str("/")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
