/// mimalloc instead of glibc malloc: the hit path allocates small, short-lived objects on
/// every request (headers, buffers, futures), which glibc serves measurably slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portier::cli::main()
}
