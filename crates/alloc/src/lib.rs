//! `baton-alloc`: the allocator every Baton binary uses.
//!
//! The fold, the store and the gRPC and Kafka paths allocate many small
//! strings and vectors per event, and the query paths large short-lived
//! buffers (a `ListCohort` page is megabytes); mimalloc keeps them from
//! being bound by the system allocator. Each binary declares it and calls
//! [`configure`] first thing in `main`:
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: baton_alloc::Allocator = baton_alloc::Allocator;
//!
//! fn main() {
//!     baton_alloc::configure();
//!     // …
//! }
//! ```
//!
//! # Why configure
//!
//! Under Baton's load mimalloc's defaults on Linux spend much of the time in
//! the kernel zeroing pages: profiles of the query benchmark and of the
//! rebuild put 28% and 21% of all samples in `clear_page_erms`, and of the
//! in-memory fold 60%, most of it faulting in transparent huge pages.
//! [`configure`] changes two things:
//!
//! - **Transparent huge pages off for the process.** mimalloc commits each
//!   arena whole as it reserves it (on systems that overcommit) and asks
//!   the kernel for huge pages there, so memory is faulted in and zeroed
//!   2 MiB at a time, and split again by every purge. Baton turns huge pages
//!   off for itself (`prctl(PR_SET_THP_DISABLE)`), as databases commonly
//!   advise; mimalloc's own option for it is read when its first arena is
//!   already made, so it would come too late.
//! - **Freed memory reset, not decommitted** ([`SETTINGS`]): memory mimalloc
//!   no longer needs goes back with `MADV_DONTNEED` by default, so the next
//!   allocation there faults in pages the kernel zeroes again. Baton has it
//!   reset with `MADV_FREE`: the kernel still takes the pages when it needs
//!   memory, and until then they are reused as they are.
//!
//! Measured in docs/performance.md ("The allocator"). An operator who sets
//! `MIMALLOC_ALLOW_THP` or one of the variables of [`SETTINGS`] keeps their
//! own choice for it.

use std::ffi::c_long;

/// The global allocator of every Baton binary: mimalloc.
pub use mimalloc::MiMalloc as Allocator;

/// One mimalloc option Baton sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable mimalloc reads the option from at start-up;
    /// when it is set, [`configure`] leaves the option as it is.
    pub variable: &'static str,
    /// The option's number in mimalloc's `mi_option_t` (the same in v2 and
    /// v3; libmimalloc-sys names no constant for these). The tests set each
    /// variable and read the option back, which checks the number.
    option: libmimalloc_sys::mi_option_t,
    /// mimalloc's own default.
    pub default: c_long,
    /// What Baton sets.
    pub value: c_long,
}

/// The mimalloc options [`configure`] sets (see the crate's documentation
/// for why).
pub const SETTINGS: [Setting; 1] = [Setting {
    variable: "MIMALLOC_PURGE_DECOMMITS",
    option: 5,
    default: 1,
    value: 0,
}];

/// mimalloc's environment variable for transparent huge pages; when it is
/// set, mimalloc applies it at start-up and [`configure`] leaves them be.
pub const HUGE_PAGES_VARIABLE: &str = "MIMALLOC_ALLOW_THP";

/// Who chose an option's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// [`configure`] set Baton's value.
    ByBaton,
    /// The operator's environment variable, read by mimalloc at start-up.
    ByOperator,
}

/// What [`configure`] did.
#[derive(Debug)]
pub struct Configured {
    /// Who chose each of [`SETTINGS`], in its order.
    pub settings: [Chosen; SETTINGS.len()],
    /// Transparent huge pages: `Ok(Chosen::ByBaton)` when Baton turned
    /// them off, `Ok(Chosen::ByOperator)` when `MIMALLOC_ALLOW_THP` was
    /// set, the error when the kernel refused (they stay as they were).
    pub huge_pages: std::io::Result<Chosen>,
}

impl Configured {
    /// Whether the kernel refused to turn transparent huge pages off (a
    /// sandbox may): the process runs, only slower to grow its memory.
    pub fn refused(&self) -> Option<&std::io::Error> {
        self.huge_pages.as_ref().err()
    }
}

/// One line for a service's log: each setting and who chose it.
impl std::fmt::Display for Configured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mimalloc")?;
        for (setting, chosen) in SETTINGS.iter().zip(&self.settings) {
            match chosen {
                Chosen::ByBaton => write!(f, ", {}={} (Baton's)", setting.variable, setting.value)?,
                Chosen::ByOperator => write!(f, ", {} from the environment", setting.variable)?,
            }
        }
        match &self.huge_pages {
            Ok(Chosen::ByBaton) => write!(f, ", transparent huge pages off (Baton's)"),
            Ok(Chosen::ByOperator) => write!(f, ", {HUGE_PAGES_VARIABLE} from the environment"),
            Err(error) => write!(
                f,
                ", transparent huge pages as the kernel had them (it refused to turn them off: {error})"
            ),
        }
    }
}

/// Tunes mimalloc for Baton's load (see the crate's documentation): turns
/// transparent huge pages off for the process unless the operator set
/// `MIMALLOC_ALLOW_THP`, and sets each of [`SETTINGS`] unless the operator
/// set its variable. Call it first thing in `main`; what it changes applies
/// from then on.
pub fn configure() -> Configured {
    let settings = SETTINGS.map(|setting| {
        if std::env::var_os(setting.variable).is_some() {
            return Chosen::ByOperator;
        }
        // SAFETY: `mi_option_set` takes an option number and a value,
        // touches no memory of the caller's, and may be called at any time
        // from any thread; the numbers are mimalloc's own (see `Setting`).
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(setting.option, setting.value);
        }
        Chosen::ByBaton
    });
    let huge_pages = if std::env::var_os(HUGE_PAGES_VARIABLE).is_some() {
        Ok(Chosen::ByOperator)
    } else {
        turn_huge_pages_off().map(|()| Chosen::ByBaton)
    };
    Configured {
        settings,
        huge_pages,
    }
}

/// Whether transparent huge pages are off for this process.
pub fn huge_pages_off() -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    return rustix::thread::transparent_huge_pages_are_disabled().map_err(Into::into);
    #[cfg(not(target_os = "linux"))]
    return Ok(false);
}

fn turn_huge_pages_off() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    return rustix::thread::disable_transparent_huge_pages(true).map_err(Into::into);
    #[cfg(not(target_os = "linux"))]
    return Ok(());
}

/// The value mimalloc holds for `setting` now.
pub fn current(setting: &Setting) -> c_long {
    // SAFETY: `mi_option_get` only reads mimalloc's option table.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_get(setting.option)
    }
}
