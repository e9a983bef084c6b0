//! Runtime entities: consumers, routes, upstreams and global plugin settings created through
//! the admin API rather than written in the config file. The effective config is the file
//! with these added; both go through the one load path ([`crate::load_source`]).
//!
//! Ownership: an entity declared in the file belongs to the file. A runtime entity with the
//! name of a file entity is refused (at the admin API write, and again when a reloaded file
//! starts declaring a name the store already has), so neither silently shadows the other.

use crate::diag::{Diagnostic, Pos};
use crate::yaml::{Key, Kind, Node};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The kinds of runtime entity, in the order they are added to the config.
pub const KINDS: [EntityKind; 5] = [
    EntityKind::Upstreams,
    EntityKind::Routes,
    EntityKind::Consumers,
    EntityKind::Plugins,
    EntityKind::Certificates,
];

/// A kind of runtime entity: a list section of the config whose elements have a `name`, or
/// (`plugins`) the global plugin map, whose entries are named by the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// `upstreams[]`.
    Upstreams,
    /// `routes[]`.
    Routes,
    /// `consumers[]`.
    Consumers,
    /// `plugins.<name>`: global plugin settings.
    Plugins,
    /// `certificates[]`: TLS certificates (PEM text) served by TLS listeners.
    Certificates,
}

impl EntityKind {
    /// The config section (and admin API collection) name.
    pub fn section(self) -> &'static str {
        match self {
            Self::Upstreams => "upstreams",
            Self::Routes => "routes",
            Self::Consumers => "consumers",
            Self::Plugins => "plugins",
            Self::Certificates => "certificates",
        }
    }

    /// The kind of a section name.
    pub fn from_section(s: &str) -> Option<Self> {
        KINDS.into_iter().find(|k| k.section() == s)
    }

    /// One entity of this kind, for messages.
    pub fn singular(self) -> &'static str {
        match self {
            Self::Upstreams => "upstream",
            Self::Routes => "route",
            Self::Consumers => "consumer",
            Self::Plugins => "global plugin",
            Self::Certificates => "certificate",
        }
    }
}

/// One runtime entity: its settings as given (JSON, the shape of a config element) and the
/// store revision that last changed it (its ETag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// The element, exactly as the config file would hold it (for plugins: the plugin's
    /// settings).
    pub value: Value,
    /// The revision that wrote it.
    pub revision: u64,
}

/// The entities of one kind, by name: a persistent (structure-sharing) ordered map, so the
/// running set is copied in constant time and one change costs O(log n) however many
/// entities there are (a change must not cost more at 100,000 consumers than at 10).
pub type Entities = imbl::OrdMap<String, Entity>;

/// Every runtime entity at one store revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// The store revision (0: nothing was ever written).
    pub revision: u64,
    /// When that revision was written (RFC 3339, microseconds, UTC): with the number, it
    /// identifies the revision, so a node can tell a store restored from a backup (the same
    /// number written again) from the one it followed.
    #[serde(default)]
    pub at: Option<String>,
    /// Entities by kind, then by name.
    #[serde(default)]
    pub entities: BTreeMap<EntityKind, Entities>,
}

impl Runtime {
    /// The entities of one kind.
    pub fn of(&self, kind: EntityKind) -> Option<&Entities> {
        self.entities.get(&kind)
    }

    /// One entity.
    pub fn get(&self, kind: EntityKind, name: &str) -> Option<&Entity> {
        self.of(kind).and_then(|m| m.get(name))
    }

    /// Number of entities of every kind.
    pub fn len(&self) -> usize {
        self.entities.values().map(Entities::len).sum()
    }

    /// True when there is no runtime entity.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a config is loaded from: the file's text and the runtime entities. Kept with the
/// running config, so an admin API write validates the new runtime set against the same
/// file text the gateway runs, and a file reload keeps the runtime entities.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file name shown in messages.
    pub name: String,
    /// The file's text.
    pub text: Arc<str>,
    /// The runtime entities.
    pub runtime: Arc<Runtime>,
}

impl Source {
    /// A file without runtime entities.
    pub fn file(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
            runtime: Arc::default(),
        }
    }

    /// The same file with other runtime entities.
    #[must_use]
    pub fn with_runtime(&self, runtime: Arc<Runtime>) -> Self {
        Self {
            name: self.name.clone(),
            text: self.text.clone(),
            runtime,
        }
    }
}

/// Where a runtime entity landed in the merged tree, to map diagnostics back to it.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    /// (section, first merged index, names in order) per list kind.
    lists: Vec<(EntityKind, usize, Vec<String>)>,
    /// Global plugin names that came from the store.
    plugins: Vec<String>,
}

/// A node with no source position (runtime values are not in the file).
fn node(kind: Kind) -> Node {
    Node {
        kind,
        pos: Pos::default(),
        end: Pos::default(),
        raw: None,
    }
}

/// Converts a JSON value into a tree node without position.
pub(crate) fn from_json(v: &Value) -> Node {
    node(match v {
        Value::Null => Kind::Null,
        Value::Bool(b) => Kind::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Kind::Int(i),
            None => Kind::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Kind::Str(s.clone()),
        Value::Array(items) => Kind::Seq(items.iter().map(from_json).collect()),
        Value::Object(m) => Kind::Map(
            m.iter()
                .map(|(k, v)| {
                    (
                        Key {
                            name: k.clone(),
                            pos: Pos::default(),
                        },
                        from_json(v),
                    )
                })
                .collect(),
        ),
    })
}

/// Names declared in a list section of the file.
fn file_names(tree: &Node, section: &str) -> Vec<String> {
    match tree.get(section).map(|n| &n.kind) {
        Some(Kind::Seq(items)) => items
            .iter()
            .filter_map(|i| match i.get("name").map(|n| &n.kind) {
                Some(Kind::Str(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Adds the runtime entities to the file's tree. A name the file declares too is reported
/// (ownership) and the runtime entity left out.
pub(crate) fn merge(tree: &mut Node, runtime: &Runtime, out: &mut Vec<Diagnostic>) -> Placement {
    let mut placement = Placement::default();
    if runtime.is_empty() {
        return placement;
    }
    if !matches!(tree.kind, Kind::Map(_)) {
        return placement;
    }
    for kind in KINDS {
        let Some(entities) = runtime.of(kind) else {
            continue;
        };
        if entities.is_empty() {
            continue;
        }
        let section = kind.section();
        let owned: Vec<String> = if kind == EntityKind::Plugins {
            match tree.get(section).map(|n| &n.kind) {
                Some(Kind::Map(entries)) => entries.iter().map(|(k, _)| k.name.clone()).collect(),
                _ => Vec::new(),
            }
        } else {
            file_names(tree, section)
        };
        let mut added: Vec<(String, Node)> = Vec::new();
        for (name, e) in entities {
            if owned.iter().any(|n| n == name) {
                out.push(
                    Diagnostic::new(
                        None,
                        format!("{section}.{name}"),
                        format!(
                            "{} `{name}` is declared in the config file and in the config store",
                            kind.singular()
                        ),
                    )
                    .with_hint(format!(
                        "the file owns what it declares: remove `{name}` from the file, or delete the runtime one (DELETE /config/{section}/{name})"
                    ))
                    .at_pointer(format!("/{section}/{}", escape(name))),
                );
                continue;
            }
            added.push((name.clone(), from_json(&e.value)));
        }
        let Kind::Map(root) = &mut tree.kind else {
            return placement;
        };
        let slot = match root.iter().position(|(k, _)| k.name == section) {
            Some(i) => i,
            None => {
                let empty = if kind == EntityKind::Plugins {
                    Kind::Map(Vec::new())
                } else {
                    Kind::Seq(Vec::new())
                };
                root.push((
                    Key {
                        name: section.into(),
                        pos: Pos::default(),
                    },
                    node(empty),
                ));
                root.len() - 1
            }
        };
        let target = &mut root[slot].1;
        if matches!(target.kind, Kind::Null) {
            target.kind = if kind == EntityKind::Plugins {
                Kind::Map(Vec::new())
            } else {
                Kind::Seq(Vec::new())
            };
        }
        match &mut target.kind {
            Kind::Map(entries) if kind == EntityKind::Plugins => {
                for (name, n) in added {
                    placement.plugins.push(name.clone());
                    entries.push((
                        Key {
                            name,
                            pos: Pos::default(),
                        },
                        n,
                    ));
                }
            }
            Kind::Seq(items) if kind != EntityKind::Plugins => {
                let first = items.len();
                let names = added.iter().map(|(n, _)| n.clone()).collect();
                items.extend(added.into_iter().map(|(_, n)| n));
                placement.lists.push((kind, first, names));
            }
            // The file's section has the wrong type; the schema check reports it.
            _ => {}
        }
    }
    placement
}

/// `~` and `/` escaped for a JSON pointer token (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl Placement {
    /// The placement of one runtime entity of a list kind, checked on its own as element 0
    /// of its section.
    pub(crate) fn one(kind: EntityKind, name: &str) -> Self {
        Self {
            lists: vec![(kind, 0, vec![name.to_string()])],
            plugins: Vec::new(),
        }
    }

    /// The placement of one runtime global plugin's settings.
    pub(crate) fn plugin(name: &str) -> Self {
        Self {
            lists: Vec::new(),
            plugins: vec![name.to_string()],
        }
    }

    /// Points a diagnostic about a runtime entity at it: a JSON pointer into the store
    /// (`/consumers/alice/keys/0`) instead of a file position.
    pub(crate) fn locate(&self, mut d: Diagnostic) -> Diagnostic {
        if d.pos.is_some_and(|p| p.line == 0) {
            d.pos = None;
        }
        if d.pointer.is_some() {
            return d;
        }
        let path = d.path.clone();
        for (kind, first, names) in &self.lists {
            let section = kind.section();
            let Some(rest) = path.strip_prefix(section).and_then(|r| r.strip_prefix('[')) else {
                continue;
            };
            let Some((idx, tail)) = rest.split_once(']') else {
                continue;
            };
            let Ok(i) = idx.parse::<usize>() else {
                continue;
            };
            if let Some(name) = i.checked_sub(*first).and_then(|j| names.get(j)) {
                d.pos = None;
                d.pointer = Some(format!("/{section}/{}{}", escape(name), pointer_tail(tail)));
            }
            return d;
        }
        if let Some(rest) = path.strip_prefix("plugins.") {
            let (name, tail) = match rest.find(['.', '[']) {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            if self.plugins.iter().any(|p| p == name) {
                d.pos = None;
                d.pointer = Some(format!("/plugins/{}{}", escape(name), pointer_tail(tail)));
            }
        }
        d
    }
}

/// `.match.path[2]` as a JSON pointer tail (`/match/path/2`).
fn pointer_tail(tail: &str) -> String {
    let mut out = String::new();
    for part in tail.split(['.', '[']) {
        if part.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(&escape(part.trim_end_matches(']')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_tails() {
        assert_eq!(pointer_tail(".match.path"), "/match/path");
        assert_eq!(pointer_tail(".keys[0]"), "/keys/0");
        assert_eq!(pointer_tail(""), "");
        assert_eq!(escape("a/b~c"), "a~1b~0c");
    }
}
