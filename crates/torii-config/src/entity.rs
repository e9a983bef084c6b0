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
    if !out.is_empty() {
        return Err(out.into_iter().map(|d| placement.locate(d)).collect());
    }
    let tree = document(node);
    crate::deserialize(
        &tree,
        &[PathSeg::Key("consumers"), PathSeg::Index(0)],
        value.clone(),
    )
    .map_err(|d| vec![placement.locate(d)])
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
    errors
        .into_iter()
        .map(|e| placement.locate(crate::plugin_diagnostic(&tree, e)))
        .collect()
}
