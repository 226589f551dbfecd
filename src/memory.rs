//! Giving memory the process freed back to the operating system.
//!
//! glibc's allocator keeps the pages of a freed peak for the process: after a fleet's first
//! converge, with every target converging at once, the resident size stays at that peak
//! although most of it is free. A long-running `stevedore run` returns it once a round has
//! settled, and the controller every half minute (its work never settles all at once), so
//! the footprint follows what the process holds, not what it once needed.

use std::time::Duration;

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

/// Returns the allocator's free pages every `period`, for as long as the process runs. Each
/// trim walks the allocator's free lists, so it runs on a blocking thread, not a worker.
pub async fn return_freed_pages_every(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(return_freed_pages).await;
    }
}
