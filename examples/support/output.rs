//! Printing from the examples: every line flushed at once (the tests read the output while the
//! program runs), and failures kept for the end when a callback cannot return them.

use std::cell::RefCell;
use std::fmt::Display;
use std::io::{self, Write};
use std::rc::Rc;

/// Prints `line` and flushes.
pub fn print(line: impl Display) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// The message for a failed [`print`].
pub fn stdout_error(e: io::Error) -> String {
    format!("writing to stdout: {e}")
}

/// The first error met inside a callback (callbacks cannot return one), reported when the
/// program ends. Clones share the slot.
#[derive(Clone, Debug, Default)]
pub struct ErrorSlot(Rc<RefCell<Option<String>>>);

impl ErrorSlot {
    /// Keeps `message` unless an earlier error is kept already.
    pub fn keep(&self, message: String) {
        self.0.borrow_mut().get_or_insert(message);
    }

    /// [`print`]s `line`; on failure keeps the error and returns `false`.
    pub fn print(&self, line: impl Display) -> bool {
        match print(line) {
            Ok(()) => true,
            Err(e) => {
                self.keep(stdout_error(e));
                false
            }
        }
    }

    /// The kept error, if any, as an `Err`; the slot is emptied.
    pub fn take(&self) -> Result<(), String> {
        self.0.borrow_mut().take().map_or(Ok(()), Err)
    }
}
