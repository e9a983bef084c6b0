//! One runtime consumer checked on its own, for a consumer change that does not load the whole
//! config (the admin API's consumer writes): the same schema check and the same
//! deserialization as [`crate::load_source`] gives the consumer's element, with diagnostics
//! pointing into the config store (`/consumers/<name>/...`). What involves other consumers
//! (unique names, ids and credentials) and the plugin settings are checked by the plugin
//! catalog against the running consumers.

use crate::PathSeg;
use crate::diag::{Diagnostic, KeyPath};
use crate::runtime::{EntityKind, Placement, from_json};
use crate::yaml::{Key, Kind, Node};
use crate::{PluginCatalog, PluginError, schema};
use serde_json::Value;

/// `{consumers: [node]}`: the element in a document of its own, so key paths read as in the
/// file (`consumers[0].keys[0]`).
fn document(node: Node) -> Node {
    let list = Node {
        kind: Kind::Seq(vec![node]),
        pos: Default::default(),
        end: Default::default(),
        raw: None,
    };
    Node {
        kind: Kind::Map(vec![(
            Key {
                name: "consumers".into(),
                pos: Default::default(),
            },
            list,
        )]),
        pos: Default::default(),
        end: Default::default(),
        raw: None,
    }
}

/// Checks the runtime consumer `name` (its element as JSON) against the config schema and
/// deserializes it.
pub fn check_consumer<C: PluginCatalog + ?Sized>(
    name: &str,
    value: &Value,
    catalog: &C,
) -> Result<schema::Consumer, Vec<Diagnostic>> {
    let placement = Placement::one(EntityKind::Consumers, name);
    let root = catalog.config_schema();
    let Some(item) = root.pointer("/properties/consumers/items") else {
        return Err(vec![Diagnostic::new(
            None,
            "consumers",
            "the config schema has no consumer element",
        )]);
    };
    let node = from_json(value);
    let mut out = Vec::new();
    let path = KeyPath::root().key("consumers").index(0);
    crate::check::check_at(root, item, &node, &path, &mut out);
    let tree = document(node);
    if !out.is_empty() {
        return Err(located(&tree, &placement, out));
    }
    crate::deserialize(
        &tree,
        &[PathSeg::Key("consumers"), PathSeg::Index(0)],
        value.clone(),
    )
    .map_err(|d| located(&tree, &placement, vec![d]))
}

/// Diagnostics pointed into the store, with the entity's credentials hidden (as the whole
/// load hides them).
fn located(tree: &Node, placement: &Placement, items: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut items: Vec<Diagnostic> = items.into_iter().map(|d| placement.locate(d)).collect();
    crate::secrets::redact_items(tree, &mut items);
    items
}

/// Checks a runtime entity of any kind against the config schema alone (its element's schema;
/// for a global plugin, that plugin's settings), as the loader's schema check would: the admin
/// API runs it before anything else, so a malformed body gets its errors (with pointers into
/// the store) before preconditions or the whole load.
pub fn check_entity<C: PluginCatalog + ?Sized>(
    kind: EntityKind,
    name: &str,
    value: &Value,
    catalog: &C,
) -> Result<(), Vec<Diagnostic>> {
    let root = catalog.config_schema();
    let section = kind.section();
    let (placement, schema, path) = if kind == EntityKind::Plugins {
        let schema = root
            .pointer("/$defs/PluginMap/properties")
            .and_then(|p| p.get(name));
        let Some(schema) = schema else {
            return Err(vec![
                Diagnostic::new(
                    None,
                    format!("plugins.{name}"),
                    format!("unknown plugin `{name}`"),
                )
                .with_hint("see docs/plugins.md for the list")
                .at_pointer(format!("/plugins/{}", crate::runtime::escape(name))),
            ]);
        };
        (
            Placement::plugin(name),
            schema,
            KeyPath::root().key("plugins").key(name),
        )
    } else {
        let Some(item) = root.pointer(&format!("/properties/{section}/items")) else {
            return Ok(());
        };
        (
            Placement::one(kind, name),
            item,
            KeyPath::root().key(section).index(0),
        )
    };
    let mut out = Vec::new();
    let node = from_json(value);
    crate::check::check_at(root, schema, &node, &path, &mut out);
    if out.is_empty() {
        Ok(())
    } else {
        Err(located(&node, &placement, out))
    }
}

/// Diagnostics of plugin-catalog errors about the runtime consumer `name` (key paths under
/// `consumers[0]`), pointing into the config store.
pub fn consumer_diagnostics(
    name: &str,
    value: &Value,
    errors: Vec<PluginError>,
) -> Vec<Diagnostic> {
    let placement = Placement::one(EntityKind::Consumers, name);
    let tree = document(from_json(value));
    let items = errors
        .into_iter()
        .map(|e| crate::plugin_diagnostic(&tree, e))
        .collect();
    located(&tree, &placement, items)
}
