//! The exception handler: `ExceptionContext`, `call_exception_handler` and the default handler.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use super::{EventLoop, Handle};
use crate::error::{loop_log, panic_message, Error};

/// What asyncio passes to an exception handler as its `context` dict.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ExceptionContext {
    /// What happened ("Exception in callback ...", "Task exception was never retrieved", ...).
    pub message: String,
    /// The error, if there is one.
    pub error: Option<Error>,
    /// The callback handle involved.
    pub handle: Option<Handle>,
    /// The name of the task involved.
    pub task: Option<String>,
    /// A description of the future involved.
    pub future: Option<String>,
    /// A description of the transport involved.
    pub transport: Option<String>,
    /// A description of the protocol involved.
    pub protocol: Option<String>,
    /// The fd involved (socket, pipe, watched fd).
    pub fd: Option<i32>,
    /// When a custom handler failed: the context it was given.
    pub context: Option<Box<ExceptionContext>>,
}

impl ExceptionContext {
    /// A context with just a message.
    pub fn new(message: impl Into<String>) -> ExceptionContext {
        ExceptionContext { message: message.into(), ..Default::default() }
    }

    setters! {
        fn with_error => error: Some(Error),
        fn with_handle => handle: Some(Handle),
        fn with_task => task: Some(into String),
    }
}

impl fmt::Display for ExceptionContext {
    /// The log text of asyncio's default handler: the message, then one `key: value` line each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.message.is_empty() {
            "Unhandled error in event loop"
        } else {
            &self.message
        })?;
        if let Some(handle) = &self.handle {
            write!(f, "\nhandle: {handle:?}")?;
        }
        if let Some(task) = &self.task {
            write!(f, "\ntask: {task}")?;
        }
        for (key, value) in
            [("future", &self.future), ("transport", &self.transport), ("protocol", &self.protocol)]
        {
            if let Some(value) = value {
                write!(f, "\n{key}: {value}")?;
            }
        }
        if let Some(fd) = self.fd {
            write!(f, "\nfd: {fd}")?;
        }
        if let Some(error) = &self.error {
            write!(f, "\nerror: {error}")?;
        }
        if let Some(inner) = &self.context {
            write!(f, "\ncontext: {inner}")?;
        }
        Ok(())
    }
}

/// A custom exception handler: called as `handler(loop, context)`.
pub type ExceptionHandler = Rc<dyn Fn(&EventLoop, &ExceptionContext)>;

impl EventLoop {
    /// Sets the handler called for errors nobody else handles (`None` restores the default,
    /// which logs through the `log` crate, or writes to stderr when no logger is installed).
    pub fn set_exception_handler<F>(&self, handler: Option<F>)
    where
        F: Fn(&EventLoop, &ExceptionContext) + 'static,
    {
        *self.inner.exception_handler.borrow_mut() =
            handler.map(|h| Rc::new(h) as ExceptionHandler);
    }

    /// The custom handler, or `None` when the default is in use.
    pub fn get_exception_handler(&self) -> Option<ExceptionHandler> {
        self.inner.exception_handler.borrow().clone()
    }

    /// The default handler: logs the context at error level through the `log` crate, under
    /// the `ringloop` target. With no `log` backend installed (`log::max_level()` is `Off`, the
    /// `log` crate's state until a logger is set up) it writes the context to stderr instead,
    /// as `ringloop: error: <context>`, like Python logging's last-resort handler: a failing
    /// handler or a protocol's fatal error is never silent.
    pub fn default_exception_handler(&self, context: &ExceptionContext) {
        loop_log!(Error, "{context}");
    }

    /// Calls the current exception handler with `context`. A custom handler that panics is
    /// reported to the default handler ("Unhandled error in exception handler", with the
    /// original context attached); a panic in the default handler is logged and swallowed.
    /// Never panics.
    pub fn call_exception_handler(&self, context: ExceptionContext) {
        let handler = self.get_exception_handler();
        let Some(handler) = handler else {
            self.call_default_handler_guarded(&context);
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler(self, &context))) {
            let report = ExceptionContext {
                message: "Unhandled error in exception handler".into(),
                error: Some(Error::Panic(panic_message(&*payload))),
                context: Some(Box::new(context)),
                ..Default::default()
            };
            self.call_default_handler_guarded(&report);
        }
    }

    fn call_default_handler_guarded(&self, context: &ExceptionContext) {
        if catch_unwind(AssertUnwindSafe(|| self.default_exception_handler(context))).is_err() {
            loop_log!(Error, "Exception in default exception handler");
        }
    }
}
