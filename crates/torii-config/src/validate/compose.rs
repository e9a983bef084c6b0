//! Checks of a composite route that need no template: the upstreams its calls name, call
//! names, numbers and statuses. Templates, references and the call graph are compiled and
//! checked by `torii-compose` when the catalog builds the route.

use super::{Ctx, Partial};
use crate::schema::{Compose, FailurePolicy};
use crate::yaml::PathSeg;

/// Names a call may not take: they are the request's own namespaces in templates.
pub const RESERVED: [&str; 13] = [
    "params",
    "query",
    "headers",
    "consumer",
    "claims",
    "body",
    "request_id",
    "method",
    "path",
    "host",
    "client_ip",
    "item",
    "keys",
];

pub(super) fn compose(ctx: &mut Ctx<'_>, p: &Partial, i: usize, c: &Compose, upstreams: &[&str]) {
    let base = [
        PathSeg::Key("routes"),
        PathSeg::Index(i),
        PathSeg::Key("compose"),
    ];
    fn join<'a>(base: &[PathSeg<'a>], rest: &[PathSeg<'a>]) -> Vec<PathSeg<'a>> {
        let mut v = base.to_vec();
        v.extend_from_slice(rest);
        v
    }
    if c.calls.is_empty() {
        ctx.err(
            &join(&base, &[PathSeg::Key("calls")]),
            "a composition needs at least one call",
            "add e.g. `user: {upstream: users, path: '/users/{params.id}'}`",
        );
    }
    for (name, call) in &c.calls {
        let k = PathSeg::Key(name.as_str());
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && name.as_bytes()[0].is_ascii_alphabetic();
        if !valid {
            ctx.err(
                &join(&base, &[PathSeg::Key("calls"), k]),
                format!("`{name}` is not a call name"),
                "use letters, digits and `_`, starting with a letter",
            );
        } else if RESERVED.contains(&name.as_str()) {
            ctx.err(
                &join(&base, &[PathSeg::Key("calls"), k]),
                format!("`{name}` names the request's own values in templates"),
                format!("rename the call; reserved: {}", RESERVED.join(", ")),
            );
        }
        super::split::known_upstream(
            ctx,
            p,
            &join(&base, &[PathSeg::Key("calls"), k, PathSeg::Key("upstream")]),
            &call.upstream,
            upstreams,
        );
        if call.timeout.0.is_zero() {
            ctx.err(
                &join(&base, &[PathSeg::Key("calls"), k, PathSeg::Key("timeout")]),
                "a zero timeout would fail every call",
                "give a positive duration (5s by default)",
            );
        }
        if call.stale_for.is_some() && call.on_failure != FailurePolicy::Stale {
            ctx.err(
                &join(
                    &base,
                    &[PathSeg::Key("calls"), k, PathSeg::Key("stale_for")],
                ),
                "`stale_for` is only read with `on_failure: stale`",
                "set `on_failure: stale`, or remove `stale_for`",
            );
        }
        for (n, s) in call.accept_status.iter().enumerate() {
            if !(100..=599).contains(s) {
                ctx.err(
                    &join(
                        &base,
                        &[
                            PathSeg::Key("calls"),
                            k,
                            PathSeg::Key("accept_status"),
                            PathSeg::Index(n),
                        ],
                    ),
                    format!("{s} is not an HTTP status"),
                    "use a status from 100 to 599",
                );
            }
        }
        if let Some(f) = &call.for_each {
            let fk = |key: &'static str| {
                join(
                    &base,
                    &[
                        PathSeg::Key("calls"),
                        k,
                        PathSeg::Key("for_each"),
                        PathSeg::Key(key),
                    ],
                )
            };
            if f.concurrency == 0 {
                ctx.err(
                    &fk("concurrency"),
                    "a concurrency of 0 would never call",
                    "give at least 1 (8 by default)",
                );
            }
            if f.batch == Some(0) {
                ctx.err(
                    &fk("batch"),
                    "a batch of 0 keys would never call",
                    "give at least 1, or remove `batch` for one call per item",
                );
            }
        }
    }
    if c.max_calls == 0 {
        ctx.err(
            &join(&base, &[PathSeg::Key("max_calls")]),
            "a budget of 0 calls would fail every request",
            "give at least the number of calls (64 by default)",
        );
    }
    if c.deadline.0.is_zero() {
        ctx.err(
            &join(&base, &[PathSeg::Key("deadline")]),
            "a zero deadline would fail every request",
            "give a positive duration (10s by default)",
        );
    }
    if let Some(s) = c.response.status
        && (!(100..=599).contains(&s) || http::StatusCode::from_u16(s).is_err())
    {
        ctx.err(
            &join(&base, &[PathSeg::Key("response"), PathSeg::Key("status")]),
            format!("{s} is not an HTTP status"),
            "use a status from 100 to 599",
        );
    }
    if c.response.status.is_some() && c.response.status_from.is_some() {
        ctx.err(
            &join(
                &base,
                &[PathSeg::Key("response"), PathSeg::Key("status_from")],
            ),
            "`status` and `status_from` both set the status",
            "keep one of them",
        );
    }
}
