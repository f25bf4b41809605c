//! Winning-ticket selection (paper Eq. 2-5, docs/design.md 1.3) and the authors' per-object-count
//! rules as a named preset.
//!
//! A block b is (noise image k, grid cell), flat index `k * cells + cell`. For the categories C
//! of one request:
//!
//! **`paper`** (default `T_obj` = 0.5, `T_bg` = 0.1, paper Table 2):
//! - one category i: `B_i = {b : Average_i(b) > T_obj}` (Eq. 4);
//! - several: `B_i = {b : S_{i,(j)}(b) > T_obj for every other j in C}` (Eq. 3);
//! - background: `B_bg = {b : Average_i(b) < T_bg for every i in C}` (Eq. 5);
//! - a block that qualifies for two of these sets (two categories, or a category and the
//!   background, possible only when `T_bg > T_obj` or via averages over partners outside C) is
//!   ambiguous and used for none of them (paper 3.1).
//!
//! `Average_i` is the mean of `S_{i,(j)}` over every partner j of i in the store (Eq. 2), not
//! only the partners in C; every pair it needs must be complete in the store.
//!
//! **`authors`**: what `product_image` in the official code (UT-Mao/Initial-Noise-Construction,
//! `utils.py`) does, with its default thresholds `t_pos_1` = 0.5, `t_bg_1` = 0.3, `t_pos_2` =
//! 0.3, `t_neg_2` = 0.3, `t_bg_2` = 0.1:
//! - 1 object: `B = {Average > t_pos_1}`, `B_bg = {Average < t_bg_1}`;
//! - 2 objects: `B_1 = {S_12 > t_pos_2 and S_21 < t_neg_2}`, `B_2` symmetric,
//!   `B_bg = {S_12 < t_bg_2 and S_21 < t_bg_2}` (pair scores, not averages);
//! - 3 objects: `B_i = {S_ij > t_pos_2 for both other j}`, `B_bg = {Average_i < t_bg_2 for all
//!   three}`. The official code stops at 3 objects; we apply the 3-object rule to any larger
//!   count.
//! - no ambiguity removal (the official code has none; its 2-object rule is disjoint by
//!   construction, its 3-object rule is not).
//!
//! Comparisons are strict, as in the paper and the code.

use std::fmt;

use anyhow::{bail, Result};

use crate::store::Store;

/// The official code's thresholds (`product_image` defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuthorsThresholds {
    /// One object: object threshold on the average score.
    pub t_pos_1: f32,
    /// One object: background threshold on the average score.
    pub t_bg_1: f32,
    /// Two or more objects: object threshold on pair scores.
    pub t_pos_2: f32,
    /// Two objects: the partner's score must stay below this.
    pub t_neg_2: f32,
    /// Two or more objects: background threshold.
    pub t_bg_2: f32,
}

impl Default for AuthorsThresholds {
    fn default() -> Self {
        AuthorsThresholds {
            t_pos_1: 0.5,
            t_bg_1: 0.3,
            t_pos_2: 0.3,
            t_neg_2: 0.3,
            t_bg_2: 0.1,
        }
    }
}

/// A selection rule (module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Paper Eq. 3-5 with ambiguity removal.
    Paper { t_obj: f32, t_bg: f32 },
    /// The official code's per-object-count rules.
    Authors(AuthorsThresholds),
}

/// Names accepted by [`Rule::preset`].
pub const PRESETS: &[&str] = &["paper", "authors"];

fn check_threshold(name: &str, v: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        bail!("{name} = {v} is outside [0, 1] (scores are min-max normalised to [0, 1])");
    }
    Ok(())
}

impl Rule {
    /// The paper's rule with the given thresholds (each in [0, 1]).
    pub fn paper(t_obj: f32, t_bg: f32) -> Result<Rule> {
        let r = Rule::Paper { t_obj, t_bg };
        r.validate()?;
        Ok(r)
    }

    /// The official code's rules with its default thresholds.
    pub fn authors() -> Rule {
        Rule::Authors(AuthorsThresholds::default())
    }

    /// `paper` (T_obj 0.5, T_bg 0.1) or `authors`.
    pub fn preset(name: &str) -> Result<Rule> {
        match name.trim().to_lowercase().as_str() {
            "paper" => Rule::paper(0.5, 0.1),
            "authors" => Ok(Rule::authors()),
            other => bail!(
                "unknown selection preset {other:?} (known: {})",
                PRESETS.join(", ")
            ),
        }
    }

    /// Every threshold must lie in [0, 1].
    pub fn validate(&self) -> Result<()> {
        match *self {
            Rule::Paper { t_obj, t_bg } => {
                check_threshold("T_obj (--t-obj)", t_obj)?;
                check_threshold("T_bg (--t-bg)", t_bg)
            }
            Rule::Authors(t) => {
                check_threshold("t_pos_1", t.t_pos_1)?;
                check_threshold("t_bg_1", t.t_bg_1)?;
                check_threshold("t_pos_2", t.t_pos_2)?;
                check_threshold("t_neg_2", t.t_neg_2)?;
                check_threshold("t_bg_2", t.t_bg_2)
            }
        }
    }

    /// What to change when a category (or, with `background`, the background) gets no ticket.
    pub fn advice(&self, n_categories: usize, background: bool) -> String {
        match (*self, background) {
            (Rule::Paper { t_obj, .. }, false) => format!("lower --t-obj (now {t_obj})"),
            (Rule::Paper { t_bg, .. }, true) => format!("raise --t-bg (now {t_bg})"),
            (Rule::Authors(t), false) if n_categories == 1 => {
                format!("lower t_pos_1 (now {})", t.t_pos_1)
            }
            (Rule::Authors(t), false) if n_categories == 2 => format!(
                "lower t_pos_2 (now {}) or raise t_neg_2 (now {})",
                t.t_pos_2, t.t_neg_2
            ),
            (Rule::Authors(t), false) => format!("lower t_pos_2 (now {})", t.t_pos_2),
            (Rule::Authors(t), true) if n_categories == 1 => {
                format!("raise t_bg_1 (now {})", t.t_bg_1)
            }
            (Rule::Authors(t), true) => format!("raise t_bg_2 (now {})", t.t_bg_2),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Paper { t_obj, t_bg } => write!(f, "paper (T_obj {t_obj}, T_bg {t_bg})"),
            Rule::Authors(t) => write!(
                f,
                "authors (t_pos_1 {}, t_bg_1 {}, t_pos_2 {}, t_neg_2 {}, t_bg_2 {})",
                t.t_pos_1, t.t_bg_1, t.t_pos_2, t.t_neg_2, t.t_bg_2
            ),
        }
    }
}

/// Counts for one ticket set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetReport {
    /// Category name, or `background`.
    pub name: String,
    /// Blocks meeting the set's condition.
    pub qualified: usize,
    /// Of those, dropped as ambiguous.
    pub ambiguous: usize,
    /// Tickets left: `qualified - ambiguous`.
    pub tickets: usize,
}

/// How many tickets each category and the background got.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionReport {
    pub rule: Rule,
    pub n_images: usize,
    pub n_blocks: usize,
    pub categories: Vec<SetReport>,
    pub background: SetReport,
}

impl fmt::Display for SelectionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "selection {} over {} blocks ({} noise images)",
            self.rule, self.n_blocks, self.n_images
        )?;
        for s in self
            .categories
            .iter()
            .chain(std::iter::once(&self.background))
        {
            write!(f, "  {:<20} {:>7} tickets", s.name, s.tickets)?;
            if s.ambiguous > 0 {
                write!(f, " ({} ambiguous dropped)", s.ambiguous)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The winning tickets of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The request's categories (normalised, first occurrence order, no duplicates).
    pub categories: Vec<String>,
    /// Per category, its tickets as flat block indices (`image * cells + cell`), ascending.
    pub tickets: Vec<Vec<u32>>,
    /// Background tickets, ascending.
    pub background: Vec<u32>,
    pub report: SelectionReport,
}

impl Selection {
    /// The tickets of `category` (normalised name), if it is in the request.
    pub fn tickets_of(&self, category: &str) -> Option<&[u32]> {
        self.categories
            .iter()
            .position(|c| c == category)
            .map(|i| self.tickets[i].as_slice())
    }
}

/// Select winning tickets for `categories` (any case; duplicates are merged) from `store`.
/// Errors: empty request, a category the store lacks (naming the store's categories), a pair or
/// partner pair not complete in the store, thresholds outside [0, 1].
pub fn select<S: AsRef<str>>(store: &Store, categories: &[S], rule: &Rule) -> Result<Selection> {
    rule.validate()?;
    let mut cats: Vec<String> = Vec::new();
    for c in categories {
        let c = store.resolve_category(c.as_ref())?;
        if !cats.contains(&c) {
            cats.push(c);
        }
    }
    if cats.is_empty() {
        bail!("no categories to select tickets for");
    }
    let n = store.n_blocks();
    let k = cats.len();
    let all = |v: &[f32], pred: &dyn Fn(f32) -> bool| -> Vec<bool> {
        v.iter().map(|&x| pred(x)).collect()
    };

    // Per category its qualifying mask, and the background mask.
    let mut masks: Vec<Vec<bool>> = Vec::with_capacity(k);
    let bg: Vec<bool>;
    let drop_ambiguous;
    match *rule {
        Rule::Paper { t_obj, t_bg } => {
            drop_ambiguous = true;
            let averages: Vec<Vec<f32>> = cats
                .iter()
                .map(|c| store.average_scores(c).map(|(a, _)| a))
                .collect::<Result<_>>()?;
            if k == 1 {
                masks.push(all(&averages[0], &|x| x > t_obj));
            } else {
                for (i, ci) in cats.iter().enumerate() {
                    let mut m = vec![true; n];
                    for (j, cj) in cats.iter().enumerate() {
                        if i != j {
                            let s = store.scores(ci, cj)?;
                            for (mb, sb) in m.iter_mut().zip(&s) {
                                *mb &= *sb > t_obj;
                            }
                        }
                    }
                    masks.push(m);
                }
            }
            bg = below_all(&averages, t_bg, n);
        }
        Rule::Authors(t) => {
            drop_ambiguous = false;
            if k == 1 {
                let (avg, _) = store.average_scores(&cats[0])?;
                masks.push(all(&avg, &|x| x > t.t_pos_1));
                bg = all(&avg, &|x| x < t.t_bg_1);
            } else if k == 2 {
                let s12 = store.scores(&cats[0], &cats[1])?;
                let s21 = store.scores(&cats[1], &cats[0])?;
                let both = |pa: &dyn Fn(f32) -> bool,
                            pb: &dyn Fn(f32) -> bool,
                            a: &[f32],
                            b: &[f32]|
                 -> Vec<bool> {
                    a.iter().zip(b).map(|(&x, &y)| pa(x) && pb(y)).collect()
                };
                masks.push(both(&|x| x > t.t_pos_2, &|y| y < t.t_neg_2, &s12, &s21));
                masks.push(both(&|x| x > t.t_pos_2, &|y| y < t.t_neg_2, &s21, &s12));
                bg = both(&|x| x < t.t_bg_2, &|y| y < t.t_bg_2, &s12, &s21);
            } else {
                for (i, ci) in cats.iter().enumerate() {
                    let mut m = vec![true; n];
                    for (j, cj) in cats.iter().enumerate() {
                        if i != j {
                            let s = store.scores(ci, cj)?;
                            for (mb, sb) in m.iter_mut().zip(&s) {
                                *mb &= *sb > t.t_pos_2;
                            }
                        }
                    }
                    masks.push(m);
                }
                let averages: Vec<Vec<f32>> = cats
                    .iter()
                    .map(|c| store.average_scores(c).map(|(a, _)| a))
                    .collect::<Result<_>>()?;
                bg = below_all(&averages, t.t_bg_2, n);
            }
        }
    }

    // Ambiguity: a block in two or more sets (categories and background) is in none.
    let ambiguous: Vec<bool> = if drop_ambiguous {
        (0..n)
            .map(|b| masks.iter().filter(|m| m[b]).count() + bg[b] as usize >= 2)
            .collect()
    } else {
        vec![false; n]
    };
    let finish = |name: &str, mask: &[bool]| -> (Vec<u32>, SetReport) {
        let mut tickets = Vec::new();
        let (mut qualified, mut amb) = (0, 0);
        for b in 0..n {
            if mask[b] {
                qualified += 1;
                if ambiguous[b] {
                    amb += 1;
                } else {
                    tickets.push(b as u32);
                }
            }
        }
        let report = SetReport {
            name: name.to_string(),
            qualified,
            ambiguous: amb,
            tickets: tickets.len(),
        };
        (tickets, report)
    };
    let mut tickets = Vec::with_capacity(k);
    let mut reports = Vec::with_capacity(k);
    for (c, m) in cats.iter().zip(&masks) {
        let (t, r) = finish(c, m);
        tickets.push(t);
        reports.push(r);
    }
    let (background, bg_report) = finish("background", &bg);
    Ok(Selection {
        report: SelectionReport {
            rule: *rule,
            n_images: store.n_images(),
            n_blocks: n,
            categories: reports,
            background: bg_report,
        },
        categories: cats,
        tickets,
        background,
    })
}

fn below_all(averages: &[Vec<f32>], t: f32, n: usize) -> Vec<bool> {
    let mut m = vec![true; n];
    for a in averages {
        for (mb, x) in m.iter_mut().zip(a) {
            *mb &= *x < t;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_checked() {
        assert!(Rule::paper(1.5, 0.1).is_err());
        assert!(Rule::paper(0.5, -0.1).is_err());
        assert!(Rule::paper(f32::NAN, 0.1).is_err());
        let err = Rule::paper(0.5, 2.0).unwrap_err().to_string();
        assert!(err.contains("T_bg"), "{err}");
        assert_eq!(
            Rule::preset("paper").unwrap(),
            Rule::Paper {
                t_obj: 0.5,
                t_bg: 0.1
            }
        );
        assert_eq!(Rule::preset("Authors").unwrap(), Rule::authors());
        assert!(Rule::preset("magic").is_err());
        let t = AuthorsThresholds {
            t_neg_2: 1.1,
            ..Default::default()
        };
        assert!(Rule::Authors(t).validate().is_err());
    }
}
