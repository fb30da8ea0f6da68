//! The command line: `run`, `check`, `backtest`, `demo`, `simulate`, `deploy …`, `report`,
//! `version`. Each subcommand is a thin shell over the library; exit codes follow sysexits
//! where they mean something to scripts (78 = invalid configuration).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

pub use crate::exit::{EX_CONFIG, EX_USAGE};

#[derive(Parser, Debug)]
#[command(
    name = "rollguard",
    version,
    about = "Judges canary releases against their baseline with anytime-valid statistics and rolls back bad ones."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing the large variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// The daemon config.
        #[arg(
            long,
            short,
            env = "ROLLGUARD_CONFIG",
            default_value = "/etc/rollguard/config.yaml"
        )]
        config: PathBuf,
        /// Log lines as text or JSON (under systemd they go to the journal with fields).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate rule files and daemon configs (files or directories); exit 78 when invalid.
    Check {
        /// Rule files, daemon configs, or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// How to print the result: file:line:col lines, or one document for CI annotations.
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
    },
    /// Replay recorded metrics (OpenMetrics with timestamps) through the judge.
    Backtest(crate::backtest::BacktestArgs),
    /// Run the whole product against a built-in simulated fleet, ending with a rollback.
    Demo(crate::demo::DemoArgs),
    /// Write recorded runs of the simulated fleet (OpenMetrics files for `backtest`).
    Simulate(crate::sim::SimulateArgs),
    /// Talk to a running daemon: register and follow deployments.
    Deploy(crate::client::DeployArgs),
    /// Ask the migration gates (`migrate check --service S --to N` before a contract).
    Migrate(crate::client::MigrateArgs),
    /// Deployment frequency and change failure rate from the state store.
    Report(ReportArgs),
    /// Print the version.
    Version,
    /// Print a shell completion script (the .deb installs them for bash, zsh and fish).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; `rollguard man | man -l -`).
    Man,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The daemon config (its state directory holds the history).
    #[arg(
        long,
        short,
        env = "ROLLGUARD_CONFIG",
        default_value = "/etc/rollguard/config.yaml"
    )]
    pub config: PathBuf,
    /// How far back (e.g. 30d, 12h).
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `rollguard check --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// `file:line:col: message` lines, notes on stderr, a summary line.
    Text,
    /// One JSON object: `valid`, `errors` (with path, line, column), `analyses`, `notes`.
    Json,
    /// The same object as YAML.
    Yaml,
}

/// Runs a parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("rollguard {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { paths, format } => check(&paths, format),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "rollguard",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rollguard man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, log_format } => {
            crate::logging::init(log_format);
            let cfg = match crate::config::load_config(&config) {
                Ok(c) => c,
                Err(diags) => {
                    for d in diags {
                        eprintln!("{d}");
                    }
                    return ExitCode::from(EX_CONFIG);
                }
            };
            runtime(async move {
                match crate::daemon::run(cfg, crate::signals::shutdown()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("rollguard: {e:#}");
                        ExitCode::from(if e.chain().any(|c| c.is::<crate::preflight::Unusable>()) {
                            EX_CONFIG
                        } else if e.chain().any(|c| c.is::<crate::daemon::LeaseLost>()) {
                            crate::exit::EX_LEASE_LOST
                        } else {
                            1
                        })
                    }
                }
            })
        }
        Command::Backtest(args) => crate::backtest::main(args),
        Command::Demo(args) => {
            // The demo prints its own timeline; daemon logs only when asked for (RUST_LOG).
            if std::env::var_os("RUST_LOG").is_some() {
                crate::logging::init(LogFormat::Text);
            }
            runtime(crate::demo::main(args))
        }
        Command::Simulate(args) => crate::sim::main(args),
        Command::Deploy(args) => runtime(crate::client::main(args)),
        Command::Migrate(args) => runtime(crate::client::migrate(args)),
        Command::Report(args) => report(args),
    }
}

fn runtime<F: std::future::Future<Output = ExitCode>>(f: F) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("rollguard: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a file is, from its top-level keys.
enum FileKind {
    Rule,
    Config,
    Unknown,
}

fn classify(path: &std::path::Path) -> FileKind {
    let Ok(text) = crate::yamlfile::read_limited(path) else {
        return FileKind::Rule;
    };
    if text.trim().is_empty() {
        return FileKind::Rule;
    }
    let keys: Result<std::collections::BTreeMap<String, serde::de::IgnoredAny>, _> =
        serde_saphyr::from_str_with_options(&text, crate::yamlfile::yaml_options());
    match keys {
        Ok(k) if k.contains_key("analysis") => FileKind::Rule,
        Ok(k)
            if ["rules_dir", "listen", "state_dir", "hooks", "notifiers"]
                .iter()
                .any(|x| k.contains_key(*x)) =>
        {
            FileKind::Config
        }
        Ok(_) => FileKind::Unknown,
        // Unparseable: guess from the text, and let that loader report the located error.
        Err(_) if text.lines().any(|l| l.starts_with("rules_dir:")) => FileKind::Config,
        Err(_) => FileKind::Rule,
    }
}

/// Checks of each analysis that can never decide before its `max_duration`.
fn timing_warnings(rules: &crate::rules::RuleSet) -> Vec<String> {
    rules
        .analyses
        .values()
        .filter_map(|t| t.probe().ok())
        .flat_map(|spec| crate::judge::timing_warnings(&spec))
        .collect()
}

/// `rollguard check`: the exact loaders the daemon uses at start and on reload.
pub fn check(paths: &[PathBuf], format: CheckFormat) -> ExitCode {
    let mut diags = Vec::new();
    let mut rule_paths = Vec::new();
    let mut configs = Vec::new();
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    for p in paths {
        let files = match crate::yamlfile::rule_files(p) {
            Ok(f) => f,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        if p.is_dir() && files.is_empty() {
            notes.push(format!("{}: no *.yaml files", p.display()));
        }
        for f in files {
            match classify(&f) {
                FileKind::Config => configs.push(f),
                FileKind::Rule => rule_paths.push(f),
                FileKind::Unknown => diags.push(crate::diag::Diagnostic::new(
                    &f,
                    1,
                    1,
                    "neither a rule file (no `analysis:`) nor a daemon config (no `rules_dir:`)",
                )),
            }
        }
    }
    let mut actions: Option<std::collections::BTreeSet<String>> = None;
    let mut analyses = Vec::new();
    for c in &configs {
        match crate::config::load_config(c) {
            Ok(cfg) => {
                // What `run` reads beyond the file: token, secrets, TLS files and clients.
                match crate::preflight::prepare(&cfg) {
                    Ok(p) => notes.extend(p.notes),
                    Err(crate::preflight::Unusable(mut d)) => diags.append(&mut d),
                }
                let set = actions.get_or_insert_with(Default::default);
                set.extend(cfg.action_names());
                match crate::rules::load_rules(
                    std::slice::from_ref(&cfg.rules_dir),
                    Some(&cfg.action_names()),
                ) {
                    Ok(r) => {
                        warnings.extend(timing_warnings(&r));
                        analyses.extend(r.analyses.keys().cloned());
                    }
                    Err(mut d) => diags.append(&mut d),
                }
            }
            Err(mut d) => diags.append(&mut d),
        }
    }
    if !rule_paths.is_empty() {
        if actions.is_none() {
            notes.push(
                "hook and notifier names were not checked: pass the daemon config too".into(),
            );
        }
        match crate::rules::load_rules(&rule_paths, actions.as_ref()) {
            Ok(r) => {
                warnings.extend(timing_warnings(&r));
                analyses.extend(r.analyses.keys().cloned());
            }
            Err(mut d) => diags.append(&mut d),
        }
    }
    diags.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
    diags.dedup();
    analyses.sort();
    analyses.dedup();
    warnings.sort();
    warnings.dedup();
    if format != CheckFormat::Text {
        let v = serde_json::json!({ "valid": diags.is_empty(), "errors": diags, "analyses": analyses, "warnings": warnings, "notes": notes });
        let doc = match format {
            CheckFormat::Yaml => serde_saphyr::to_string(&v).unwrap_or_default(),
            _ => serde_json::to_string_pretty(&v).unwrap_or_default(),
        };
        println!("{}", doc.trim_end());
    } else {
        for d in &diags {
            println!("{d}");
        }
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        for n in &notes {
            eprintln!("note: {n}");
        }
        if diags.is_empty() {
            println!(
                "ok: {} analyses ({}), {} config file(s)",
                analyses.len(),
                analyses.join(", "),
                configs.len()
            );
        } else {
            eprintln!("{} error(s)", diags.len());
        }
    }
    if diags.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_CONFIG)
    }
}

fn report(args: ReportArgs) -> ExitCode {
    let cfg = match crate::config::load_config(&args.config) {
        Ok(c) => c,
        Err(d) => {
            for x in d {
                eprintln!("{x}");
            }
            return ExitCode::from(EX_CONFIG);
        }
    };
    let since = match crate::units::parse_duration(&args.since) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("--since: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // The configured store: reading needs no lease, so this works on any host of a pair.
    let store: Result<Box<dyn crate::store::Store>, _> = match &cfg.postgres {
        Some(pg) => crate::store::PgStore::open(pg).map(|s| Box::new(s) as _),
        None => crate::store::SqliteStore::open(&cfg.state_dir).map(|s| Box::new(s) as _),
    };
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match crate::report::dora(store.as_ref(), since) {
        Ok(r) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", crate::report::render(&r));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
