//! The consumer directory: every consumer of a config and the indexes credentials are looked
//! up in, built once per load. Lookups are hash-map reads, never scans over consumers.

use argon2::PasswordHash;
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use torii_config::schema::Consumer as ConsumerConfig;
use torii_config::{PluginError, Seg};
use torii_core::{Consumer, ConsumerHeaders};

/// Length of an API-key digest (SHA-256).
pub const KEY_DIGEST_LEN: usize = 32;

/// SHA-256 of an API key: keys are high-entropy secrets, so a fast digest is enough (a slow
/// password hash would only burn CPU per request); only digests are stored.
pub fn key_digest(key: &[u8]) -> [u8; KEY_DIGEST_LEN] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    let mut out = [0u8; KEY_DIGEST_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// Longest key accepted; longer values are refused without hashing.
pub const MAX_KEY_LEN: usize = 1024;

/// The digest of a presented key, or `None` when it is empty or longer than
/// [`MAX_KEY_LEN`] (refused without hashing).
pub fn key_digest_checked(key: &[u8]) -> Option<[u8; KEY_DIGEST_LEN]> {
    (!key.is_empty() && key.len() <= MAX_KEY_LEN).then(|| key_digest(key))
}

/// The stored form of a key: `sha256:<64 lowercase hex digits>` (what `torii hash-key` prints).
pub fn format_key_hash(key: &[u8]) -> String {
    let mut s = String::from("sha256:");
    for b in key_digest(key) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A new random API key: 256 bits from the system's CSPRNG, base64url without padding.
pub fn generate_key() -> Result<String, String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Parses `sha256:<hex>`.
pub fn parse_key_hash(s: &str) -> Result<[u8; KEY_DIGEST_LEN], String> {
    let hex = s.strip_prefix("sha256:").ok_or_else(|| {
        "not a key hash (`sha256:` and 64 hex digits); it may be a raw key".to_string()
    })?;
    if hex.len() != KEY_DIGEST_LEN * 2 {
        return Err(format!(
            "a key hash has {} hex digits after `sha256:`, this one has {}",
            KEY_DIGEST_LEN * 2,
            hex.len()
        ));
    }
    let mut out = [0u8; KEY_DIGEST_LEN];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).map_err(|_| "not hex".to_string())?;
        out[i] = u8::from_str_radix(pair, 16)
            .map_err(|_| "the key hash has characters that are not hex digits".to_string())?;
    }
    Ok(out)
}

/// Entries a directory's change layer holds before it is folded into the base. A change
/// copies the layer (so up to this many entries), and the fold copies the base once per
/// this many entries: a change's cost stays bounded whatever the number of consumers.
const FOLD_AT: usize = 4096;

type Slot = Option<Arc<Consumer>>;

/// A basic-auth user: the consumer and its password hash.
type UserSlot = Option<(Arc<Consumer>, Arc<str>)>;

/// One layer of indexes. In the base every value is `Some`; in the change layer `None`
/// removes what the base has.
#[derive(Default, Clone)]
struct Indexes {
    by_name: HashMap<Arc<str>, Slot>,
    by_id: HashMap<Arc<str>, Slot>,
    /// By SHA-256 digest. foldhash rather than SipHash: the keys are digests of configured
    /// secrets (uniform, and no client can add one), so a fast hash cannot be steered into
    /// long probes, and this lookup runs on every key_auth request.
    by_key: HashMap<[u8; KEY_DIGEST_LEN], Slot, foldhash::fast::RandomState>,
    by_username: HashMap<String, UserSlot>,
    by_cert_name: HashMap<String, Slot>,
}

impl Indexes {
    fn entries(&self) -> usize {
        self.by_name.len()
            + self.by_id.len()
            + self.by_key.len()
            + self.by_username.len()
            + self.by_cert_name.len()
    }

    /// Folds a change layer in.
    fn fold(&mut self, delta: &Indexes) {
        fn apply<K: Eq + std::hash::Hash + Clone, V: Clone, S: std::hash::BuildHasher>(
            into: &mut HashMap<K, Option<V>, S>,
            from: &HashMap<K, Option<V>, S>,
        ) {
            for (k, v) in from {
                match v {
                    Some(v) => {
                        into.insert(k.clone(), Some(v.clone()));
                    }
                    None => {
                        into.remove(k);
                    }
                }
            }
        }
        apply(&mut self.by_name, &delta.by_name);
        apply(&mut self.by_id, &delta.by_id);
        apply(&mut self.by_key, &delta.by_key);
        apply(&mut self.by_username, &delta.by_username);
        apply(&mut self.by_cert_name, &delta.by_cert_name);
    }
}

/// A lookup through the change layer, then the base.
fn find<'a, Q, K, V, S>(
    delta: &'a HashMap<K, Option<V>, S>,
    base: &'a HashMap<K, Option<V>, S>,
    k: &Q,
) -> Option<&'a V>
where
    Q: Eq + std::hash::Hash + ?Sized,
    K: Eq + std::hash::Hash + std::borrow::Borrow<Q>,
    S: std::hash::BuildHasher,
{
    if !delta.is_empty()
        && let Some(v) = delta.get(k)
    {
        return v.as_ref();
    }
    base.get(k)?.as_ref()
}

/// Every consumer, with credential indexes: an immutable value. A change through the admin
/// API makes a new directory ([`Directory::changed`]) that shares the large base with this
/// one and adds a small change layer, so it costs the same at 10 consumers and at 100,000.
#[derive(Default, Clone)]
pub struct Directory {
    base: Arc<Indexes>,
    delta: Indexes,
    len: usize,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("consumers", &self.len)
            .finish()
    }
}

fn seg(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// Builds the header values of a consumer's identity.
///
/// The values are slices of one buffer (the name first, then the id unless it is the name,
/// then the groups), sharing one reference count: a request reads the name (rate-limit keys),
/// clones the values and copies their bytes into its upstream head. With many consumers the
/// buffer is cold in the CPU's caches, so it is laid out to cost one or two cache lines: up to
/// 119 bytes, the count and the bytes are one allocation ([`Inline`]); longer identities use
/// a plain buffer (a line for the count, others for the bytes).
pub fn consumer_headers(name: &str, id: &str, groups: &[Arc<str>]) -> Option<ConsumerHeaders> {
    let mut buf = Vec::with_capacity(name.len() + id.len() + groups.len() * 8);
    buf.extend_from_slice(name.as_bytes());
    let name_at = 0..name.len();
    let id_at = if id == name {
        name_at.clone()
    } else {
        buf.extend_from_slice(id.as_bytes());
        name.len()..buf.len()
    };
    let groups_from = buf.len();
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(g.as_bytes());
    }
    let groups_at = groups_from..buf.len();
    let buf = if buf.len() <= Inline::<55>::MAX {
        Inline::<55>::bytes(&buf)
    } else if buf.len() <= Inline::<119>::MAX {
        Inline::<119>::bytes(&buf)
    } else {
        bytes::Bytes::from(buf)
    };
    let value = |at: std::ops::Range<usize>| HeaderValue::from_maybe_shared(buf.slice(at)).ok();
    Some(ConsumerHeaders {
        id: value(id_at)?,
        name: value(name_at)?,
        groups: if groups.is_empty() {
            None
        } else {
            Some(value(groups_at)?)
        },
    })
}

/// Up to `N` bytes kept in place: `Bytes::from_owner` puts its reference count just before
/// them, so with `N` = 55 or 119 the count and the bytes fill one 64- or 128-byte allocation
/// (the allocator's size classes, aligned to their size).
struct Inline<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Inline<N> {
    const MAX: usize = N;

    /// `b` (at most `N` bytes) as shared bytes in one allocation.
    fn bytes(b: &[u8]) -> bytes::Bytes {
        let mut v = Self {
            len: 0,
            bytes: [0; N],
        };
        // N is below 256 (a `len` of u8); the callers pass at most N bytes.
        let n = b.len().min(N).min(usize::from(u8::MAX));
        v.bytes[..n].copy_from_slice(&b[..n]);
        v.len = u8::try_from(n).unwrap_or(u8::MAX);
        bytes::Bytes::from_owner(v)
    }
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A consumer's plugin settings, as [`Consumer::plan`] and [`Consumer::settings`] hold them.
pub type SettingsOf = (Option<usize>, Option<Arc<dyn std::any::Any + Send + Sync>>);

/// A consumer's config, checked: its identity and credentials as the indexes hold them.
struct Parsed {
    consumer: Arc<Consumer>,
    keys: Vec<(usize, [u8; KEY_DIGEST_LEN])>,
    users: Vec<(usize, String, Arc<str>)>,
    certs: Vec<(usize, String)>,
}

/// Checks one consumer's config; `at` makes the key path of one of its keys.
fn parse(
    c: &ConsumerConfig,
    settings: SettingsOf,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
    errors: &mut Vec<PluginError>,
) -> Option<Parsed> {
    let id: Arc<str> = c.id.as_deref().unwrap_or(&c.name).into();
    let groups: Vec<Arc<str>> = c.groups.iter().map(|g| Arc::from(g.as_str())).collect();
    let Some(headers) = consumer_headers(&c.name, &id, &groups) else {
        errors.push(PluginError::new(
            at(&[seg("name")]),
            "the consumer's name, id or groups contain characters not allowed in a header value",
            "use printable ASCII",
        ));
        return None;
    };
    if c.name.is_empty() || groups.iter().any(|g| g.is_empty() || g.contains(',')) {
        errors.push(PluginError::new(
            at(&[seg("name")]),
            "consumer names and groups must be non-empty, and groups cannot contain `,`",
            "rename it",
        ));
    }
    let mut keys = Vec::with_capacity(c.keys.len());
    for (k, hash) in c.keys.iter().enumerate() {
        match parse_key_hash(hash) {
            Ok(digest) => keys.push((k, digest)),
            Err(e) => errors.push(PluginError::new(
                at(&[seg("keys"), Seg::Index(k)]),
                e,
                "store keys as hashes: run `torii hash-key` and paste its output",
            )),
        }
    }
    let mut users = Vec::with_capacity(c.basic_auth.len());
    for (k, cred) in c.basic_auth.iter().enumerate() {
        match PasswordHash::new(&cred.password_hash) {
            Ok(h) if h.algorithm.as_str().starts_with("argon2") => {
                users.push((k, cred.username.clone(), cred.password_hash.as_str().into()));
            }
            _ => errors.push(PluginError::new(
                at(&[seg("basic_auth"), Seg::Index(k), seg("password_hash")]),
                "not an argon2 password hash",
                "run `torii hash-password` and paste its output (`$argon2id$v=19$...`)",
            )),
        }
    }
    let certs = c.certificate_names.iter().cloned().enumerate().collect();
    let (plan, settings) = settings;
    Some(Parsed {
        consumer: Arc::new(Consumer {
            name: c.name.as_str().into(),
            id,
            groups,
            headers,
            anonymous: false,
            plan,
            settings,
        }),
        keys,
        users,
        certs,
    })
}

impl Directory {
    /// Builds the directory, reporting duplicate names, ids, keys, usernames and certificate
    /// names, and malformed hashes, at their key paths. `settings` holds each consumer's
    /// plugin settings, by position in `list`.
    pub fn build(
        list: &[ConsumerConfig],
        mut settings: impl FnMut(usize) -> SettingsOf,
    ) -> Result<Self, Vec<PluginError>> {
        let mut d = Directory::default();
        let mut errors = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let at = |keys: &[Seg]| {
                let mut p = vec![seg("consumers"), Seg::Index(i)];
                p.extend_from_slice(keys);
                p
            };
            if let Some(p) = parse(c, settings(i), &at, &mut errors) {
                d.add(p, &at, &mut errors);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Built in the change layer (every value `Some`): that is the base.
        d.base = Arc::new(std::mem::take(&mut d.delta));
        Ok(d)
    }

    /// This directory with consumers changed: each `(before, after)` removes the consumer
    /// `before` had (its name, id and credentials) and adds `after`'s, as one step (two
    /// consumers can swap a key). Errors are reported by the change's position, with key
    /// paths under `consumers[0]`. The cost is bounded by the change layer ([`FOLD_AT`]),
    /// not by the number of consumers.
    #[allow(clippy::type_complexity)]
    pub fn changed(
        &self,
        changes: Vec<(
            Option<&ConsumerConfig>,
            Option<(&ConsumerConfig, SettingsOf)>,
        )>,
    ) -> Result<Self, Vec<(usize, PluginError)>> {
        let mut next = self.clone();
        for (before, _) in &changes {
            let Some(c) = before else { continue };
            if next.by_name(&c.name).is_some() {
                next.len -= 1;
            }
            let d = &mut next.delta;
            let id: &str = c.id.as_deref().unwrap_or(&c.name);
            d.by_name.insert(c.name.as_str().into(), None);
            d.by_id.insert(id.into(), None);
            for hash in &c.keys {
                if let Ok(digest) = parse_key_hash(hash) {
                    d.by_key.insert(digest, None);
                }
            }
            for cred in &c.basic_auth {
                d.by_username.insert(cred.username.clone(), None);
            }
            for name in &c.certificate_names {
                d.by_cert_name.insert(name.clone(), None);
            }
        }
        let at = |keys: &[Seg]| {
            let mut p = vec![seg("consumers"), Seg::Index(0)];
            p.extend_from_slice(keys);
            p
        };
        let mut errors = Vec::new();
        for (i, (_, after)) in changes.into_iter().enumerate() {
            let Some((c, settings)) = after else { continue };
            let mut errs = Vec::new();
            if let Some(p) = parse(c, settings, &at, &mut errs) {
                next.add(p, &at, &mut errs);
            }
            errors.extend(errs.into_iter().map(|e| (i, e)));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if next.delta.entries() > FOLD_AT {
            let mut base = (*next.base).clone();
            base.fold(&next.delta);
            next.base = Arc::new(base);
            next.delta = Indexes::default();
        }
        Ok(next)
    }

    /// Adds a checked consumer to the change layer, reporting what another consumer has.
    fn add(&mut self, p: Parsed, at: &dyn Fn(&[Seg]) -> Vec<Seg>, errors: &mut Vec<PluginError>) {
        let c = p.consumer;
        let name_taken = self.by_name(&c.name).is_some();
        if name_taken {
            errors.push(PluginError::new(
                at(&[seg("name")]),
                format!("consumer `{}` is declared twice", c.name),
                "consumer names must be unique",
            ));
        } else if self.by_id(&c.id).is_some() {
            errors.push(PluginError::new(
                at(&[seg("id")]),
                format!("consumer id `{}` is used twice", c.id),
                "ids must be unique (the id defaults to the name)",
            ));
        }
        for (k, digest) in p.keys {
            if self.by_key_digest(&digest).is_some() {
                errors.push(PluginError::new(
                    at(&[seg("keys"), Seg::Index(k)]),
                    "this key hash is used twice",
                    "every API key must belong to one consumer",
                ));
            }
            self.delta.by_key.insert(digest, Some(c.clone()));
        }
        for (k, username, hash) in p.users {
            if self.by_username(&username).is_some() {
                errors.push(PluginError::new(
                    at(&[seg("basic_auth"), Seg::Index(k), seg("username")]),
                    format!("username `{username}` is used twice"),
                    "usernames must be unique across consumers",
                ));
            }
            self.delta
                .by_username
                .insert(username, Some((c.clone(), hash)));
        }
        for (k, name) in p.certs {
            if self.by_cert_name(&name).is_some() {
                errors.push(PluginError::new(
                    at(&[seg("certificate_names"), Seg::Index(k)]),
                    format!("certificate name `{name}` is used twice"),
                    "each certificate name must identify one consumer",
                ));
            }
            self.delta.by_cert_name.insert(name, Some(c.clone()));
        }
        self.delta.by_name.insert(c.name.clone(), Some(c.clone()));
        self.delta.by_id.insert(c.id.clone(), Some(c.clone()));
        self.len += 1;
    }

    /// Number of consumers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no consumer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The consumer owning an API key, given the key's digest. The map finds the candidate by
    /// digest; the digests are then compared in constant time.
    pub fn by_key_digest(&self, digest: &[u8; KEY_DIGEST_LEN]) -> Option<&Arc<Consumer>> {
        if !self.delta.by_key.is_empty()
            && let Some((stored, c)) = self.delta.by_key.get_key_value(digest)
        {
            return c.as_ref().filter(|_| bool::from(stored.ct_eq(digest)));
        }
        let (stored, c) = self.base.by_key.get_key_value(digest)?;
        c.as_ref().filter(|_| bool::from(stored.ct_eq(digest)))
    }

    /// The consumer and password hash (a checked argon2 PHC string) of a basic-auth username.
    pub fn by_username(&self, username: &str) -> Option<(&Arc<Consumer>, &Arc<str>)> {
        let (c, hash) = find(&self.delta.by_username, &self.base.by_username, username)?;
        Some((c, hash))
    }

    /// The consumer with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Consumer>> {
        find(&self.delta.by_id, &self.base.by_id, id)
    }

    /// The consumer with this name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Consumer>> {
        find(&self.delta.by_name, &self.base.by_name, name)
    }

    /// The consumer a certificate name (common name or SAN) belongs to.
    pub fn by_cert_name(&self, name: &str) -> Option<&Arc<Consumer>> {
        find(&self.delta.by_cert_name, &self.base.by_cert_name, name)
    }
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_hash_round_trip() {
        let h = format_key_hash(b"secret-key");
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64);
        assert_eq!(parse_key_hash(&h).unwrap(), key_digest(b"secret-key"));
        assert!(parse_key_hash("sha256:abcd").is_err());
        // No part of what may be a raw key is echoed.
        let e = parse_key_hash("plain-key-value").unwrap_err();
        assert!(e.contains("not a key hash") && !e.contains("plain"), "{e}");
        let e = parse_key_hash(&format!("sha256:{}", "zq".repeat(32))).unwrap_err();
        assert!(!e.contains("zq"), "{e}");
        assert!(parse_key_hash(&h.replace("sha256:", "md5:")).is_err());
    }

    #[test]
    fn identity_values_are_checked_slices_of_one_buffer() {
        // Short, medium and long identities (the buffer's three layouts).
        for n in [1, 50, 55, 56, 100, 119, 120, 300] {
            let name = "n".repeat(n);
            let h = consumer_headers(&name, "id-1", &["g".into()]).unwrap();
            assert_eq!(h.name.as_bytes(), name.as_bytes());
            assert_eq!(h.id, "id-1");
            assert_eq!(h.groups.unwrap(), "g");
        }
        let g: Vec<Arc<str>> = vec!["gold".into(), "beta".into()];
        let h = consumer_headers("alice", "u-17", &g).unwrap();
        assert_eq!(h.name, "alice");
        assert_eq!(h.id, "u-17");
        assert_eq!(h.groups.unwrap(), "gold,beta");
        let h = consumer_headers("bob", "bob", &[]).unwrap();
        assert_eq!(
            (h.name.as_bytes(), h.id.as_bytes()),
            (&b"bob"[..], &b"bob"[..])
        );
        assert!(h.groups.is_none());
        // Each value is still checked as a header value.
        assert!(consumer_headers("a\nb", "x", &[]).is_none());
        assert!(consumer_headers("a", "x\r", &[]).is_none());
        assert!(consumer_headers("a", "x", &["g\u{7f}".into()]).is_none());
    }

    fn consumer(name: &str, keys: &[&str], users: &[&str]) -> ConsumerConfig {
        let users: Vec<serde_json::Value> = users
            .iter()
            .map(|u| {
                serde_json::json!({
                    "username": u,
                    "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$M2Q4ZTVkNTliZjNmYmU3YzQ4NWM"
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "name": name,
            "keys": keys.iter().map(|k| format_key_hash(k.as_bytes())).collect::<Vec<_>>(),
            "basic_auth": users,
        }))
        .unwrap()
    }

    fn owner(d: &Directory, key: &str) -> Option<String> {
        d.by_key_digest(&key_digest(key.as_bytes()))
            .map(|c| c.name.to_string())
    }

    #[test]
    fn changes_add_replace_remove_and_swap_credentials_in_one_step() {
        let list = vec![consumer("a", &["ka"], &["ua"]), consumer("b", &["kb"], &[])];
        let d = Directory::build(&list, |_| (None, None)).unwrap();
        assert_eq!(d.len(), 2);
        // a and b swap keys in one change: neither is "used twice".
        let a2 = consumer("a", &["kb"], &["ua"]);
        let b2 = consumer("b", &["ka"], &[]);
        let c = consumer("c", &["kc"], &["uc"]);
        let next = d
            .changed(vec![
                (Some(&list[0]), Some((&a2, (None, None)))),
                (Some(&list[1]), Some((&b2, (None, None)))),
                (None, Some((&c, (None, None)))),
            ])
            .unwrap();
        assert_eq!(owner(&next, "kb").as_deref(), Some("a"));
        assert_eq!(owner(&next, "ka").as_deref(), Some("b"));
        assert_eq!(owner(&next, "kc").as_deref(), Some("c"));
        assert_eq!(next.len(), 3);
        // The old directory is untouched (requests in flight keep their view).
        assert_eq!(owner(&d, "ka").as_deref(), Some("a"));
        assert!(owner(&d, "kc").is_none());
        // A key someone else has is refused, at the change's position.
        let e = next
            .changed(vec![(
                None,
                Some((&consumer("d", &["kc"], &[]), (None, None))),
            )])
            .unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, 0);
        assert!(e[0].1.message.contains("used twice"), "{}", e[0].1.message);
        // Removing c frees its key and username.
        let gone = next.changed(vec![(Some(&c), None)]).unwrap();
        assert!(owner(&gone, "kc").is_none());
        assert!(gone.by_username("uc").is_none());
        assert!(gone.by_name("c").is_none());
        assert_eq!(
            gone.by_username("ua")
                .map(|(c, _)| c.name.to_string())
                .as_deref(),
            Some("a")
        );
        assert_eq!(gone.len(), 2);
    }

    #[test]
    fn the_change_layer_is_folded_into_the_base_and_lookups_stay_right() {
        let list: Vec<ConsumerConfig> = (0..100)
            .map(|i| consumer(&format!("c{i}"), &[&format!("k{i}")], &[]))
            .collect();
        let mut d = Directory::build(&list, |_| (None, None)).unwrap();
        let mut current = list.clone();
        // Enough changes to fold several times: each moves a consumer to a new key.
        for round in 0..3000 {
            let i = round % 100;
            let next = consumer(&format!("c{i}"), &[&format!("k{i}-{round}")], &[]);
            d = d
                .changed(vec![(Some(&current[i]), Some((&next, (None, None))))])
                .unwrap();
            current[i] = next;
            assert!(d.delta.entries() <= FOLD_AT + 8);
        }
        assert_eq!(d.len(), 100);
        for (i, c) in current.iter().enumerate() {
            let key = format!("k{i}-{}", 2900 + i);
            assert_eq!(owner(&d, &key).as_deref(), Some(c.name.as_str()), "{key}");
            assert!(owner(&d, &format!("k{i}")).is_none());
        }
        assert!(
            d.base.by_key.len() <= 100 + FOLD_AT,
            "old keys were folded away"
        );
    }
}
