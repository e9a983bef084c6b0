//! `config_load`: arbitrary bytes through the whole config load path.
//!
//! The input is taken as UTF-8 when valid and lossily converted otherwise,
//! then handed to `torii_config::load_str`, with the built-in plugin catalog
//! (so plugin settings and consumers are loaded and built too), with an environment in which no
//! variable is set (so `${NAME}` without a default is an error, and
//! `${NAME:-default}` expands). Loading must never panic, whatever the text;
//! on error the `Diagnostics` are rendered with `to_string()`, which must not
//! panic either (positions past the end of the text, columns past the end of
//! a line, multi-byte characters, CRLF line ends ...).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CATALOG: LazyLock<torii_plugins::Catalog> =
    LazyLock::new(|| torii_plugins::Catalog::builtin().expect("catalog"));

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match torii_config::load_str("fuzz.yaml", &text, &|_: &str| None, &*CATALOG) {
        Ok(loaded) => {
            // A valid config: touching the result must not panic either.
            let _ = format!("{loaded:?}");
        }
        Err(diags) => {
            let rendered = diags.to_string();
            // Every rendering ends with the summary line naming the file.
            assert!(
                rendered.ends_with("fuzz.yaml"),
                "diagnostics rendering lost its summary line: {rendered:?}"
            );
            for d in &diags.items {
                if let Some(pos) = d.pos {
                    assert!(
                        pos.line >= 1 && pos.col >= 1,
                        "0-based position {pos:?} in {d:?}"
                    );
                }
            }
        }
    }
});
