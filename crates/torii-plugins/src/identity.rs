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

/// Names an identity field cannot take: the request's framing and routing fields and the
/// fields the gateway itself sets. The HTTP/1.1 writer sends the identity fields beside the
/// request's own (`IdentityHeaders::each`), where no later step would remove such a name,
/// so a second `Content-Length` or `X-Request-Id` would go upstream.
const RESERVED: [&str; 14] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
];

/// Checks the identity field names: none reserved (see [`RESERVED`]), no two alike (also in
/// their `_`/`-` spelling).
pub fn check(c: &torii_config::schema::Identity) -> Vec<torii_config::plugins::PluginError> {
    use torii_config::plugins::{PluginError, Seg};
    let mut names: Vec<(&str, &HeaderName)> = vec![
        ("id_header", &c.id_header.0),
        ("name_header", &c.name_header.0),
        ("groups_header", &c.groups_header.0),
        ("anonymous_header", &c.anonymous_header.0),
    ];
    if let Some(t) = &c.token {
        names.push(("header", &t.header.0));
    }
    let at = |k: &str| {
        let mut p = vec![Seg::Key("identity".into())];
        if k == "header" {
            p.push(Seg::Key("token".into()));
        }
        p.push(Seg::Key(k.into()));
        p
    };
    let mut errors = Vec::new();
    for (i, (k, n)) in names.iter().enumerate() {
        let reserved = RESERVED.iter().find(|r| same_variable(r, n.as_str()));
        if let Some(r) = reserved {
            errors.push(PluginError::new(
                at(k),
                format!(
                    "`{n}` is the request's `{r}` field, which the gateway sets or frames itself"
                ),
                "choose another name, e.g. `x-consumer-id`",
            ));
        } else if let Some((other, _)) = names[..i]
            .iter()
            .find(|(_, m)| same_variable(m.as_str(), n.as_str()))
        {
            errors.push(PluginError::new(
                at(k),
                format!("`{n}` is also `identity.{other}`"),
                "give each identity field a name of its own",
            ));
        }
    }
    errors
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

    /// The consumer's identity fields: id, name, groups (when it has any), and the anonymous
    /// marker (when it is the anonymous consumer). The one list `apply`, `each` and
    /// `clear_for` go through.
    fn fields<'c>(
        &'c self,
        consumer: &'c Consumer,
    ) -> impl Iterator<Item = (&'c HeaderName, &'c HeaderValue)> {
        [
            Some((&self.id, &consumer.headers.id)),
            Some((&self.name, &consumer.headers.name)),
            consumer.headers.groups.as_ref().map(|g| (&self.groups, g)),
            consumer.anonymous.then_some((&self.anonymous, &TRUE)),
        ]
        .into_iter()
        .flatten()
    }

    /// The consumer's identity as `apply` would add it, each field's name and value handed to
    /// `field`, for a writer that takes fields without a header map (the HTTP/1.1 encoder's
    /// extra fields). Call [`IdentityHeaders::clear_for`] on the request's map first, so no
    /// other value of these names goes with them.
    pub fn each(&self, consumer: &Consumer, field: &mut dyn FnMut(&HeaderName, &[&[u8]])) {
        for (name, value) in self.fields(consumer) {
            field(name, &[value.as_bytes()]);
        }
    }

    /// Removes from `headers` the fields [`IdentityHeaders::each`] will send for `consumer`
    /// (a value a plugin set under one of these names), as `apply`'s inserts replace them.
    pub fn clear_for(&self, headers: &mut HeaderMap, consumer: &Consumer) {
        for (name, _) in self.fields(consumer) {
            headers.remove(name);
        }
    }

    /// Adds the consumer's identity.
    pub fn apply(&self, headers: &mut HeaderMap, consumer: &Consumer) {
        for (name, value) in self.fields(consumer) {
            headers.insert(name.clone(), value.clone());
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
    fn identity_names_may_not_be_framing_forwarding_or_each_other() {
        let parse = |v: serde_json::Value| -> torii_config::schema::Identity {
            serde_json::from_value(v).unwrap()
        };
        assert!(check(&Default::default()).is_empty());
        let errs = check(&parse(serde_json::json!({
            "id_header": "content-length",
            "name_header": "X_Request_Id",
            "groups_header": "x-consumer-id",
            "anonymous_header": "x-consumer-id"
        })));
        let shown: Vec<String> = errs
            .iter()
            .map(|e| format!("{:?}: {}", e.path, e.message))
            .collect();
        assert_eq!(errs.len(), 3, "{shown:?}");
        assert!(shown[0].contains("id_header") && shown[0].contains("content-length"));
        assert!(shown[1].contains("name_header") && shown[1].contains("x-request-id"));
        assert!(shown[2].contains("anonymous_header") && shown[2].contains("groups_header"));
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
