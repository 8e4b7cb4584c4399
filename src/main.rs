fn main() -> std::process::ExitCode {
    keep_heap_headroom();
    jobctl::cli::main()
}

/// glibc grows a thread's heap only by what each allocation needs: a build of many jobs,
/// whose state grows a little with each job, paid ~0.6 `mprotect`/`brk` calls a job
/// (each changes the address space the job processes are cloned from). With 1 MiB of
/// headroom per growth, a fifth as many: 616 → 114 for 1,000 jobs.
fn keep_heap_headroom() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of glibc's allocator; called before any thread.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
    }
}
