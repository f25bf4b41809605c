//! The unrolled text-to-image loop. SKELETON: owned by the "pipeline" helper.
