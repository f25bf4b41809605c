//! Noise schedulers, one file per algorithm. SKELETON: owned by the "pipeline" helper.
