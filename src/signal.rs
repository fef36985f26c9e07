//! The process-wide side of `add_signal_handler`: one async-signal-safe handler per caught
//! signal, and the table of loops it wakes.
//!
//! # Implementation
//! Signal dispositions belong to the process, handlers to loops, and several loops (on several
//! threads) may handle the same signal. So there is one handler function, [`on_signal`], and a
//! table of [`Slot`]s, one per loop that has at least one signal handler. A slot holds the set
//! of signals its loop handles, the set delivered since the loop last looked, and the loop's
//! wake eventfd. A delivered signal is recorded in **every** slot that has it, and each of those
//! loops is woken: the rule is "a signal reaches every loop that registered it".
//!
//! The handler may run on any thread, at any moment, so it takes no lock and allocates
//! nothing: it reads the slot list through atomics and calls only `write(2)`. Slots are leaked
//! and reused, never freed, so a pointer the handler follows is always valid. What a slot
//! *refers to* (the eventfd) is released by the loop only after it has withdrawn the fd and
//! seen no handler inside the slot (`busy == 0`, sequentially consistent with the handler's
//! `busy` increment and fd load), so the handler never writes to a closed or reused fd.
//!
//! Installing and restoring dispositions happens under [`REGISTRY`]'s mutex, on loop threads
//! only: the first loop to handle a signal installs [`on_signal`] and remembers the disposition
//! it replaced; the last loop to stop handling it puts that disposition back.

use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::{Error, Result, RuntimeKind};
use crate::sys::EventFd;

/// Signal numbers are `1..NSIG` (Python's `signal.NSIG`; Linux has signals 1 to 64).
const NSIG: i32 = 65;

/// The bit of `signum` in a slot's sets.
fn bit(signum: i32) -> u64 {
    1u64 << (signum - 1)
}

/// The signals whose bits are set in `bits`, lowest first.
pub(crate) fn signals_in(mut bits: u64) -> impl Iterator<Item = Signal> {
    std::iter::from_fn(move || {
        while bits != 0 {
            let signum = bits.trailing_zeros() as i32 + 1;
            bits &= bits - 1;
            if let Ok(signal) = Signal::try_from(signum) {
                return Some(signal);
            }
        }
        None
    })
}

/// One loop's entry in the table [`on_signal`] reads. Leaked, reused, never freed.
struct Slot {
    /// Signals the loop handles (bit `signum - 1`); 0 while the slot is free.
    mask: AtomicU64,
    /// Signals delivered since the loop last took them.
    pending: AtomicU64,
    /// The loop's eventfd, or -1 while the slot is free.
    fd: AtomicI32,
    /// Handlers currently between their `busy` increment and decrement for this slot.
    busy: AtomicUsize,
    /// Owned by a loop (changed only under the registry mutex).
    claimed: AtomicBool,
    /// The next slot of the list (set before the slot is published, never changed).
    next: *const Slot,
}

/// The list of every slot ever made, newest first.
static SLOTS: AtomicPtr<Slot> = AtomicPtr::new(ptr::null_mut());

/// A signal ringloop has its handler installed for.
struct Installed {
    /// Loops handling it.
    loops: usize,
    /// The disposition found when the handler was installed, restored after the last loop.
    previous: SigAction,
}

/// Process-wide bookkeeping, changed only by loop threads.
struct Registry {
    /// Per signal number: installed or not.
    installed: [Option<Installed>; NSIG as usize],
}

/// The registry, behind the mutex that also serialises slot claims.
static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { installed: [const { None }; NSIG as usize] });

fn registry() -> MutexGuard<'static, Registry> {
    // Every update below leaves the registry consistent before anything that can panic.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The process-wide signal handler: records the signal in every slot that has it and wakes
/// those loops. Async-signal-safe: atomics and `write(2)` only, `errno` preserved.
extern "C" fn on_signal(signum: libc::c_int) {
    if !(1..NSIG).contains(&signum) {
        return;
    }
    // SAFETY: `__errno_location` returns this thread's errno, always valid.
    let errno = unsafe { *libc::__errno_location() };
    let bit = bit(signum);
    let mut cursor = SLOTS.load(Ordering::Acquire);
    // SAFETY: slots are leaked, never freed; `next` is immutable once a slot is published.
    while let Some(slot) = unsafe { cursor.as_ref() } {
        if slot.mask.load(Ordering::SeqCst) & bit != 0 {
            slot.busy.fetch_add(1, Ordering::SeqCst);
            let fd = slot.fd.load(Ordering::SeqCst);
            if fd >= 0 && slot.mask.load(Ordering::SeqCst) & bit != 0 {
                slot.pending.fetch_or(bit, Ordering::SeqCst);
                let one: u64 = 1;
                // SAFETY: `fd` is the loop's eventfd, kept open while `busy` is non-zero (see
                // `Registration::drop`); writes 8 bytes from a live local. A full counter
                // (EAGAIN) already means "readable".
                unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
            }
            slot.busy.fetch_sub(1, Ordering::SeqCst);
        }
        cursor = slot.next.cast_mut();
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Installs `action` for `signal`: the disposition it replaced.
fn sigaction(signal: Signal, action: &SigAction) -> nix::Result<SigAction> {
    // SAFETY: `action` is either [`handler_action`], whose handler is async-signal-safe, or a
    // disposition an earlier call returned, put back as it was found.
    unsafe { nix::sys::signal::sigaction(signal, action) }
}

/// The disposition that runs [`on_signal`]; `SA_RESTART` as asyncio (`siginterrupt(sig,
/// False)`), `SA_ONSTACK` so a thread with an alternate signal stack uses it.
fn handler_action() -> SigAction {
    let flags = SaFlags::SA_RESTART | SaFlags::SA_ONSTACK;
    SigAction::new(SigHandler::Handler(on_signal), flags, SigSet::empty())
}

/// Claims a free slot for the loop whose eventfd is `fd`, or makes and publishes a new one.
/// The registry's mutex (`_registry`) serialises claims and publication.
fn claim_slot(_registry: &mut Registry, fd: i32) -> &'static Slot {
    let mut cursor = SLOTS.load(Ordering::Acquire);
    // SAFETY: slots are leaked, never freed.
    while let Some(slot) = unsafe { cursor.as_ref() } {
        if !slot.claimed.load(Ordering::Relaxed) {
            slot.claimed.store(true, Ordering::Relaxed);
            slot.fd.store(fd, Ordering::SeqCst);
            return slot;
        }
        cursor = slot.next.cast_mut();
    }
    let slot: &'static Slot = Box::leak(Box::new(Slot {
        mask: AtomicU64::new(0),
        pending: AtomicU64::new(0),
        fd: AtomicI32::new(fd),
        busy: AtomicUsize::new(0),
        claimed: AtomicBool::new(true),
        next: SLOTS.load(Ordering::Acquire),
    }));
    // One writer at a time (the registry mutex): a release store publishes the slot.
    SLOTS.store(ptr::from_ref(slot).cast_mut(), Ordering::Release);
    slot
}

/// A loop's registration with the process-wide handler: its slot, for as long as it handles
/// at least one signal. Dropping it stops every signal it handles.
pub(crate) struct Registration {
    /// The loop's slot.
    slot: &'static Slot,
    /// The eventfd the slot names, kept open until the slot is released.
    eventfd: Arc<EventFd>,
    /// The signals this registration handles (the slot's mask, as the loop last set it).
    signals: u64,
}

impl Registration {
    /// Claims a slot for a loop whose wake eventfd is `eventfd`.
    pub(crate) fn new(eventfd: Arc<EventFd>) -> Registration {
        let slot = claim_slot(&mut registry(), eventfd.as_raw_fd());
        slot.pending.store(0, Ordering::SeqCst);
        Registration { slot, eventfd, signals: 0 }
    }

    /// Starts delivering `signal` to this loop, installing the handler if no loop had it.
    /// `Error::Runtime` of [`RuntimeKind::UncatchableSignal`] ("sig SIGKILL cannot be caught")
    /// for SIGKILL and SIGSTOP.
    pub(crate) fn add(&mut self, signal: Signal) -> Result<()> {
        let bit = bit(signal as i32);
        if self.signals & bit != 0 {
            return Ok(());
        }
        let mut registry = registry();
        // In the mask first, so a signal arriving just after the install is not lost.
        self.slot.mask.fetch_or(bit, Ordering::SeqCst);
        let entry = &mut registry.installed[signal as usize];
        let installed = match entry {
            Some(installed) => {
                installed.loops += 1;
                Ok(())
            }
            None => sigaction(signal, &handler_action())
                .map(|previous| *entry = Some(Installed { loops: 1, previous })),
        };
        match installed {
            Ok(()) => {
                self.signals |= bit;
                Ok(())
            }
            Err(err) => {
                self.slot.mask.fetch_and(!bit, Ordering::SeqCst);
                Err(match err {
                    Errno::EINVAL => Error::runtime(
                        RuntimeKind::UncatchableSignal,
                        format!("sig {signal} cannot be caught"),
                    ),
                    _ => Error::io(format!("add_signal_handler: sigaction({signal})"), err.into()),
                })
            }
        }
    }

    /// Stops delivering `signal` to this loop; the last loop to stop restores the disposition
    /// the handler replaced.
    pub(crate) fn remove(&mut self, signal: Signal) -> Result<()> {
        let bit = bit(signal as i32);
        if self.signals & bit == 0 {
            return Ok(());
        }
        self.signals &= !bit;
        self.slot.mask.fetch_and(!bit, Ordering::SeqCst);
        self.slot.pending.fetch_and(!bit, Ordering::SeqCst);
        let mut registry = registry();
        let entry = &mut registry.installed[signal as usize];
        let Some(installed) = entry else { return Ok(()) };
        installed.loops -= 1;
        if installed.loops > 0 {
            return Ok(());
        }
        let previous = installed.previous;
        *entry = None;
        sigaction(signal, &previous).map(drop).map_err(|err| {
            Error::io(format!("remove_signal_handler: restoring sigaction({signal})"), err.into())
        })
    }

    /// The signals delivered since the last call (bit `signum - 1`); cheap when none.
    pub(crate) fn take_pending(&self) -> u64 {
        if self.slot.pending.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.slot.pending.swap(0, Ordering::SeqCst)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for signal in signals_in(self.signals) {
            if let Err(err) = self.remove(signal) {
                log::warn!(target: "ringloop", "{err}");
            }
        }
        let _registry = registry();
        self.slot.mask.store(0, Ordering::SeqCst);
        let fd = self.slot.fd.swap(-1, Ordering::SeqCst);
        debug_assert_eq!(fd, self.eventfd.as_raw_fd(), "a signal slot names its loop's eventfd");
        // A handler that loaded the fd before it was withdrawn has `busy` raised (SeqCst: its
        // increment precedes its fd load); wait for it, so the eventfd outlives every write.
        // Handlers never block, so this wait is short.
        while self.slot.busy.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        self.slot.pending.store(0, Ordering::SeqCst);
        self.slot.claimed.store(false, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("signals", &format_args!("{:#x}", self.signals))
            .finish()
    }
}
