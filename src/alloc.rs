//! Giving freed memory back to the system. glibc keeps what the process freed in its
//! arenas (a flood of advertisements leaves tens of MiB resident after the nodes it named
//! are forgotten); `malloc_trim(0)` returns the free pages of every arena. The only
//! `unsafe` in the crate: one FFI call with no caller-side invariants.

/// Asks the allocator to return free pages; whether it gave anything back. It walks and
/// locks every arena, so it runs on a blocking thread and only after the mesh let go of
/// a lot (`mesh::driver`). Elsewhere than glibc: nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers; glibc serialises it with every other
    // allocator call.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}
