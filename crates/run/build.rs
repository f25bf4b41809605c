//! Rebuild the binary when an embedded model folder (src/embedded.rs of this crate) changes:
//! `include_dir!` alone does not tell cargo which files it read.
fn main() {
    for dir in ["toy", "toy-latent", "standard"] {
        println!("cargo:rerun-if-changed=../../models/{dir}");
    }
}
