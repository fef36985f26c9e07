//! Which techniques a `raw-uring-max` loop uses, and their names on the command line:
//! `raw-uring-max` is [`Techniques::MAX`]; `-no-NAME` drops a technique it uses and
//! `-with-NAME` adds one it leaves out (`raw-uring-max-no-link-with-poll-first`).

/// Which techniques the loop uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Techniques {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`.
    pub defer_taskrun: bool,
    /// `IORING_REGISTER_RING_FDS`.
    pub ring_fd: bool,
    /// Direct descriptors from a sparse registered file table.
    pub fixed_files: bool,
    /// Registered buffers: `READ_FIXED`/`WRITE_FIXED` instead of `RECV`/`SEND`.
    pub fixed_buffers: bool,
    /// The send linked to the next recv.
    pub link: bool,
    /// `IOSQE_CQE_SKIP_SUCCESS` on the linked send.
    pub skip: bool,
    /// `IORING_RECVSEND_POLL_FIRST` on the recv.
    pub poll_first: bool,
    /// A multishot recv per connection from a provided-buffer ring, a send per chunk
    /// (`multishot.rs`). Without it, the linked loop: `link`, `skip`, `poll-first` and
    /// `fixed-buffers` apply only there.
    pub multishot: bool,
    /// `IORING_RECVSEND_BUNDLE` on the multishot recv (Linux 6.10): one receive may fill
    /// several ring buffers, one after the other in the ring. `multishot` only.
    pub bundle: bool,
}

/// The name of the loop with [`Techniques::MAX`].
pub const NAME: &str = "raw-uring-max";

/// A technique's switch in [`Techniques`].
type Switch = fn(&mut Techniques) -> &mut bool;

/// Each technique's name, and its switch.
const SWITCHES: [(&str, Switch); 9] = [
    ("defer-taskrun", |t| &mut t.defer_taskrun),
    ("ring-fd", |t| &mut t.ring_fd),
    ("fixed-files", |t| &mut t.fixed_files),
    ("fixed-buffers", |t| &mut t.fixed_buffers),
    ("link", |t| &mut t.link),
    ("skip", |t| &mut t.skip),
    ("poll-first", |t| &mut t.poll_first),
    ("multishot", |t| &mut t.multishot),
    ("bundle", |t| &mut t.bundle),
];

impl Techniques {
    /// The `raw-uring-max` row: every technique that measured faster in this harness (see
    /// `docs/benchmarks.md` for what each bought, and the ones left out).
    pub const MAX: Techniques = Techniques {
        defer_taskrun: true,
        ring_fd: true,
        fixed_files: true,
        fixed_buffers: false,
        link: true,
        skip: true,
        poll_first: false,
        multishot: true,
        bundle: false,
    };

    /// The impl name: `raw-uring-max`, then `-no-NAME` or `-with-NAME` for each technique
    /// that differs from [`Techniques::MAX`].
    pub fn name(self) -> String {
        let (mut this, mut max) = (self, Techniques::MAX);
        let mut name = String::from(NAME);
        for (technique, switch) in SWITCHES {
            match (*switch(&mut this), *switch(&mut max)) {
                (false, true) => name += &format!("-no-{technique}"),
                (true, false) => name += &format!("-with-{technique}"),
                _ => {}
            }
        }
        name
    }

    /// Parses [`Techniques::name`]; `None` when `name` is not a `raw-uring-max` name.
    pub fn parse(name: &str) -> Option<Techniques> {
        let mut rest = name.strip_prefix(NAME)?;
        let mut techniques = Techniques::MAX;
        while !rest.is_empty() {
            let (on, after) = match rest.strip_prefix("-no-") {
                Some(after) => (false, after),
                None => (true, rest.strip_prefix("-with-")?),
            };
            let (technique, switch) = SWITCHES.iter().find(|(n, _)| after.starts_with(n))?;
            *switch(&mut techniques) = on;
            rest = &after[technique.len()..];
        }
        Some(techniques)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(Techniques::MAX.name(), "raw-uring-max");
        let t = Techniques { fixed_files: false, poll_first: true, ..Techniques::MAX };
        assert_eq!(t.name(), "raw-uring-max-no-fixed-files-with-poll-first");
        let linked = Techniques { multishot: false, link: false, ..Techniques::MAX };
        assert_eq!(linked.name(), "raw-uring-max-no-link-no-multishot");
        assert_eq!(Techniques::parse("raw-uring-max-no-multishot-no-link"), Some(linked));
        assert_eq!(Techniques::parse(&t.name()), Some(t));
        assert_eq!(Techniques::parse("raw-uring-max"), Some(Techniques::MAX));
        assert_eq!(Techniques::parse("raw-uring-max-no-what"), None);
        assert_eq!(Techniques::parse("raw-uring-max-link"), None);
        assert_eq!(Techniques::parse("raw-uring"), None);
    }
}
