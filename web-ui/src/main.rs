//! The console's entry point: in the browser it mounts the app on `<body>`; on the host it only
//! says how to build the console (the crate is wasm-only, see `Cargo.toml`).

#[cfg(target_arch = "wasm32")]
fn main() {
    sase_console::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    println!("sase-console runs in a browser: build it with scripts/build-console.sh");
}
