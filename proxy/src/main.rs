/// mimalloc instead of glibc malloc: the hit path allocates small, short-lived objects on
/// every request (headers, buffers, futures), which glibc serves measurably slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3; the Rust bindings name no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Memory freed by a purge or eviction goes back to the system at once. With the default
    // 10 ms delay the return waits for the owning thread's next allocation, so after purging a
    // 256 MiB cache an idle proxy stayed at 320 MB resident (91 MB with this).
    // SAFETY: sets one integer option; mimalloc reads options on use.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    portier::cli::main()
}
