//! The one error type of the crate, [`WafError`].

/// Why compiling a rule set or inspecting a message failed.
#[derive(Debug, thiserror::Error)]
pub enum WafError {
    /// The rule set did not load: libmodsecurity's own message (file, line, column, reason), or
    /// why the settings could not be turned into rules. The control plane shows it with 422.
    #[error("WAF rules do not load: {0}")]
    Load(String),
    /// The scope key was not among the scopes the rule set was compiled with.
    #[error("no WAF scope `{0}` in this rule set")]
    UnknownScope(String),
    /// The request or response cannot be handed to libmodsecurity as it is (a NUL byte in a
    /// header, the method, the URI or the version; a body over the engine's hard limit). The
    /// edge refuses such a message itself (400 / 413) before the WAF; this error is the backstop.
    #[error("message not acceptable to the WAF: {0}")]
    InvalidInput(String),
    /// libmodsecurity reported a failure while processing a transaction.
    #[error("WAF engine failure: {0}")]
    Engine(String),
}
