//! Checks of a route's `deprecation`.

use super::Ctx;
use crate::schema::Deprecation;
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
