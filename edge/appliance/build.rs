//! Makes jemalloc the process-wide `malloc` of the `sase-edge` binary.
//!
//! Why: libmodsecurity (C++) spends 35-50 % of its CPU in glibc's malloc/free when running the
//! CRS; in a multi-threaded process glibc's arenas are far slower for that pattern than
//! jemalloc (docs/PERFORMANCE.md has the measurements).
//!
//! How, and why this is safe with `modsecurity = 0.1.4`: the crate frees strings that
//! libmodsecurity allocated with `malloc` through Rust's allocator (`CString::from_raw`), so a
//! Rust `#[global_allocator]` other than `System` would free C memory with the wrong allocator
//! (the pitfall in DESIGN.md). We do not change Rust's allocator: the binary links Debian's
//! `libjemalloc.so.2` ahead of libc, so the dynamic linker binds the single `malloc`/`free` of
//! the process — used by Rust's `System` allocator, libstdc++'s `operator new` and libmodsecurity
//! alike — to jemalloc. `tests/e2e/waf.sh` checks the binding at run time (`LD_DEBUG`).
//! A crate such as `tikv-jemallocator` would build jemalloc from source on every clean build and,
//! unprefixed, rely on the same symbol interposition; the system library is the same jemalloc
//! 5.3 without the build cost.
//!
//! jemalloc's options are compiled in from `csrc/malloc_conf.c` (a `malloc_conf` global, the way
//! jemalloc documents; a C file because defining an unmangled symbol in Rust needs `unsafe`,
//! which the workspace forbids). `MALLOC_CONF` in the environment still overrides them.
//!
//! `SASE_EDGE_SYSTEM_MALLOC=1` at build time links glibc's malloc instead (for comparisons).

fn main() {
    println!("cargo:rerun-if-env-changed=SASE_EDGE_SYSTEM_MALLOC");
    if std::env::var_os("SASE_EDGE_SYSTEM_MALLOC").is_some_and(|v| v == "1") {
        return;
    }
    println!("cargo:rerun-if-changed=csrc/malloc_conf.c");
    println!("cargo:rustc-link-lib=dylib=jemalloc");
    cc::Build::new()
        .file("csrc/malloc_conf.c")
        .link_lib_modifier("+whole-archive")
        .compile("sase_edge_malloc_conf");
}
