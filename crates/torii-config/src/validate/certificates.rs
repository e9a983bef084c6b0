//! Checks of the top-level `certificates`: unique names, PEM text that parses, and listeners
//! that exist and terminate TLS. Whether the key belongs to the certificate is checked where
//! the TLS configs are built (torii-proxy), before a change is stored or applied.

use super::Ctx;
use crate::schema::Config;
use crate::yaml::PathSeg;
use std::collections::HashSet;

pub(super) fn check(ctx: &mut Ctx<'_>, config: &Config) {
    let mut names = HashSet::new();
    let tls: Vec<&str> = config
        .listeners
        .iter()
        .filter(|l| l.tls.is_some())
        .map(|l| l.name.as_str())
        .collect();
    for (i, c) in config.certificates.iter().enumerate() {
        let at = |k: &'static str| {
            [
                PathSeg::Key("certificates"),
                PathSeg::Index(i),
                PathSeg::Key(k),
            ]
        };
        if c.name.is_empty() || !names.insert(c.name.as_str()) {
            ctx.err(
                &at("name"),
                format!("certificate name `{}` is empty or used twice", c.name),
                "give each certificate its own name",
            );
        }
        if let Err(e) = crate::schema::pem::certs_from_text(&c.cert_pem) {
            ctx.err(
                &at("cert_pem"),
                e,
                "paste the PEM certificate chain, leaf first (`-----BEGIN CERTIFICATE-----` ...)",
            );
        }
        if let Err(e) = crate::schema::pem::key_from_text(&c.private_key_pem) {
            ctx.err(
                &at("private_key_pem"),
                e,
                "paste the PEM private key (`-----BEGIN PRIVATE KEY-----` ...)",
            );
        }
        if tls.is_empty() {
            ctx.err(
                &at("name"),
                "no listener terminates TLS, so no listener would serve this certificate",
                format!(
                    "add `tls` (with at least one certificate file, the default) to a listener, or, for a certificate created through the admin API, delete it (DELETE /config/certificates/{})",
                    c.name
                ),
            );
            continue;
        }
        for (k, l) in c.listeners.iter().enumerate() {
            if !tls.contains(&l.as_str()) {
                ctx.err(
                    &[
                        PathSeg::Key("certificates"),
                        PathSeg::Index(i),
                        PathSeg::Key("listeners"),
                        PathSeg::Index(k),
                    ],
                    format!("no TLS listener is named `{l}`"),
                    format!(
                        "name one of the listeners with `tls`: {} (a certificate created through the admin API is changed or deleted at /config/certificates/{})",
                        tls.join(", "),
                        c.name
                    ),
                );
            }
        }
    }
}
