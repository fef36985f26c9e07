//! One capturing `log` logger for the suite: a process has one logger, so every test binary
//! that looks at log output installs this one, once.
//!
//! Records are kept with the id of the thread that logged them, and each test reads only its
//! own thread's records (the loop runs on the test's thread), so tests running in parallel do
//! not see each other's logs.

use std::sync::{Mutex, Once, PoisonError};
use std::thread::{self, ThreadId};

/// A log message containing this makes the logger panic: the only way to make ringloop's
/// default exception handler (which just logs) fail.
pub const LOGGER_PANIC_MARKER: &str = "<<make the logger panic>>";

/// One captured record: who logged it, at what level and target, and the text.
#[derive(Clone, Debug)]
pub struct Captured {
    /// The thread that logged it.
    pub thread: ThreadId,
    /// Its level.
    pub level: log::Level,
    /// Its target (`ringloop` for the loop's own reports).
    pub target: String,
    /// The formatted message.
    pub text: String,
}

/// Every record logged since the logger was installed and not yet taken.
static RECORDS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

/// The logger [`install_logger`] installs: it keeps every record in [`RECORDS`].
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let text = record.args().to_string();
        if text.contains(LOGGER_PANIC_MARKER) {
            std::panic::resume_unwind(Box::new("the test logger refuses this record"));
        }
        RECORDS.lock().unwrap_or_else(PoisonError::into_inner).push(Captured {
            thread: thread::current().id(),
            level: record.level(),
            target: record.target().to_string(),
            text,
        });
    }

    fn flush(&self) {}
}

/// Installs the capturing logger at every level (once per process; a test binary using it
/// installs no other logger).
pub fn install_logger() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("another logger is installed");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Takes the records this thread has logged so far.
pub fn take_my_logs() -> Vec<Captured> {
    let me = thread::current().id();
    let mut records = RECORDS.lock().unwrap_or_else(PoisonError::into_inner);
    let (mine, others): (Vec<_>, Vec<_>) = records.drain(..).partition(|r| r.thread == me);
    *records = others;
    mine
}

/// The first of `logs` whose text contains `text`; panics, listing them all, if none does.
pub fn logged<'a>(logs: &'a [Captured], text: &str) -> &'a Captured {
    logs.iter()
        .find(|r| r.text.contains(text))
        .unwrap_or_else(|| panic!("no record containing {text:?} was logged: {logs:?}"))
}

/// How many warnings (or worse) under target `ringloop` containing `text` this thread logged;
/// installs the logger first, and leaves the records in place.
pub fn my_warnings(text: &str) -> usize {
    install_logger();
    let me = thread::current().id();
    let records = RECORDS.lock().unwrap_or_else(PoisonError::into_inner);
    let warning = |r: &&Captured| r.level <= log::Level::Warn && r.target == "ringloop";
    records.iter().filter(warning).filter(|r| r.thread == me && r.text.contains(text)).count()
}
