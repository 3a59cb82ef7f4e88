//! Embeds libtorch's library directory as an rpath so that `poc` and its tests run without
//! LD_LIBRARY_PATH. The directory comes from LIBTORCH, which scripts/env.sh sets.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
}
