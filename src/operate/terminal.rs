//! The local terminal during `exec -t`: raw while the remote one draws, as it was after.

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

/// Puts stdin's terminal in raw mode (keys go to the container as typed, Ctrl-C included)
/// and restores it when dropped — also on an error or a panic.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode, or `None` when stdin is no terminal.
    pub fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// The local terminal's size as (rows, columns), when stdout is one.
pub fn size() -> Option<(u16, u16)> {
    let size = tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}
