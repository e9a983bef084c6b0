//! The `torii` binary: command line, logging, signals. The only crate that uses anyhow.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use torii_config::ProcessEnv;
use torii_plugins::Catalog;
use torii_proxy::Gateway;

mod remote;

/// jemalloc: a quarter of the request path's user time was glibc malloc/free (docs/performance.md);
/// jemalloc's thread caches make the many small per-request allocations cheaper.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Torii, an open-source API gateway.
#[derive(Debug, Parser)]
#[command(name = "torii", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The config file.
        #[arg(short, long, env = "TORII_CONFIG")]
        config: PathBuf,
        /// Directory of the local config store: runtime entities created through the admin
        /// API and their history, kept across restarts. Without it the admin API is
        /// read-only.
        #[arg(long, env = "TORII_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Cluster mode: the PostgreSQL every node shares runtime entities through
        /// (`postgres://user@host:port/db`); migrations are applied at startup. With
        /// --data-dir too, the node keeps its last known good config there and starts from
        /// it when PostgreSQL is down.
        #[arg(long, env = "TORII_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Check a config file: exit 0 when valid, otherwise print every problem and exit 1.
    Validate {
        /// The config file.
        #[arg(short, long, env = "TORII_CONFIG")]
        config: PathBuf,
        /// Check it together with the runtime entities of this local config store.
        #[arg(long, env = "TORII_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// OpenAPI utilities.
    Openapi {
        #[command(subcommand)]
        command: OpenapiCommand,
    },
    /// Config utilities.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the hash of an API key for a consumer's `keys:` list (the key is read from
    /// standard input, one line; with --generate a new random key is made and printed too).
    HashKey {
        /// Make a new random key (256 bits, base64url) instead of reading one.
        #[arg(long)]
        generate: bool,
    },
    /// Print the argon2id hash of a password (read from standard input, one line) for a
    /// consumer's `basic_auth:` list.
    HashPassword,
}

#[derive(Debug, Subcommand)]
enum OpenapiCommand {
    /// Print routes for every operation of an OpenAPI 3.0/3.1 document, as config YAML to
    /// review and add under `routes:` (each with `request_validation` naming its operation).
    Import {
        /// The OpenAPI document (YAML or JSON).
        spec: PathBuf,
        /// The upstream the routes send to (defined in your config).
        #[arg(long)]
        upstream: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the JSON Schema of the config file (for editors).
    Schema,
    /// Print a running gateway's runtime entities (or with --all the whole effective config)
    /// as YAML that `torii validate` accepts. Secrets show as <redacted>.
    Export {
        /// The whole effective config: the file as written plus the runtime entities.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show what `apply FILE` would change in a running gateway's runtime entities, and
    /// whether the result loads; changes nothing.
    Diff {
        /// Runtime entities (`upstreams`, `routes`, `consumers`, `plugins`), as `export` writes.
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a running gateway's runtime entities exactly those of FILE, in one revision.
    Apply {
        /// Runtime entities (`upstreams`, `routes`, `consumers`, `plugins`), as `export` writes.
        file: PathBuf,
        /// Only show the changes (as `diff`).
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where a running gateway's admin API is.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The admin listener's URL.
    #[arg(long, env = "TORII_ADMIN_URL", default_value = "http://127.0.0.1:9901")]
    admin_url: String,
    /// An admin token (see `admin.tokens`).
    #[arg(long, env = "TORII_ADMIN_TOKEN")]
    token: Option<String>,
}

impl AdminArgs {
    fn remote(self) -> remote::Remote {
        remote::Remote {
            url: self.admin_url,
            token: self.token,
        }
    }
}

/// Runs an admin API client command on a small runtime.
fn remote_command(f: impl std::future::Future<Output = anyhow::Result<Vec<String>>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(lines) => {
            for l in lines {
                if let Err(c) = out(format_args!("{l}")) {
                    return c;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The plugin catalog every load goes through.
fn catalog() -> Result<Arc<Catalog>, ExitCode> {
    Catalog::builtin().map(Arc::new).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

/// Writes one line to standard output. A closed pipe (`torii config schema | head`) ends the
/// command quietly instead of panicking as `println!` does; other write errors are reported.
fn out(line: std::fmt::Arguments<'_>) -> Result<(), ExitCode> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// One line of standard input without its line ending.
fn read_secret(what: &str) -> Result<String, ExitCode> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(_) => {
            let s = line.trim_end_matches(['\n', '\r']).to_string();
            if s.is_empty() {
                eprintln!("error: no {what} on standard input");
                return Err(ExitCode::FAILURE);
            }
            Ok(s)
        }
        Err(e) => {
            eprintln!("error: cannot read the {what}: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::HashKey { generate } => {
            let key = if generate {
                match torii_plugins::consumers::generate_key() {
                    Ok(k) => {
                        if let Err(c) = out(format_args!("key:  {k}")) {
                            return c;
                        }
                        k
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                match read_secret("key") {
                    Ok(k) => k,
                    Err(c) => return c,
                }
            };
            let hash = torii_plugins::consumers::format_key_hash(key.as_bytes());
            let written = if generate {
                out(format_args!("hash: {hash}"))
            } else {
                out(format_args!("{hash}"))
            };
            written.err().unwrap_or(ExitCode::SUCCESS)
        }
        Command::HashPassword => {
            let pw = match read_secret("password") {
                Ok(p) => p,
                Err(c) => return c,
            };
            match torii_plugins::builtin::basic_auth::hash_password(&pw) {
                Ok(h) => out(format_args!("{h}")).err().unwrap_or(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { config, data_dir } => match catalog().and_then(|c| {
            let runtime = data_dir
                .map(|d| torii_admin::store::LocalStore::open(d).and_then(|s| s.load()))
                .transpose()
                .map(Option::unwrap_or_default)
                .map_err(|e| {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                })?;
            let l = torii_config::load_file_with(&config, Arc::new(runtime), &ProcessEnv, &*c)
                .map_err(|d| {
                    eprintln!("{d}");
                    ExitCode::FAILURE
                })?;
            // What only building the TLS configs finds (a key that is not its certificate's),
            // as startup would find it.
            let tls = tls_problems(&l.config);
            if tls.is_empty() {
                Ok(l)
            } else {
                for p in &tls {
                    eprintln!("{}: {p}", config.display());
                }
                Err(ExitCode::FAILURE)
            }
        }) {
            Ok(l) => out(format_args!(
                "{}: ok ({} listeners, {} upstreams, {} routes)",
                config.display(),
                l.config.listeners.len(),
                l.config.upstreams.len(),
                l.config.routes.len()
            ))
            .err()
            .unwrap_or(ExitCode::SUCCESS),
            Err(code) => code,
        },
        Command::Openapi {
            command: OpenapiCommand::Import { spec, upstream },
        } => match torii_plugins::builtin::validation::openapi::import(
            &spec.display().to_string(),
            &upstream,
        ) {
            Ok(yaml) => out(format_args!("{}", yaml.trim_end()))
                .err()
                .unwrap_or(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Config {
            command: ConfigCommand::Schema,
        } => {
            let catalog = match catalog() {
                Ok(c) => c,
                Err(code) => return code,
            };
            match serde_json::to_string_pretty(&torii_config::json_schema(&*catalog)) {
                Ok(s) => out(format_args!("{s}")).err().unwrap_or(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Export { all, admin },
        } => remote_command(async move {
            let text = remote::export(&admin.remote(), all).await?;
            Ok(vec![text.trim_end().to_string()])
        }),
        Command::Config {
            command: ConfigCommand::Diff { file, admin },
        } => remote_command(async move { remote::apply(&admin.remote(), &file, true).await }),
        Command::Config {
            command:
                ConfigCommand::Apply {
                    file,
                    dry_run,
                    admin,
                },
        } => remote_command(async move { remote::apply(&admin.remote(), &file, dry_run).await }),
        Command::Run {
            config,
            data_dir,
            database_url,
        } => {
            init_logging();
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(config, data_dir, database_url)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The tokio runtime: multi-threaded, one worker per CPU this process may run on; with a single
/// CPU (a pinned process, a 1-vCPU container) a current-thread runtime, which avoids the
/// work-stealing scheduler's cross-thread bookkeeping on every wake-up.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus)
            .enable_all()
            .build()
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TORII_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .json()
        .init();
}

/// The config store named on the command line (none: the admin API is read-only).
fn open_store(
    dir: Option<&std::path::Path>,
    database_url: Option<&str>,
) -> anyhow::Result<torii_admin::store::Store> {
    use torii_admin::store::{LocalStore, PgStore, Store};
    let local = dir
        .map(LocalStore::open)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(match (database_url, local) {
        (Some(url), local) => Store::Postgres(
            PgStore::new(url).map_err(|e| anyhow::anyhow!("{e}"))?,
            local,
        ),
        (None, Some(l)) => Store::Local(l),
        (None, None) => Store::None,
    })
}

async fn run(
    path: PathBuf,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    // Signal handlers first: a SIGHUP that arrives during startup must not kill the process.
    let mut signals = Signals::new()?;
    let catalog = Arc::new(Catalog::builtin().map_err(|e| anyhow::anyhow!("{e}"))?);
    let store = open_store(data_dir.as_deref(), database_url.as_deref())?;
    let runtime = torii_admin::cluster::initial_runtime(&store)
        .await
        .map_err(|e| anyhow::anyhow!("the config store: {e}"))?;
    let loaded = torii_config::load_file_with(&path, Arc::new(runtime), &ProcessEnv, &*catalog)
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    let grace = loaded.config.server.shutdown_grace_period.0;
    let watch = loaded.config.server.watch_config;
    let gw = Gateway::start(loaded, catalog)
        .await
        .context("starting the gateway")?;
    for l in gw.shared().snapshot.load().config.listeners.iter() {
        if let Some(addr) = gw.listener_addr(&l.name).await {
            tracing::info!(listener = %l.name, %addr, "listening");
        }
    }
    let admin = torii_admin::Admin::install(&gw, store, Arc::new(ProcessEnv));
    torii_admin::cluster::follow(admin);
    if let Some(a) = gw.admin_addr() {
        tracing::info!(addr = %a, "admin listening");
    }
    let watcher = if watch {
        match torii_proxy::reload::watch(gw.clone(), path.clone(), Duration::from_millis(250)) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
                None
            }
        }
    } else {
        None
    };
    tracing::info!("ready");
    while let Signal::Reload = signals.next().await {
        if torii_proxy::reload::reload_from(&gw, &path, &ProcessEnv)
            .await
            .is_ok()
            && let Some(w) = &watcher
        {
            w.refresh();
        }
    }
    tracing::info!(grace = ?grace, "shutting down");
    gw.shutdown(grace).await;
    tracing::info!("stopped");
    Ok(())
}

enum Signal {
    Reload,
    Stop,
}

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Reload,
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }
    async fn next(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}

/// Every listener's TLS config built as startup builds it: the problems, by listener.
fn tls_problems(config: &torii_config::schema::Config) -> Vec<String> {
    let mut out = Vec::new();
    for l in &config.listeners {
        if let Some(t) = &l.tls {
            let extra = torii_proxy::tls::certificates_of(config, &l.name);
            if let Err(e) = torii_proxy::tls::server_config(t, &extra) {
                out.push(format!("listeners.{}.tls: {e}", l.name));
            }
        }
    }
    if let Some(t) = &config.admin.tls
        && let Err(e) = torii_proxy::tls::server_config(t, &[])
    {
        out.push(format!("admin.tls: {e}"));
    }
    out
}
