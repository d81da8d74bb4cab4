//! The `promote` binary: all of it lives in the library's `cli` module.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Like other Unix tools, stop quietly when the reader of our output goes away
    // (`promote status | head -1`) instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: setting a signal disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    promote::cli::main()
}
