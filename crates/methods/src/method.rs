//! Method names: [`Init`] x [`Guidance`], parsed from and printed as `+`-joined words.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

use crate::Needs;

/// Where the initial latents come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Init {
    /// Seeded Gaussian noise (`torch.randn` with the seed), as plain Stable Diffusion.
    Gaussian,
    /// Semantic-driven initialisation from a ticket store (the paper).
    Semi,
    /// The seeded Gaussian noise with its blocks rearranged by Swap (Mao et al., ACM MM 2023).
    Swap,
    /// SemI latents with their blocks rearranged by Swap (Table 1's SemI + Swap).
    SemiSwap,
}

/// Attention guidance during denoising.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Guidance {
    None,
    /// Paint-with-words (eDiffi).
    Paint,
    /// Soft guidance (Mao & Wang, ICIP 2023).
    Soft,
}

impl Init {
    /// Every init, in the order the page offers them.
    pub const ALL: [Init; 4] = [Init::Gaussian, Init::Semi, Init::Swap, Init::SemiSwap];

    /// The init's word(s) in a method name (`gaussian` for Gaussian).
    pub fn name(self) -> &'static str {
        match self {
            Init::Gaussian => "gaussian",
            Init::Semi => "semi",
            Init::Swap => "swap",
            Init::SemiSwap => "semi+swap",
        }
    }

    /// Whether SemI builds the latents (a ticket store is needed).
    pub fn uses_semi(self) -> bool {
        matches!(self, Init::Semi | Init::SemiSwap)
    }

    /// Whether Swap rearranges the latents.
    pub fn uses_swap(self) -> bool {
        matches!(self, Init::Swap | Init::SemiSwap)
    }

    /// `gaussian`, `semi`, `swap` or `semi+swap` (also `sd`, case-insensitive).
    pub fn parse(text: &str) -> Result<Init> {
        let m = Method::parse(text)?;
        if m.guidance != Guidance::None {
            bail!("{text:?} is not an init (use gaussian, semi, swap or semi+swap)");
        }
        Ok(m.init)
    }
}

impl Guidance {
    /// Every guidance word, `none` first.
    pub const ALL: [Guidance; 3] = [Guidance::None, Guidance::Paint, Guidance::Soft];

    pub fn name(self) -> &'static str {
        match self {
            Guidance::None => "none",
            Guidance::Paint => "paint",
            Guidance::Soft => "soft",
        }
    }

    /// `none`, `paint` or `soft` (case-insensitive).
    pub fn parse(text: &str) -> Result<Guidance> {
        match text.trim().to_lowercase().as_str() {
            "none" => Ok(Guidance::None),
            "paint" => Ok(Guidance::Paint),
            "soft" => Ok(Guidance::Soft),
            _ => bail!("unknown guidance {text:?} (use none, paint or soft)"),
        }
    }
}

/// A method of the paper's Table 1: an init and a guidance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method {
    pub init: Init,
    pub guidance: Guidance,
}

const WORDS: &str = "sd, gaussian, semi, swap, paint, soft, joined by + (e.g. semi+swap+soft)";

impl Method {
    pub fn new(init: Init, guidance: Guidance) -> Self {
        Method { init, guidance }
    }

    /// `sd` (= gaussian, no guidance), `gaussian`, `semi`, `swap`, `semi+swap`, `paint`, `soft`,
    /// and any `+` combination of one init (`semi` and `swap` together make `semi+swap`) and at
    /// most one guidance word in any order (`semi+soft`, `soft+semi+swap`); `sd`/`gaussian`
    /// combine too (`sd+paint` = `paint`). Case-insensitive; anything else is an error listing
    /// the words.
    pub fn parse(text: &str) -> Result<Method> {
        let lower = text.trim().to_lowercase();
        if lower.is_empty() {
            bail!("empty method name (use {WORDS})");
        }
        let (mut gaussian, mut semi, mut swap) = (false, false, false);
        let mut guidance: Option<Guidance> = None;
        for word in lower.split('+').map(str::trim) {
            let flag = match word {
                "sd" | "gaussian" => &mut gaussian,
                "semi" => &mut semi,
                "swap" => &mut swap,
                "paint" | "soft" => {
                    let g = if word == "paint" {
                        Guidance::Paint
                    } else {
                        Guidance::Soft
                    };
                    if let Some(old) = guidance {
                        bail!(
                            "method {text:?} names two guidances ({} and {word}); choose at most one",
                            old.name()
                        );
                    }
                    guidance = Some(g);
                    continue;
                }
                "" => bail!("method {text:?} has an empty word between `+` signs (use {WORDS})"),
                other => bail!("unknown method word {other:?} in {text:?} (use {WORDS})"),
            };
            if *flag {
                bail!("method {text:?} names {word} twice");
            }
            *flag = true;
        }
        if gaussian && (semi || swap) {
            bail!("method {text:?} mixes sd/gaussian noise with another init (semi, swap)");
        }
        let init = match (semi, swap) {
            (false, false) => Init::Gaussian,
            (true, false) => Init::Semi,
            (false, true) => Init::Swap,
            (true, true) => Init::SemiSwap,
        };
        Ok(Method {
            init,
            guidance: guidance.unwrap_or(Guidance::None),
        })
    }

    /// Canonical name, used as the eval output folder: `sd`, `semi`, `swap`, `semi+swap`,
    /// `paint`, `soft`, `semi+soft`, `semi+swap+soft`, `swap+paint`, ...
    pub fn name(&self) -> String {
        let mut words: Vec<&str> = Vec::new();
        if self.init != Init::Gaussian {
            words.push(self.init.name());
        }
        if self.guidance != Guidance::None {
            words.push(self.guidance.name());
        }
        if words.is_empty() {
            "sd".to_string()
        } else {
            words.join("+")
        }
    }

    /// The paper's Table 1 rows in order: sd, paint, soft, swap, semi, semi+soft, semi+swap,
    /// semi+swap+soft.
    pub fn table1() -> Vec<Method> {
        use Guidance as G;
        use Init as I;
        [
            (I::Gaussian, G::None),
            (I::Gaussian, G::Paint),
            (I::Gaussian, G::Soft),
            (I::Swap, G::None),
            (I::Semi, G::None),
            (I::Semi, G::Soft),
            (I::SemiSwap, G::None),
            (I::SemiSwap, G::Soft),
        ]
        .into_iter()
        .map(|(i, g)| Method::new(i, g))
        .collect()
    }

    /// What the method needs: its init's and its guidance's needs ([`crate::init`],
    /// [`crate::guidance`]).
    pub fn needs(&self) -> Needs {
        self.init.needs().and(self.guidance.needs())
    }

    /// Whether a ticket store is needed (Semi, SemiSwap).
    pub fn needs_store(&self) -> bool {
        self.needs().store.is_some()
    }

    /// Whether the method needs the layout's boxes (everything but plain `sd`).
    pub fn needs_boxes(&self) -> bool {
        self.needs().boxes.is_some()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Method> {
        Method::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let names = [
            "sd",
            "paint",
            "soft",
            "swap",
            "semi",
            "semi+soft",
            "semi+swap",
            "semi+swap+soft",
            "swap+paint",
            "semi+paint",
            "swap+soft",
            "semi+swap+paint",
        ];
        for n in names {
            let m = Method::parse(n).unwrap();
            assert_eq!(m.name(), n);
            assert_eq!(m.to_string(), n);
            assert_eq!(n.parse::<Method>().unwrap(), m);
        }
        let table: Vec<String> = Method::table1().iter().map(|m| m.name()).collect();
        assert_eq!(table, names[..8]);
        for m in Method::table1() {
            assert_eq!(Method::parse(&m.name()).unwrap(), m);
        }
    }

    #[test]
    fn aliases_order_and_case() {
        let m = |s: &str| Method::parse(s).unwrap();
        assert_eq!(m("gaussian"), m("sd"));
        assert_eq!(m("sd+paint"), m("paint"));
        assert_eq!(m("Gaussian+Soft").name(), "soft");
        assert_eq!(m("soft+semi+swap").name(), "semi+swap+soft");
        assert_eq!(m("SWAP+SEMI"), Method::new(Init::SemiSwap, Guidance::None));
        assert_eq!(m(" semi + soft "), Method::new(Init::Semi, Guidance::Soft));
        assert!(m("semi").needs_store() && m("semi+swap+soft").needs_store());
        assert!(!m("swap").needs_store() && !m("paint").needs_store());
        assert!(!m("sd").needs_boxes() && m("paint").needs_boxes() && m("swap").needs_boxes());
        assert_eq!(Init::parse("semi+swap").unwrap(), Init::SemiSwap);
        assert_eq!(Init::parse("gaussian").unwrap(), Init::Gaussian);
        assert_eq!(Guidance::parse("Soft").unwrap(), Guidance::Soft);
    }

    #[test]
    fn bad_names_are_errors() {
        let err = |s: &str| Method::parse(s).unwrap_err().to_string();
        assert!(err("").contains("empty"), "{}", err(""));
        assert!(err("dalle").contains("unknown method word \"dalle\""));
        assert!(err("dalle").contains("sd, gaussian, semi, swap, paint, soft"));
        assert!(err("paint+soft").contains("two guidances"));
        assert!(err("semi+semi").contains("twice"));
        assert!(err("sd+semi").contains("mixes"));
        assert!(err("semi++soft").contains("empty word"));
        assert!(Init::parse("paint").is_err());
        assert!(Init::parse("semi+soft").is_err());
        assert!(Guidance::parse("semi").is_err());
    }
}
