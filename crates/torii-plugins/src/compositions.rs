//! The compositions of a load: each composite route's `compose` compiled against the load's
//! upstreams (its errors reported at their lines, like plugin settings), with its store of
//! last good values kept in the plugin state so a reload that keeps the route keeps them.

use crate::IdentityHeaders;
use crate::identity_token::{Audience, TokenSigner};
use crate::state::{StateKey, StateRegistry};
use std::collections::HashMap;
use std::sync::Arc;
use torii_compose::{Composition, LastGood, Vouch};
use torii_core::RequestContext;

/// The identity token of one upstream, for a composition's calls to it.
struct Signed {
    signer: Arc<TokenSigner>,
    audience: Audience,
}

impl Vouch for Signed {
    fn token(&self, ctx: &RequestContext) -> Option<(http::HeaderName, http::HeaderValue)> {
        let consumer = ctx.consumer.as_ref()?;
        let token = self
            .signer
            .token(consumer, ctx.identity.as_deref(), &self.audience)?;
        Some((self.signer.header().clone(), token))
    }
}
use torii_config::schema::Config;
use torii_config::{PluginError, Seg};

/// One entry per route: its composition, or `None` for routes that proxy or answer directly.
pub(crate) fn build(
    config: &Config,
    upstreams: &torii_upstream::Upstreams,
    identity: &IdentityHeaders,
    tokens: (Option<&Arc<TokenSigner>>, &HashMap<String, Audience>),
    state: &StateRegistry,
    errors: &mut Vec<PluginError>,
) -> Vec<Option<Arc<Composition>>> {
    let identity = identity.consumer_names();
    let vouch = |upstream: &str| -> Option<Arc<dyn Vouch>> {
        let (signer, audiences) = tokens;
        Some(Arc::new(Signed {
            signer: signer?.clone(),
            audience: audiences.get(upstream)?.clone(),
        }))
    };
    config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = r.compose.as_deref()?;
            let params = crate::template::pattern_params(
                r.matches
                    .path
                    .as_deref()
                    .or(r.matches.path_prefix.as_deref())
                    .unwrap_or("/"),
            );
            let last_good = state.get_or_insert(
                StateKey::new(
                    "compose",
                    &format!("route:{}", r.name),
                    &serde_json::Value::Null,
                ),
                LastGood::default,
            );
            let inputs = torii_compose::Inputs {
                params: &params,
                upstreams,
                identity: &identity,
                vouch: &vouch,
                last_good,
            };
            match torii_compose::compile(c, inputs) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    for (path, message, hint) in e {
                        let mut p = vec![
                            Seg::Key("routes".into()),
                            Seg::Index(i),
                            Seg::Key("compose".into()),
                        ];
                        p.extend(path);
                        errors.push(PluginError::new(p, message, hint));
                    }
                    None
                }
            }
        })
        .collect()
}
