//! Finding and loading a diffusers folder. SKELETON: owned by the "pipeline" helper.
