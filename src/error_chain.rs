//! One line for an error and everything that caused it, as a person reads it in a log, an
//! Event or a status message — used by every layer, so it sits below them all.

/// The error and its sources, joined by ": ", skipping causes already in the text.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
