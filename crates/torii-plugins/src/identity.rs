//! Identity propagation: what the upstream learns about the consumer, and the removal of
//! client-sent copies of those headers (in both spellings) so identity cannot be spoofed.

use http::{HeaderMap, HeaderName, HeaderValue};
use torii_core::Consumer;

/// The identity headers of a config.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    id: HeaderName,
    name: HeaderName,
    groups: HeaderName,
    anonymous: HeaderName,
    /// The identity-token header: the configured one, or the default name when tokens are
    /// not configured (a client must never pass one off as the gateway's, whatever the config).
    token: HeaderName,
}

/// The default identity-token header, always stripped from client requests.
static DEFAULT_TOKEN: HeaderName = HeaderName::from_static("x-identity-token");

static TRUE: HeaderValue = HeaderValue::from_static("true");

/// `a` and `b` name the same variable once `_` and `-` are treated alike (many frameworks map
/// `X_Consumer_Id` and `X-Consumer-Id` to the same CGI-style variable). Both are lowercase.
fn same_variable(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let norm = |c: u8| if c == b'_' { b'-' } else { c };
            norm(x) == norm(y)
        })
}

/// Removes every header that is one of `names` in any `_`/`-` spelling. The common case (none
/// present) is one pass over the header names comparing lengths first, without hashing or
/// allocating.
pub(crate) fn remove_spellings<'n>(
    headers: &mut HeaderMap,
    names: impl Iterator<Item = &'n HeaderName> + Clone,
) {
    let spoofed = |k: &HeaderName| {
        let k = k.as_str();
        names
            .clone()
            .any(|n| n.as_str().len() == k.len() && same_variable(n.as_str(), k))
    };
    if !headers.keys().any(spoofed) {
        return;
    }
    let found: Vec<HeaderName> = headers.keys().filter(|k| spoofed(k)).cloned().collect();
    for k in found {
        headers.remove(&k);
    }
}

impl IdentityHeaders {
    /// From the config section.
    pub fn new(c: &torii_config::schema::Identity) -> Self {
        Self {
            id: c.id_header.0.clone(),
            name: c.name_header.0.clone(),
            groups: c.groups_header.0.clone(),
            anonymous: c.anonymous_header.0.clone(),
            token: c
                .token
                .as_ref()
                .map_or_else(|| DEFAULT_TOKEN.clone(), |t| t.header.0.clone()),
        }
    }

    /// The headers that carry a consumer's identity (id, name, groups, anonymous), for
    /// calls the gateway makes on a consumer's behalf (composition).
    pub fn consumer_names(&self) -> [HeaderName; 4] {
        [
            self.id.clone(),
            self.name.clone(),
            self.groups.clone(),
            self.anonymous.clone(),
        ]
    }

    fn all(&self) -> impl Iterator<Item = &HeaderName> + Clone {
        [
            &self.id,
            &self.name,
            &self.groups,
            &self.anonymous,
            &self.token,
            &DEFAULT_TOKEN,
        ]
        .into_iter()
    }

    /// Removes every client-sent identity header, whatever its spelling. Runs on every
    /// proxied request.
    pub fn strip(&self, headers: &mut HeaderMap) {
        remove_spellings(headers, self.all());
    }

    /// The consumer's identity as `apply` would add it, each field's name and value handed to
    /// `field`, for a writer that takes fields without a header map (the HTTP/1.1 encoder's
    /// extra fields). Call [`IdentityHeaders::clear_for`] on the request's map first, so no
    /// other value of these names goes with them.
    pub fn each(&self, consumer: &Consumer, field: &mut dyn FnMut(&HeaderName, &[&[u8]])) {
        field(&self.id, &[consumer.headers.id.as_bytes()]);
        field(&self.name, &[consumer.headers.name.as_bytes()]);
        if let Some(g) = &consumer.headers.groups {
            field(&self.groups, &[g.as_bytes()]);
        }
        if consumer.anonymous {
            field(&self.anonymous, &[TRUE.as_bytes()]);
        }
    }

    /// Removes from `headers` the fields [`IdentityHeaders::each`] will send for `consumer`
    /// (a value a plugin set under one of these names), as `apply`'s inserts replace them.
    pub fn clear_for(&self, headers: &mut HeaderMap, consumer: &Consumer) {
        headers.remove(&self.id);
        headers.remove(&self.name);
        if consumer.headers.groups.is_some() {
            headers.remove(&self.groups);
        }
        if consumer.anonymous {
            headers.remove(&self.anonymous);
        }
    }

    /// Adds the consumer's identity.
    pub fn apply(&self, headers: &mut HeaderMap, consumer: &Consumer) {
        headers.insert(self.id.clone(), consumer.headers.id.clone());
        headers.insert(self.name.clone(), consumer.headers.name.clone());
        if let Some(g) = &consumer.headers.groups {
            headers.insert(self.groups.clone(), g.clone());
        }
        if consumer.anonymous {
            headers.insert(self.anonymous.clone(), TRUE.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn strips_both_spellings() {
        let ids = IdentityHeaders::new(&Default::default());
        let mut h = HeaderMap::new();
        for n in [
            "x-consumer-id",
            "x_consumer_id",
            "X_Consumer-Name",
            "x-consumer_groups",
            "x_anonymous_consumer",
            "x-other_header",
        ] {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof"),
            );
        }
        ids.strip(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-other_header"]);
    }

    #[test]
    fn the_default_token_header_is_stripped_with_or_without_tokens() {
        let spoof = |names: &[&str]| {
            let mut h = HeaderMap::new();
            for n in names {
                h.insert(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_static("forged"),
                );
            }
            h
        };
        // No identity token configured.
        let ids = IdentityHeaders::new(&Default::default());
        let mut h = spoof(&["x-identity-token", "X_Identity_Token", "x-keep"]);
        ids.strip(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-keep"]);

        // Configured under another name: both names go.
        let c = torii_config::schema::Identity {
            token: Some(torii_config::schema::IdentityToken {
                header: torii_config::values::HeaderName(HeaderName::from_static("x-gw-token")),
                issuer: "https://gw".into(),
                ttl: torii_config::values::Duration::secs(60),
                keys: Vec::new(),
                signing_key: None,
                copy_claims: Vec::new(),
                jwks_path: "/jwks".into(),
            }),
            ..Default::default()
        };
        let ids = IdentityHeaders::new(&c);
        let mut h = spoof(&["x-identity-token", "x_gw_token", "x-keep"]);
        ids.strip(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-keep"]);
    }
}
