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
//! By default mimalloc gives memory it no longer needs back to the kernel
//! with `MADV_DONTNEED` (a "decommit"), so the next allocation there faults
//! in pages the kernel must zero first. Under Baton's load that churn was
//! the largest single cost: a profile of the query benchmark put 28% of all
//! samples, and one of the rebuild 21%, in the kernel's `clear_page_erms`.
//! [`configure`] has mimalloc *reset* that memory instead (`MADV_FREE`):
//! the kernel still takes the pages back when it needs memory, but a page
//! it has not yet taken is reused as it is. Measured in
//! docs/performance.md ("The allocator").
//!
//! An operator who sets `MIMALLOC_PURGE_DECOMMITS` keeps their own choice.

/// The global allocator of every Baton binary: mimalloc.
pub use mimalloc::MiMalloc as Allocator;

/// The environment variable through which mimalloc reads the purge option
/// at start-up; when it is set, [`configure`] leaves the option as it is.
pub const PURGE_DECOMMITS_VAR: &str = "MIMALLOC_PURGE_DECOMMITS";

/// `mi_option_purge_decommits` in mimalloc's `mi_option_t` (v2 and v3 alike);
/// libmimalloc-sys names no constant for it. The test that sets the
/// environment variable and reads the option back checks the number.
const OPTION_PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;

/// How memory mimalloc no longer needs goes back to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Reset: the kernel may take the pages when it needs memory; until
    /// then they are reused without being zeroed. What [`configure`] sets.
    Lazily,
    /// As `MIMALLOC_PURGE_DECOMMITS` told mimalloc at start-up.
    AsConfigured,
}

/// Tunes mimalloc for Baton's load: freed memory is reset, not
/// decommitted (see the crate's documentation), unless the operator set
/// `MIMALLOC_PURGE_DECOMMITS`. Call it first thing in `main`; what it
/// changes applies to every later purge. Returns what it chose.
pub fn configure() -> Purge {
    if std::env::var_os(PURGE_DECOMMITS_VAR).is_some() {
        return Purge::AsConfigured;
    }
    // SAFETY: `mi_option_set` takes an option number and a value, touches
    // no memory of the caller's, and may be called at any time from any
    // thread; the number is mimalloc's own for purge_decommits (see
    // `OPTION_PURGE_DECOMMITS`).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(OPTION_PURGE_DECOMMITS, 0);
    }
    Purge::Lazily
}

/// mimalloc's purge option as it stands: 0 resets memory, anything else
/// decommits it (mimalloc's default is 1).
pub fn purge_decommits() -> std::ffi::c_long {
    // SAFETY: `mi_option_get` only reads mimalloc's option table.
    #[allow(unsafe_code)]
    let value = unsafe { libmimalloc_sys::mi_option_get(OPTION_PURGE_DECOMMITS) };
    value
}
