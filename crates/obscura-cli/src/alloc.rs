//! How much freed memory a process keeps, set for what it does.
//!
//! A client (indexing, rebuilding) allocates buffers the size of an image share several times
//! per image. With glibc's defaults, freeing them trims the heap, and the next image faults the
//! same pages back in, zeroed by the kernel: splitting a 466 KB photo took 1.18 ms that way,
//! against 0.20 ms when the memory is kept (`obscura bench` shows the split rate). Clients keep
//! up to 256 MiB of freed heap ([`keep_freed_memory`]).
//!
//! A server runs for months, and what it keeps adds up. Under `obscura load` a node's heap in
//! use stayed flat (68–70 MB: its page cache and indexes) while glibc held freed memory beside
//! it that grew without end (83 → 148 MB of heap in 150 s): store pages, request bodies and
//! share buffers of every size, freed in up to eight arenas, which never trim under a 256 MiB
//! threshold. Servers therefore use one arena, take buffers of 64 KiB and more straight from
//! the kernel and give them straight back, trim the heap above 1 MiB
//! ([`bound_retained_memory`]), and hand back the free pages inside the heap every few seconds
//! ([`release_freed_memory`]). Measured with `obscura load --seconds 300 --searchers 4`: node
//! memory +4 % from the warm-up to the end, against +13 % with two arenas and 256 KiB, and
//! +93 to +127 % (150 s) with the clients' settings.
#![allow(unsafe_code)]

/// Clients: raise glibc's trim and mmap thresholds; elsewhere nothing to do.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
        // exists, and a refused value (return 0) leaves the defaults in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        }
    }
}

/// Servers: one arena, buffers from 64 KiB on from and back to the kernel, a low trim
/// threshold; elsewhere nothing to do.
pub fn bound_retained_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: as above; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
        }
    }
}

/// Hand the free pages inside the heap back to the kernel (a server calls this every few
/// seconds); elsewhere nothing to do.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free memory to the kernel; it takes the allocator's
        // own locks and is safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// How often a server hands freed pages back: often enough that what one burst of uploads
/// freed goes within seconds, rarely enough that walking the free lists costs nothing.
pub const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
