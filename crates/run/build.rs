//! Rebuild the binary when the embedded model (`models/toy`, see src/embedded.rs of this crate) changes:
//! `include_dir!` alone does not tell cargo which files it read.
fn main() {
    println!("cargo:rerun-if-changed=../../models/toy");
}
