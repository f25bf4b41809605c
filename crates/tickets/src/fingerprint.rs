//! What a store's scores depend on. Two stores (or shards) mix only if their fingerprints are
//! equal field by field; a mismatch is an error that names the differing fields.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use semi_layout::Grid;
use serde::{Deserialize, Serialize};

/// Everything that changes the probe's score maps, recorded in every store's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFingerprint {
    /// Hash of the model's UNet and text-encoder weights and configs (the prober computes it).
    pub model: String,
    /// The model family (`sd`, `sdxl`): tickets of SD 1.x/2.x and SDXL never mix, and a
    /// refused store says so in these words. Written only when not `sd`, so older stores keep
    /// their digest.
    #[serde(default = "sd", skip_serializing_if = "is_sd")]
    pub family: String,
    /// The probed attention layers, e.g. `["down_blocks.2.attentions.1.transformer_blocks.0.attn2"]`.
    pub layers: Vec<String>,
    /// The probe timestep (981 for SD 1.x with DDIM 50 steps, leading spacing, offset 1).
    pub timestep: u32,
    /// What the probed UNet input is per unit of noise: `init_noise_sigma / sqrt(sigma^2 + 1)`
    /// for Euler's sigma space, 1 for DDIM, PNDM, DPM-Solver and UniPC (then not written, so
    /// older stores keep their digest).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub input_scale: f64,
    /// The contrastive prompt with `{c1}` and `{c2}` placeholders, e.g. `a {c1} and a {c2}`.
    pub prompt_template: String,
    /// Image size in pixels.
    pub height: u32,
    pub width: u32,
    /// Latent shape `[channels, height, width]` of one noise image (SD 1.x at 512: `[4, 64, 64]`).
    pub latent: [usize; 3],
    /// Ticket grid `[rows, cols]` = resolution of the probed layer (SD 1.x at 512: `[16, 16]`).
    pub grid: [usize; 2],
}

fn sd() -> String {
    "sd".to_string()
}

fn is_sd(family: &String) -> bool {
    family == "sd"
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

// Validated fingerprints hold no NaN.
impl Eq for ProbeFingerprint {}

impl ProbeFingerprint {
    /// Checks internal consistency: non-empty model and layers, a template with both
    /// placeholders, positive sizes, and a grid that cuts the latent into equal blocks.
    pub fn validate(&self) -> Result<()> {
        if self.model.trim().is_empty() {
            bail!("probe fingerprint has an empty model hash");
        }
        if self.layers.is_empty() {
            bail!("probe fingerprint names no probed layer");
        }
        if !(self.input_scale.is_finite() && self.input_scale > 0.0) {
            bail!(
                "probe fingerprint has an invalid input scale {}",
                self.input_scale
            );
        }
        if !self.prompt_template.contains("{c1}") || !self.prompt_template.contains("{c2}") {
            bail!(
                "prompt template {:?} must contain {{c1}} and {{c2}}",
                self.prompt_template
            );
        }
        if self.height == 0 || self.width == 0 {
            bail!("image size {}x{} must be positive", self.width, self.height);
        }
        let [c, h, w] = self.latent;
        let [rows, cols] = self.grid;
        if c == 0 || h == 0 || w == 0 {
            bail!("latent shape {:?} must be positive", self.latent);
        }
        // Bounds a damaged manifest cannot pass (a 16384-pixel side is latent 2048 at most).
        if c > 64 || h > 4096 || w > 4096 || self.height > 16384 || self.width > 16384 {
            bail!(
                "image {}x{} with latent shape {:?} is beyond any model semi loads",
                self.width,
                self.height,
                self.latent
            );
        }
        if rows == 0 || cols == 0 || !h.is_multiple_of(rows) || !w.is_multiple_of(cols) {
            bail!("a {rows}x{cols} ticket grid does not cut the {h}x{w} latent into equal blocks");
        }
        Ok(())
    }

    /// The ticket grid as the layout crate's [`Grid`].
    pub fn grid(&self) -> Grid {
        Grid::new(self.grid[0], self.grid[1]).expect("validated grid")
    }

    /// Number of grid cells (= blocks per noise image).
    pub fn cells(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    /// Block height and width in latent pixels.
    pub fn block_hw(&self) -> (usize, usize) {
        (self.latent[1] / self.grid[0], self.latent[2] / self.grid[1])
    }

    /// Values in one block: channels x block height x block width (64 for SD 1.x at 512).
    pub fn block_len(&self) -> usize {
        let (bh, bw) = self.block_hw();
        self.latent[0] * bh * bw
    }

    /// Values in one noise image.
    pub fn image_len(&self) -> usize {
        self.latent.iter().product()
    }

    /// The prompt for a pair: the template with `{c1}`, `{c2}` replaced.
    pub fn prompt(&self, c1: &str, c2: &str) -> String {
        self.prompt_template.replace("{c1}", c1).replace("{c2}", c2)
    }

    /// A short stable hex digest of the whole fingerprint (SHA-256 of its JSON, first 16 hex
    /// digits), e.g. to name an on-the-fly cache store per model and probe settings.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_string(self).expect("fingerprint serialises");
        let hash = Sha256::digest(json.as_bytes());
        hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The fields where `other` differs, as `name: ours vs theirs` (empty when equal).
    pub fn differences(&self, other: &ProbeFingerprint) -> Vec<String> {
        let mut d = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{name}: {a} vs {b}"));
            }
        };
        cmp("family", self.family.clone(), other.family.clone());
        cmp("model", self.model.clone(), other.model.clone());
        cmp(
            "layers",
            format!("{:?}", self.layers),
            format!("{:?}", other.layers),
        );
        cmp(
            "timestep",
            self.timestep.to_string(),
            other.timestep.to_string(),
        );
        cmp(
            "input_scale",
            self.input_scale.to_string(),
            other.input_scale.to_string(),
        );
        cmp(
            "prompt_template",
            format!("{:?}", self.prompt_template),
            format!("{:?}", other.prompt_template),
        );
        cmp(
            "size",
            format!("{}x{}", self.width, self.height),
            format!("{}x{}", other.width, other.height),
        );
        cmp(
            "latent",
            format!("{:?}", self.latent),
            format!("{:?}", other.latent),
        );
        cmp(
            "grid",
            format!("{:?}", self.grid),
            format!("{:?}", other.grid),
        );
        d
    }

    /// Error unless `other` is identical; `what` names the two sides for the message.
    pub fn ensure_same(&self, other: &ProbeFingerprint, what: &str) -> Result<()> {
        let d = self.differences(other);
        if !d.is_empty() {
            bail!(
                "{what} were made with different models or probe settings ({}); they cannot be mixed",
                d.join("; ")
            );
        }
        Ok(())
    }
}

/// SHA-256 (hex) over `files` in the order given, each contributing its file name (not its
/// directory, so a moved model keeps its hash), its length and its bytes. Meant for
/// [`ProbeFingerprint::model`]: pass the UNet and text-encoder weights and configs. It reads every
/// byte (about 4 GB for SD 1.5 in f32, tens of seconds), so callers may cache it.
pub fn hash_files(files: &[&Path]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in files {
        let name = path
            .file_name()
            .with_context(|| format!("{} has no file name", path.display()))?;
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("cannot open {} to hash it", path.display()))?;
        let len = file.metadata()?.len();
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_encoded_bytes());
        hasher.update(len.to_le_bytes());
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sd() -> ProbeFingerprint {
        ProbeFingerprint {
            model: "abc".into(),
            family: "sd".into(),
            layers: vec!["down_blocks.2.attentions.1.transformer_blocks.0.attn2".into()],
            timestep: 981,
            input_scale: 1.0,
            prompt_template: "a {c1} and a {c2}".into(),
            height: 512,
            width: 512,
            latent: [4, 64, 64],
            grid: [16, 16],
        }
    }

    #[test]
    fn sizes() {
        let f = sd();
        f.validate().unwrap();
        assert_eq!(f.cells(), 256);
        assert_eq!(f.block_len(), 64);
        assert_eq!(f.prompt("car", "dog"), "a car and a dog");
        assert_eq!(f.digest().len(), 16);
        assert_eq!(f.digest(), sd().digest());
        let mut g = sd();
        g.timestep = 980;
        assert_ne!(f.digest(), g.digest());
    }

    #[test]
    fn differences_are_named() {
        let mut g = sd();
        g.model = "xyz".into();
        g.timestep = 1;
        let err = sd().ensure_same(&g, "the stores").unwrap_err().to_string();
        assert!(err.contains("model: abc vs xyz"), "{err}");
        assert!(err.contains("timestep: 981 vs 1"), "{err}");
        sd().ensure_same(&sd(), "x").unwrap();
    }

    #[test]
    fn file_hash_depends_on_names_and_bytes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.json"), d.path().join("b.json"));
        std::fs::write(&a, b"{}").unwrap();
        std::fs::write(&b, b"{}").unwrap();
        let h = hash_files(&[&a]).unwrap();
        assert_eq!(h.len(), 64);
        assert_ne!(h, hash_files(&[&b]).unwrap());
        std::fs::write(&a, b"{ }").unwrap();
        assert_ne!(h, hash_files(&[&a]).unwrap());
        assert!(hash_files(&[&d.path().join("missing")]).is_err());
    }

    #[test]
    fn bad_fingerprints() {
        let mut f = sd();
        f.grid = [5, 16];
        assert!(f.validate().is_err());
        let mut f = sd();
        f.prompt_template = "a {c1}".into();
        assert!(f.validate().is_err());
    }
}
