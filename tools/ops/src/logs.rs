//! Process logs through `tracing`: JSON lines (one object per event, fields flattened, the
//! current span's fields under `span` — for a request, its `request_id`, which is the
//! reference id of the request's audit event) or human-readable text. `--log-format` chooses;
//! by default JSON when stderr is not a terminal (journald, files, pipes) and text on a
//! terminal. `RUST_LOG` filters as usual (default `info`).

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Installs the global subscriber writing to stderr.
pub fn init(format: Option<LogFormat>, default_filter: &str) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.with_ansi(terminal).init(),
    }
}
