//! `torii config export | diff | apply`: a client of a running gateway's admin API
//! (`/config/export`, `/config/apply`), in the way decK drives Kong.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::Duration;

/// How long one admin API call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the admin API is and how to authenticate.
pub struct Remote {
    /// `http://host:port`.
    pub url: String,
    /// A bearer token, when the admin listener has `admin.tokens`.
    pub token: Option<String>,
}

impl Remote {
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url.trim_end_matches('/')))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("building the request")?;
        let resp = tokio::time::timeout(TIMEOUT, client.request(req))
            .await
            .context("the admin API did not answer in time")?
            .with_context(|| format!("cannot reach the admin API at {}", self.url))?;
        let status = resp.status();
        let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
            .await
            .context("the admin API did not answer in time")?
            .context("reading the answer")?
            .to_bytes();
        Ok((status, body))
    }
}

/// An error answer of the admin API, as the user should read it.
fn failure(status: http::StatusCode, body: &[u8]) -> anyhow::Error {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return anyhow::anyhow!("{status}: {}", String::from_utf8_lossy(body));
    };
    let mut msg = format!(
        "{status}: {}",
        v["message"]
            .as_str()
            .unwrap_or("the admin API refused the request")
    );
    for e in v["errors"].as_array().into_iter().flatten() {
        let at = e["pointer"].as_str().or(e["path"].as_str()).unwrap_or("");
        msg.push_str(&format!(
            "\n  {at}: {}",
            e["message"].as_str().unwrap_or("")
        ));
        if let Some(h) = e["hint"].as_str() {
            msg.push_str(&format!("\n    help: {h}"));
        }
    }
    if let Some(h) = v["hint"].as_str() {
        msg.push_str(&format!("\n  help: {h}"));
    }
    anyhow::anyhow!(msg)
}

/// `torii config export`: the YAML text.
pub async fn export(remote: &Remote, all: bool) -> anyhow::Result<String> {
    let scope = if all { "all" } else { "runtime" };
    let (status, body) = remote
        .call(
            http::Method::GET,
            &format!("/config/export?scope={scope}"),
            None,
        )
        .await?;
    if !status.is_success() {
        return Err(failure(status, &body));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Reads a file of runtime entities (YAML, as `torii config export` writes) as JSON.
fn read_entities(file: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    match torii_config::yaml::parse(&text) {
        Ok(node) => Ok(node.to_json()),
        Err(errs) => {
            let first = errs.first().map_or(String::new(), |d| {
                let at = d
                    .pos
                    .map_or(String::new(), |p| format!(":{}:{}", p.line, p.col));
                format!("{}{at}: {}", file.display(), d.message)
            });
            bail!("{first}")
        }
    }
}

/// `torii config diff FILE` (`dry_run`) and `torii config apply FILE`: the changes, one per
/// line (`+ consumer alice`, `~ route orders`, `- upstream old`).
pub async fn apply(remote: &Remote, file: &Path, dry_run: bool) -> anyhow::Result<Vec<String>> {
    let body = read_entities(file)?;
    let path = if dry_run {
        "/config/apply?dry_run=true"
    } else {
        "/config/apply"
    };
    let (status, answer) = remote
        .call(http::Method::POST, path, Some(body.to_string()))
        .await?;
    if !status.is_success() {
        return Err(failure(status, &answer));
    }
    let v: serde_json::Value = serde_json::from_slice(&answer).context("the answer is not JSON")?;
    let mut lines: Vec<String> = v["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let sign = match c["op"].as_str() {
                Some("create") => '+',
                Some("delete") => '-',
                _ => '~',
            };
            format!(
                "{sign} {} {}",
                c["kind"].as_str().unwrap_or(""),
                c["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    let summary = match (dry_run, lines.is_empty()) {
        (_, true) => "no changes".to_string(),
        (true, false) => format!("{} change(s) would be applied", lines.len()),
        (false, false) => format!(
            "{} change(s) applied: revision {}",
            lines.len(),
            v["revision"]
        ),
    };
    lines.push(summary);
    Ok(lines)
}
