//! Giving memory the process freed back to the operating system.
//!
//! glibc's allocator keeps the pages of a freed peak for the process: after a fleet's first
//! converge, with every target converging at once, the resident size stays at that peak
//! although most of it is free. A long-running `stevedore run` returns it once a round has
//! settled, so its footprint follows what it holds, not what it once needed.

/// Returns the allocator's free pages to the operating system (glibc's `malloc_trim`).
/// Elsewhere, where the allocator does not keep them this way, it does nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_freed_pages() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointer
    // and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the allocator's free pages to the operating system; nothing to do here.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_freed_pages() {}
