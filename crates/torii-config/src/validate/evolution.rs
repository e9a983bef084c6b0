//! Checks of API evolution settings: a route's `deprecation` and `match.version`, and the
//! top-level `versioning`.

use super::Ctx;
use crate::schema::{Deprecation, Versioning};
use crate::yaml::PathSeg;

pub(super) fn deprecation(ctx: &mut Ctx<'_>, i: usize, d: &Deprecation) {
    let at = |k: &'static str| {
        [
            PathSeg::Key("routes"),
            PathSeg::Index(i),
            PathSeg::Key("deprecation"),
            PathSeg::Key(k),
        ]
    };
    if let Some(sunset) = d.sunset
        && sunset < d.since
    {
        ctx.err(
            &at("sunset"),
            "the sunset is before the deprecation",
            "an API is deprecated first and removed later: give a `sunset` after `since`",
        );
    }
    if d.gone_after_sunset && d.sunset.is_none() {
        ctx.err(
            &at("gone_after_sunset"),
            "`gone_after_sunset` needs a `sunset`",
            "add e.g. `sunset: 2027-06-30`",
        );
    }
    for (key, url) in [("successor", &d.successor), ("link", &d.link)] {
        if let Some(u) = url
            && (u.parse::<http::Uri>().is_err() || u.is_empty())
        {
            ctx.err(
                &at(key),
                format!("`{u}` is not a URL"),
                "give an absolute URL (`https://api.example.com/v2/orders`) or a path (`/v2/orders`)",
            );
        }
    }
}

/// A version as written in the config and compared with requests' (visible ASCII, no `,`
/// or `;`, which separate `Accept` items and parameters).
fn version_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b';')
}

pub(super) fn route_version(ctx: &mut Ctx<'_>, i: usize, v: &str, declared: bool) {
    let at = [
        PathSeg::Key("routes"),
        PathSeg::Index(i),
        PathSeg::Key("match"),
        PathSeg::Key("version"),
    ];
    if !declared {
        ctx.err(
            &at,
            "`match.version` needs the top-level `versioning`, which says where requests name it",
            "add e.g. `versioning: {header: api-version}`",
        );
    }
    if !version_ok(v) {
        ctx.err(
            &at,
            format!("`{v}` is not a version"),
            "1 to 64 visible characters without `,` or `;`, e.g. `2` or `2024-06-01`",
        );
    }
}

pub(super) fn versioning(ctx: &mut Ctx<'_>, v: &Versioning) {
    let at = |k: &'static str| [PathSeg::Key("versioning"), PathSeg::Key(k)];
    let sources = usize::from(v.header.is_some())
        + usize::from(v.query.is_some())
        + usize::from(v.accept.is_some());
    if sources != 1 {
        ctx.err(
            &[PathSeg::Key("versioning")],
            "`versioning` names exactly one of `header`, `query` and `accept`",
            "e.g. `versioning: {header: api-version}` or `{accept: \"application/vnd.example.v{version}+json\"}`",
        );
    }
    if let Some(q) = &v.query
        && q.is_empty()
    {
        ctx.err(
            &at("query"),
            "the parameter name is empty",
            "e.g. `query: version`",
        );
    }
    if let Some(a) = &v.accept {
        let shape = a.split_once("{version}").is_some_and(|(pre, post)| {
            !post.contains("{version}")
                && pre.contains('/')
                && (pre.len() + post.len()) > 1
                && (pre.bytes().chain(post.bytes()))
                    .all(|b| b.is_ascii_graphic() && b != b',' && b != b';')
        });
        if !shape {
            ctx.err(
                &at("accept"),
                format!("`{a}` is not a media type with one `{{version}}`"),
                "e.g. `application/vnd.example.v{version}+json`",
            );
        }
    }
    if let Some(d) = &v.default
        && !version_ok(d)
    {
        ctx.err(
            &at("default"),
            format!("`{d}` is not a version"),
            "1 to 64 visible characters without `,` or `;`",
        );
    }
}
