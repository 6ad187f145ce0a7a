//! Link flags for the binaries. Relative relocations are packed (RELR, glibc 2.36+): the
//! tables that pulldown-cmark and others keep as pointers are relocated at every start, and
//! in the classic format their relocation records alone stay resident (over 100 KiB of
//! the server's idle memory).

fn main() {
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
