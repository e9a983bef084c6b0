//! Cross-field and cross-reference checks on the typed config, and compilation of the routes
//! into one router per listener. Every problem is reported with its position in the file.

use crate::diag::Diagnostic;
use crate::schema::{Config, Listener, Route, Upstream, ValueCondition};
use crate::yaml::{Node, PathSeg};

mod certificates;
mod compose;
mod evolution;
mod resilience;
mod split;
use resilience::{fallback, resilience};
use std::collections::{HashMap, HashSet};
use torii_router::{
    HeaderCondition, PathKind, PathPattern, QueryCondition, RouteSpec, Router, ValueMatcher,
};

/// A config whose elements were deserialized one by one: an element that failed (already
/// reported) is `None`, so the others can still be checked.
#[derive(Debug, Default)]
pub(crate) struct Partial {
    pub listeners: Vec<Option<Listener>>,
    pub upstreams: Vec<Option<Upstream>>,
    pub routes: Vec<Option<Route>>,
    /// Names written on elements that failed to deserialize: references to them are not
    /// reported again.
    pub broken_names: HashSet<String>,
    /// Whether the config has a top-level `versioning`.
    pub versioning: bool,
}

/// The routers compiled from a valid config: one per listener, with route indices as values.
pub type Routers = HashMap<String, Router<usize>>;

struct Ctx<'a> {
    tree: &'a Node,
    out: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, path: &[PathSeg<'_>], msg: impl Into<String>, hint: impl Into<String>) {
        let pos = self.tree.pos_at(path);
        let (mut msg, mut hint) = (msg.into(), hint.into());
        // Never echo a value that came from the environment: show it as written instead.
        // Messages quote values as `value` or "value"; only those quoted forms are replaced, so a
        // short value cannot garble the rest of the message.
        self.tree.visit_expanded(&mut |value, raw| {
            if !value.is_empty() {
                for (q1, q2) in [("`", "`"), ("\"", "\"")] {
                    let (from, to) = (format!("{q1}{value}{q2}"), format!("{q1}{raw}{q2}"));
                    msg = msg.replace(&from, &to);
                    hint = hint.replace(&from, &to);
                }
            }
        });
        self.out
            .push(Diagnostic::new(Some(pos), render(path), msg).with_hint(hint));
    }
}

fn render(path: &[PathSeg<'_>]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) if s.is_empty() => s.push_str(k),
            PathSeg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            PathSeg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn unique_names<'a>(
    ctx: &mut Ctx<'_>,
    section: &'static str,
    names: impl Iterator<Item = (usize, &'a str)>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names {
        if name.is_empty() {
            ctx.err(
                &[
                    PathSeg::Key(section),
                    PathSeg::Index(i),
                    PathSeg::Key("name"),
                ],
                "name must not be empty",
                "give every entry a unique name",
            );
        } else if let Some(first) = seen.insert(name, i) {
            ctx.err(
                &[
                    PathSeg::Key(section),
                    PathSeg::Index(i),
                    PathSeg::Key("name"),
                ],
                format!("duplicate name `{name}` (also used by {section}[{first}])"),
                "names must be unique within a section",
            );
        }
    }
}

/// Checks everything serde and the schema cannot, and compiles the routers.
pub(crate) fn validate(tree: &Node, p: &Partial, out: &mut Vec<Diagnostic>) -> Routers {
    let mut ctx = Ctx {
        tree,
        out: Vec::new(),
    };
    if p.listeners.is_empty() && !p.broken_names.contains("listeners") {
        ctx.err(
            &[PathSeg::Key("listeners")],
            "at least one listener is required",
            "add e.g. `listeners: [{name: public, bind: \"0.0.0.0:8080\"}]`",
        );
    }
    unique_names(
        &mut ctx,
        "listeners",
        p.listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i, l.as_ref()?.name.as_str()))),
    );
    unique_names(
        &mut ctx,
        "upstreams",
        p.upstreams
            .iter()
            .enumerate()
            .filter_map(|(i, u)| Some((i, u.as_ref()?.name.as_str()))),
    );
    unique_names(
        &mut ctx,
        "routes",
        p.routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.as_ref()?.name.as_str()))),
    );

    let mut binds = HashMap::new();
    for (i, l) in p.listeners.iter().enumerate() {
        let Some(l) = l else { continue };
        if l.bind.0.port() != 0
            && let Some(first) = binds.insert(l.bind.0, i)
        {
            ctx.err(
                &[
                    PathSeg::Key("listeners"),
                    PathSeg::Index(i),
                    PathSeg::Key("bind"),
                ],
                format!(
                    "address {} is already bound by listeners[{first}]",
                    l.bind.0
                ),
                "use a different port",
            );
        }
        if l.limits.max_connections == 0 {
            ctx.err(
                &[
                    PathSeg::Key("listeners"),
                    PathSeg::Index(i),
                    PathSeg::Key("limits"),
                    PathSeg::Key("max_connections"),
                ],
                "must be at least 1",
                "set a positive connection limit",
            );
        }
        if l.limits.min_transfer_rate.0 > 0 && l.limits.transfer_rate_window.0.is_zero() {
            ctx.err(
                &[
                    PathSeg::Key("listeners"),
                    PathSeg::Index(i),
                    PathSeg::Key("limits"),
                    PathSeg::Key("transfer_rate_window"),
                ],
                "must be longer than 0 while min_transfer_rate is set",
                "set a window such as `10s`, or `min_transfer_rate: 0B` to turn the rule off",
            );
        }
        if let Some(tls) = &l.tls {
            tls_files(
                &mut ctx,
                &[
                    PathSeg::Key("listeners"),
                    PathSeg::Index(i),
                    PathSeg::Key("tls"),
                ],
                tls,
            );
        }
    }
    for (i, u) in p.upstreams.iter().enumerate() {
        let Some(u) = u else { continue };
        let at = |k| {
            [
                PathSeg::Key("upstreams"),
                PathSeg::Index(i),
                PathSeg::Key(k),
            ]
        };
        // Targets written but left out for their own errors (reported at their keys) are
        // not "no target".
        let broken_targets = ctx
            .tree
            .at(&at("targets"))
            .is_some_and(crate::yaml::Node::is_non_empty_list);
        match (&u.discovery, u.targets.is_empty()) {
            (None, true) if broken_targets => {}
            (None, true) => ctx.err(
                &at("targets"),
                "an upstream needs at least one target",
                "add `targets: [{url: \"http://127.0.0.1:8080\"}]`, or `discovery: {dns: {name: users.internal, port: 8080}}`",
            ),
            (Some(_), false) => ctx.err(
                &at("discovery"),
                "an upstream takes its targets from `targets` or from `discovery`, not both",
                "remove `targets` (discovery finds them) or `discovery`",
            ),
            (Some(d), true) => resilience::discovery(&mut ctx, i, &d.dns),
            (None, false) => {}
        }
        for (t, target) in u.targets.iter().enumerate() {
            if let Some(first) = u.targets[..t].iter().position(|o| {
                o.url.authority() == target.url.authority() && o.url.tls == target.url.tls
            }) {
                ctx.err(
                    &[
                        PathSeg::Key("upstreams"),
                        PathSeg::Index(i),
                        PathSeg::Key("targets"),
                        PathSeg::Index(t),
                        PathSeg::Key("url"),
                    ],
                    format!("the same target as targets[{first}]"),
                    "list each target once; give it a higher `weight` for a larger share",
                );
            }
            if target.weight == 0 {
                ctx.err(
                    &[
                        PathSeg::Key("upstreams"),
                        PathSeg::Index(i),
                        PathSeg::Key("targets"),
                        PathSeg::Index(t),
                        PathSeg::Key("weight"),
                    ],
                    "weight must be at least 1",
                    "remove the target instead of giving it weight 0",
                );
            }
        }
        let tls_at = |k| {
            [
                PathSeg::Key("upstreams"),
                PathSeg::Index(i),
                PathSeg::Key("tls"),
                PathSeg::Key(k),
            ]
        };
        if let Some(ca) = &u.tls.ca
            && let Err(e) = crate::schema::pem::certs(ca)
        {
            ctx.err(
                &tls_at("ca"),
                e,
                "give the path of a PEM file with the CA certificate(s)",
            );
        }
        match (&u.tls.client_cert, &u.tls.client_key) {
            (Some(c), Some(k)) => {
                if let Err(e) = crate::schema::pem::certs(c) {
                    ctx.err(
                        &tls_at("client_cert"),
                        e,
                        "give the path of a PEM certificate chain",
                    );
                }
                if let Err(e) = crate::schema::pem::key(k) {
                    ctx.err(
                        &tls_at("client_key"),
                        e,
                        "give the path of the PEM private key",
                    );
                }
            }
            (Some(_), None) => ctx.err(
                &tls_at("client_cert"),
                "`client_cert` needs `client_key`",
                "add the private key of the client certificate",
            ),
            (None, Some(_)) => ctx.err(
                &tls_at("client_key"),
                "`client_key` needs `client_cert`",
                "add the client certificate",
            ),
            (None, None) => {}
        }
        if u.pool.max_connections_per_target == 0 {
            ctx.err(
                &[
                    PathSeg::Key("upstreams"),
                    PathSeg::Index(i),
                    PathSeg::Key("pool"),
                    PathSeg::Key("max_connections_per_target"),
                ],
                "must be at least 1",
                "set a positive connection cap",
            );
        }
        if u.pool.max_streams_per_connection == 0 {
            ctx.err(
                &[
                    PathSeg::Key("upstreams"),
                    PathSeg::Index(i),
                    PathSeg::Key("pool"),
                    PathSeg::Key("max_streams_per_connection"),
                ],
                "must be at least 1",
                "set how many requests may share one HTTP/2 connection, e.g. 100",
            );
        }
        resilience(&mut ctx, i, u);
        resilience::hedging(&mut ctx, i, u);
    }

    let upstream_names: Vec<&str> = p
        .upstreams
        .iter()
        .flatten()
        .map(|u| u.name.as_str())
        .collect();
    let listener_names: Vec<&str> = p
        .listeners
        .iter()
        .flatten()
        .map(|l| l.name.as_str())
        .collect();
    let mut specs: Vec<(usize, RouteSpec<usize>, &[String])> = Vec::new();
    for (i, r) in p.routes.iter().enumerate() {
        let Some(r) = r else { continue };
        if let Some(spec) = check_route(&mut ctx, p, i, r, &upstream_names, &listener_names) {
            specs.push((i, spec, &r.listeners));
        }
    }

    // One router per listener, over the routes that apply to it. Duplicates are reported once.
    let mut routers = Routers::new();
    let mut reported = HashSet::new();
    for l in p.listeners.iter().flatten() {
        let mine: Vec<&(usize, RouteSpec<usize>, &[String])> = specs
            .iter()
            .filter(|(_, _, ls)| ls.is_empty() || ls.contains(&l.name))
            .collect();
        let spec_list: Vec<RouteSpec<usize>> = mine.iter().map(|(_, s, _)| s.clone()).collect();
        match Router::build(spec_list) {
            Ok(router) => {
                routers.insert(l.name.clone(), router);
            }
            Err(errors) => {
                for e in errors {
                    match e {
                        torii_router::BuildError::Duplicate { first, second } => {
                            let (a, b) = (mine[first].0, mine[second].0);
                            if reported.insert((a, b)) {
                                ctx.err(
                                    &[PathSeg::Key("routes"), PathSeg::Index(b), PathSeg::Key("match")],
                                    format!("route has the same match conditions as routes[{a}]"),
                                    "two routes with identical matches can never both be reached; change or remove one",
                                );
                            }
                        }
                        other => {
                            // Host syntax is checked above with positions; anything else the
                            // router rejects is reported on the route.
                            let route = match &other {
                                torii_router::BuildError::InvalidHost { route, .. } => {
                                    mine[*route].0
                                }
                                _ => mine[0].0,
                            };
                            if reported.insert((route, usize::MAX)) {
                                ctx.err(
                                    &[
                                        PathSeg::Key("routes"),
                                        PathSeg::Index(route),
                                        PathSeg::Key("match"),
                                    ],
                                    other.to_string(),
                                    "fix the route's match conditions",
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    out.append(&mut ctx.out);
    routers
}

fn check_route(
    ctx: &mut Ctx<'_>,
    p: &Partial,
    i: usize,
    r: &Route,
    upstreams: &[&str],
    listeners: &[&str],
) -> Option<RouteSpec<usize>> {
    let at = |k: &'static str| [PathSeg::Key("routes"), PathSeg::Index(i), PathSeg::Key(k)];
    let m_at = |k: &'static str| {
        [
            PathSeg::Key("routes"),
            PathSeg::Index(i),
            PathSeg::Key("match"),
            PathSeg::Key(k),
        ]
    };
    let mut ok = true;
    let actions = [
        r.upstream.is_some(),
        r.split.is_some(),
        r.direct_response.is_some(),
        r.compose.is_some(),
    ];
    if let Some(c) = &r.compose
        && actions.iter().filter(|a| **a).count() == 1
    {
        compose::compose(ctx, p, i, c, upstreams);
        if r.rewrite.is_some() {
            ctx.err(
                &at("rewrite"),
                "a rewrite has no effect on a composition (each call names its path)",
                "remove `rewrite`",
            );
        }
    }
    match (&r.upstream, &r.split, &r.direct_response) {
        _ if r.compose.is_some() && actions.iter().filter(|a| **a).count() == 1 => {}
        (Some(name), None, None) if r.compose.is_none() => {
            split::known_upstream(ctx, p, &at("upstream"), name, upstreams);
        }
        (None, Some(sp), None) if r.compose.is_none() => split::split(ctx, p, i, sp, upstreams),
        (None, None, Some(d)) if r.compose.is_none() => {
            if !(100..=599).contains(&d.status) || http::StatusCode::from_u16(d.status).is_err() {
                ctx.err(
                    &[
                        PathSeg::Key("routes"),
                        PathSeg::Index(i),
                        PathSeg::Key("direct_response"),
                        PathSeg::Key("status"),
                    ],
                    format!("{} is not an HTTP status", d.status),
                    "use a status from 100 to 599",
                );
            }
            for (name, value) in &d.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || http::HeaderValue::from_str(value).is_err()
                {
                    ctx.err(
                        &[
                            PathSeg::Key("routes"),
                            PathSeg::Index(i),
                            PathSeg::Key("direct_response"),
                            PathSeg::Key("headers"),
                            PathSeg::Key(name),
                        ],
                        format!("invalid header `{name}`"),
                        "header names are letters, digits and `-`; values are visible ASCII",
                    );
                }
            }
            if r.rewrite.is_some() {
                ctx.err(
                    &at("rewrite"),
                    "a rewrite has no effect on a direct response",
                    "remove `rewrite`",
                );
            }
        }
        (None, None, None) => ctx.err(
            &at("name"),
            "the route has none of `upstream`, `split`, `direct_response` and `compose`",
            "add `upstream: NAME`, a `split`, a `direct_response` or a `compose`",
        ),
        _ => ctx.err(
            &at("name"),
            "a route has exactly one of `upstream`, `split`, `direct_response` and `compose`",
            "keep one of them",
        ),
    }
    if let Some(d) = &r.deprecation {
        evolution::deprecation(ctx, i, d);
    }
    if let Some(v) = &r.matches.version {
        evolution::route_version(ctx, i, v, p.versioning);
    }
    if let Some(f) = &r.fallback {
        fallback(ctx, i, r.upstream.is_some() || r.split.is_some(), f);
    }
    for (key, d) in [
        ("response_headers", r.timeouts.response_headers),
        ("total", r.timeouts.total),
    ] {
        if d.is_some_and(|d| d.0.is_zero()) {
            ctx.err(
                &[
                    PathSeg::Key("routes"),
                    PathSeg::Index(i),
                    PathSeg::Key("timeouts"),
                    PathSeg::Key(key),
                ],
                "a zero timeout would fail every request",
                "give a positive duration, or remove the key to use the upstream's",
            );
        }
    }
    for (li, l) in r.listeners.iter().enumerate() {
        if !listeners.contains(&l.as_str()) && !p.broken_names.contains(l) {
            ctx.err(
                &[
                    PathSeg::Key("routes"),
                    PathSeg::Index(i),
                    PathSeg::Key("listeners"),
                    PathSeg::Index(li),
                ],
                format!("unknown listener `{l}`"),
                format!("known listeners: {}", listeners.join(", ")),
            );
        }
    }

    let m = &r.matches;
    let (kind, text, key) = match (&m.path, &m.path_prefix) {
        (Some(p), None) => (PathKind::Exact, p.as_str(), "path"),
        (None, Some(p)) => (PathKind::Prefix, p.as_str(), "path_prefix"),
        (Some(_), Some(_)) => {
            ctx.err(
                &m_at("path_prefix"),
                "`path` and `path_prefix` cannot both be set",
                "keep one of them",
            );
            return None;
        }
        (None, None) => {
            ctx.err(
                &[
                    PathSeg::Key("routes"),
                    PathSeg::Index(i),
                    PathSeg::Key("match"),
                ],
                "a route needs `path` or `path_prefix`",
                "add e.g. `path_prefix: /`",
            );
            return None;
        }
    };
    let pattern = match PathPattern::parse(kind, text) {
        Ok(p) => Some(p),
        Err(e) => {
            ctx.err(
                &m_at(key),
                format!("invalid path pattern `{text}`: {e}"),
                "patterns look like `/users/{id}` or `/files/{*rest}`",
            );
            None
        }
    };
    for (hi, h) in m.hosts.iter().enumerate() {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        let valid = !bare.contains('*')
            && torii_router::normalize_host(bare)
                .is_ok_and(|n| n == bare.to_ascii_lowercase().trim_end_matches('.'));
        if !valid {
            ctx.err(
                &[
                    PathSeg::Key("routes"),
                    PathSeg::Index(i),
                    PathSeg::Key("match"),
                    PathSeg::Key("hosts"),
                    PathSeg::Index(hi),
                ],
                format!("`{h}` is not a host name"),
                "write `api.example.com` or `*.example.com`, without a port",
            );
            ok = false;
        }
    }
    let mut headers = Vec::new();
    for (ci, c) in m.headers.iter().enumerate() {
        match condition(ctx, i, "headers", ci, c) {
            Some(matcher) => headers.push(HeaderCondition {
                name: c.name.0.clone(),
                matcher,
            }),
            None => ok = false,
        }
    }
    let mut query = Vec::new();
    for (ci, c) in m.query.iter().enumerate() {
        match condition(ctx, i, "query", ci, c) {
            Some(matcher) => query.push(QueryCondition {
                name: c.name.clone(),
                matcher,
            }),
            None => ok = false,
        }
    }
    if let (Some(rw), Some(_)) = (&r.rewrite, &pattern) {
        let rw_at = |k: &'static str| {
            [
                PathSeg::Key("routes"),
                PathSeg::Index(i),
                PathSeg::Key("rewrite"),
                PathSeg::Key(k),
            ]
        };
        match (&rw.strip_prefix, &rw.path) {
            (Some(prefix), None) => {
                if !prefix.starts_with('/') {
                    ctx.err(
                        &rw_at("strip_prefix"),
                        "a prefix starts with `/`",
                        "write e.g. `/api`",
                    );
                }
            }
            (None, Some(template)) => {
                if let Err(msg) = crate::template::check(template, text) {
                    ctx.err(
                        &rw_at("path"),
                        msg,
                        "use only parameters the route's path declares, e.g. `/v2/accounts/{id}`",
                    );
                }
            }
            _ => ctx.err(
                &[
                    PathSeg::Key("routes"),
                    PathSeg::Index(i),
                    PathSeg::Key("rewrite"),
                ],
                "a rewrite has exactly one of `strip_prefix` and `path`",
                "keep one of them",
            ),
        }
    }
    let pattern = pattern?;
    ok.then(|| RouteSpec {
        value: i,
        hosts: m.hosts.clone(),
        path: pattern,
        methods: m.methods.iter().map(|x| x.0.clone()).collect(),
        headers,
        query,
        version: m.version.clone(),
    })
}

fn condition<N>(
    ctx: &mut Ctx<'_>,
    route: usize,
    section: &'static str,
    ci: usize,
    c: &ValueCondition<N>,
) -> Option<ValueMatcher> {
    let at = [
        PathSeg::Key("routes"),
        PathSeg::Index(route),
        PathSeg::Key("match"),
        PathSeg::Key(section),
        PathSeg::Index(ci),
    ];
    match (&c.value, &c.regex, c.present) {
        (Some(v), None, None) => Some(ValueMatcher::Exact(v.clone())),
        (None, Some(r), None) => Some(ValueMatcher::Regex(r.regex.clone())),
        (None, None, Some(true)) => Some(ValueMatcher::Present),
        (None, None, Some(false)) => {
            ctx.err(
                &at,
                "`present: false` is not supported",
                "remove the condition, or use `present: true`",
            );
            None
        }
        _ => {
            ctx.err(
                &at,
                "a condition has exactly one of `value`, `regex` and `present`",
                "keep one of them",
            );
            None
        }
    }
}

/// The fully valid config, once every element deserialized and no check failed.
pub(crate) fn assemble(p: Partial, rest: Config) -> Config {
    Config {
        listeners: p.listeners.into_iter().flatten().collect(),
        upstreams: p.upstreams.into_iter().flatten().collect(),
        routes: p.routes.into_iter().flatten().collect(),
        ..rest
    }
}

/// Checks of the process-wide settings that need the machine: the spool directory exists.
pub(crate) fn server(tree: &Node, config: &Config) -> Vec<Diagnostic> {
    let server = &config.server;
    let mut ctx = Ctx {
        tree,
        out: Vec::new(),
    };
    if let Some(v) = &config.versioning {
        evolution::versioning(&mut ctx, v);
    }
    admin(&mut ctx, &config.admin);
    certificates::check(&mut ctx, config);
    let buffering = &server.response_buffering;
    if let Some(dir) = &buffering.temp_dir
        && buffering.enabled
        && !std::path::Path::new(dir).is_dir()
    {
        ctx.err(
            &[
                PathSeg::Key("server"),
                PathSeg::Key("response_buffering"),
                PathSeg::Key("temp_dir"),
            ],
            format!("`{dir}` is not a directory"),
            "name an existing directory the gateway can write to, or leave the key out to use the system's temporary directory",
        );
    }
    ctx.out
}

/// A non-loopback admin listener needs tokens; token hashes are well-formed and names unique.
fn admin(ctx: &mut Ctx<'_>, admin: &crate::schema::Admin) {
    if let Some(tls) = &admin.tls {
        tls_files(ctx, &[PathSeg::Key("admin"), PathSeg::Key("tls")], tls);
    }
    let mutual = admin
        .tls
        .as_ref()
        .and_then(|t| t.client_auth.as_ref())
        .is_some_and(|c| c.required);
    if admin.enabled && !admin.bind.0.ip().is_loopback() && admin.tokens.is_empty() && !mutual {
        ctx.err(
            &[PathSeg::Key("admin"), PathSeg::Key("bind")],
            format!(
                "the admin listener on {} is reachable from other hosts without authentication",
                admin.bind.0
            ),
            "add `admin.tokens` (hashes from `torii hash-key --generate`), require client certificates (`admin.tls.client_auth.required: true`), or bind to 127.0.0.1",
        );
    }
    let mut seen = HashSet::new();
    for (i, t) in admin.tokens.iter().enumerate() {
        let hex = t.token_hash.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            ctx.err(
                &[
                    PathSeg::Key("admin"),
                    PathSeg::Key("tokens"),
                    PathSeg::Index(i),
                    PathSeg::Key("token_hash"),
                ],
                "not a token hash (`sha256:` and 64 hex digits); it may be a raw token",
                "store only the hash printed by `torii hash-key --generate`",
            );
        }
        if !seen.insert(t.name.as_str()) {
            ctx.err(
                &[
                    PathSeg::Key("admin"),
                    PathSeg::Key("tokens"),
                    PathSeg::Index(i),
                    PathSeg::Key("name"),
                ],
                format!("admin token `{}` is listed twice", t.name),
                "token names must be unique",
            );
        }
    }
}

/// The PEM files of a TLS listener (a listener's or the admin listener's) can be read and
/// parsed; `base` is the path of its `tls` key.
fn tls_files(ctx: &mut Ctx<'_>, base: &[PathSeg<'_>], tls: &crate::schema::ListenerTls) {
    let at = |keys: &[PathSeg<'static>]| -> Vec<PathSeg<'_>> {
        base.iter().copied().chain(keys.iter().copied()).collect()
    };
    if let Some(ca) = tls.client_auth.as_ref().map(|c| &c.ca)
        && let Err(e) = crate::schema::pem::certs(ca)
    {
        ctx.err(
            &at(&[PathSeg::Key("client_auth"), PathSeg::Key("ca")]),
            e,
            "point `ca` at a PEM file with the CA certificates of your clients",
        );
    }
    if tls.certificates.is_empty() {
        ctx.err(
            &at(&[PathSeg::Key("certificates")]),
            "TLS needs at least one certificate",
            "add `certificates: [{cert: cert.pem, key: key.pem}]`",
        );
    }
    for (c, files) in tls.certificates.iter().enumerate() {
        let file_at = |k: &'static str| {
            at(&[
                PathSeg::Key("certificates"),
                PathSeg::Index(c),
                PathSeg::Key(k),
            ])
        };
        if let Err(e) = crate::schema::pem::certs(&files.cert) {
            ctx.err(
                &file_at("cert"),
                e,
                "give the path of a PEM certificate chain, leaf first",
            );
        }
        if let Err(e) = crate::schema::pem::key(&files.key) {
            ctx.err(
                &file_at("key"),
                e,
                "give the path of the PEM private key of that certificate",
            );
        }
    }
}
