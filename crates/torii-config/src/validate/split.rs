//! Checks of a route's `split` (weighted upstreams, stickiness, overrides) and of the
//! upstream names a route refers to.

use super::{Ctx, Partial};
use crate::schema::Split;
use crate::yaml::PathSeg;

/// The largest weight of one upstream of a split.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// The most upstreams one split shares its requests between.
pub const MAX_ARMS: usize = 16;

/// Reports `name` at `path` when no upstream of that name is declared (with the nearest
/// name as the fix).
pub(super) fn known_upstream(
    ctx: &mut Ctx<'_>,
    p: &Partial,
    path: &[PathSeg<'_>],
    name: &str,
    upstreams: &[&str],
) {
    if upstreams.contains(&name) || p.broken_names.contains(name) {
        return;
    }
    let hint = match crate::check::did_you_mean(name, upstreams.iter().copied()) {
        Some(m) => format!(
            "did you mean `{m}`? Known upstreams: {}",
            upstreams.join(", ")
        ),
        None if upstreams.is_empty() => "declare it under `upstreams:`".to_string(),
        None => format!("known upstreams: {}", upstreams.join(", ")),
    };
    ctx.err(path, format!("unknown upstream `{name}`"), hint);
}

pub(super) fn split(ctx: &mut Ctx<'_>, p: &Partial, i: usize, s: &Split, upstreams: &[&str]) {
    let at = |rest: &[PathSeg<'static>]| {
        let mut v = vec![
            PathSeg::Key("routes"),
            PathSeg::Index(i),
            PathSeg::Key("split"),
        ];
        v.extend_from_slice(rest);
        v
    };
    if s.upstreams.is_empty() || s.upstreams.len() > MAX_ARMS {
        ctx.err(
            &at(&[PathSeg::Key("upstreams")]),
            format!(
                "a split shares requests between 1 to {MAX_ARMS} upstreams, not {}",
                s.upstreams.len()
            ),
            "list e.g. `- {upstream: stable, weight: 95}` and `- {upstream: canary, weight: 5}`",
        );
    }
    let mut total: u64 = 0;
    for (a, arm) in s.upstreams.iter().enumerate() {
        known_upstream(
            ctx,
            p,
            &at(&[
                PathSeg::Key("upstreams"),
                PathSeg::Index(a),
                PathSeg::Key("upstream"),
            ]),
            &arm.upstream,
            upstreams,
        );
        if s.upstreams[..a].iter().any(|o| o.upstream == arm.upstream) {
            ctx.err(
                &at(&[
                    PathSeg::Key("upstreams"),
                    PathSeg::Index(a),
                    PathSeg::Key("upstream"),
                ]),
                format!("upstream `{}` is listed twice", arm.upstream),
                "list each upstream once, with the sum of its weights",
            );
        }
        if arm.weight > MAX_WEIGHT {
            ctx.err(
                &at(&[
                    PathSeg::Key("upstreams"),
                    PathSeg::Index(a),
                    PathSeg::Key("weight"),
                ]),
                format!("weight {} is above {MAX_WEIGHT}", arm.weight),
                "weights are relative: 95 and 5 split like 950000 and 50000",
            );
        }
        total += u64::from(arm.weight);
    }
    if !s.upstreams.is_empty() && total == 0 {
        ctx.err(
            &at(&[PathSeg::Key("upstreams")]),
            "every weight is 0: no request could be shared",
            "give at least one upstream a positive weight",
        );
    }
    for (o, ov) in s.overrides.iter().enumerate() {
        let here = |k: &'static str| {
            at(&[
                PathSeg::Key("overrides"),
                PathSeg::Index(o),
                PathSeg::Key(k),
            ])
        };
        match (&ov.header, &ov.cookie) {
            (Some(_), None) => {}
            (None, Some(c))
                if c.is_empty() || c.bytes().any(|b| b <= b' ' || b"=;,".contains(&b)) =>
            {
                ctx.err(
                    &here("cookie"),
                    format!("`{c}` is not a cookie name"),
                    "cookie names are visible characters without `=`, `;` or `,`",
                )
            }
            (None, Some(_)) => {}
            _ => ctx.err(
                &here("upstream"),
                "an override names exactly one of `header` and `cookie`",
                "e.g. `{header: x-canary, value: \"1\", upstream: canary}`",
            ),
        }
        if let Some(v) = &ov.value
            && http::HeaderValue::from_str(v).is_err()
        {
            ctx.err(
                &here("value"),
                "the value cannot appear in a header",
                "use visible ASCII characters",
            );
        }
        known_upstream(ctx, p, &here("upstream"), &ov.upstream, upstreams);
    }
}
