//! The `semi` command. SKELETON: owned by the "pipeline" helper.
fn main() {}
