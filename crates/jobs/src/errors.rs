//! Errors as the one line a user sees (the CLI's `error: ...`, the server's `{"error": ...}`).

/// The error as one line: each cause's first line, joined by `: `. A cause may carry more
/// lines, such as the backtrace candle's errors append when `RUST_BACKTRACE` is set; the
/// message must not depend on that variable.
pub fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(|cause| {
            let text = cause.to_string();
            text.lines()
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_string()
        })
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_whatever_their_causes_carry() {
        let inner =
            anyhow::anyhow!("shape mismatch\n   0: candle_core::error::Error::bt\n   1: main");
        let err = inner.context("cannot run the UNet");
        assert_eq!(one_line(&err), "cannot run the UNet: shape mismatch");
    }
}
