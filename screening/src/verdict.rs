//! The slide verdict.

use serde::{Deserialize, Serialize};

/// The screening verdict for a slide (so far, or final). Serialized as its
/// [`as_str`](Self::as_str) word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No blasts seen: green.
    NoBlasts,
    /// Too many of the good fields were uncertain to say: amber.
    Uncertain,
    /// Blasts seen: red, refer the slide to a haematologist.
    Refer,
    /// Too few good fields to say anything: amber, scan more fields.
    Insufficient,
    /// The scan was cut short by a fault (disk full, database or inference error): no verdict
    /// was reached and none is stored; rescan the slide once the fault is fixed.
    Incomplete,
    /// Most good fields were unfamiliar to the model: it was not validated for pictures like
    /// these (another microscope, camera, lamp or stain), so it says nothing about them: amber.
    Unfamiliar,
}

impl Verdict {
    /// Every verdict, in declaration order.
    pub const ALL: [Verdict; 6] = [
        Verdict::NoBlasts,
        Verdict::Uncertain,
        Verdict::Refer,
        Verdict::Insufficient,
        Verdict::Incomplete,
        Verdict::Unfamiliar,
    ];

    /// The `verdict` value of a `SLIDE` line: `no_blasts`, `uncertain`, `refer`,
    /// `insufficient`, `incomplete` or `unfamiliar`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NoBlasts => "no_blasts",
            Verdict::Uncertain => "uncertain",
            Verdict::Refer => "refer",
            Verdict::Insufficient => "insufficient",
            Verdict::Incomplete => "incomplete",
            Verdict::Unfamiliar => "unfamiliar",
        }
    }

    /// The verdict as a person reads it in a report or log, e.g. `BLASTS SEEN - REFER`.
    pub fn headline(self) -> &'static str {
        match self {
            Verdict::NoBlasts => "NO BLASTS SEEN",
            Verdict::Uncertain => "UNCERTAIN",
            Verdict::Refer => "BLASTS SEEN - REFER",
            Verdict::Insufficient => "INSUFFICIENT",
            Verdict::Incomplete => "INCOMPLETE - RESCAN",
            Verdict::Unfamiliar => "UNFAMILIAR - NOT VALIDATED",
        }
    }

    /// The word shown on the display (at most 6 characters).
    pub fn short(self) -> &'static str {
        match self {
            Verdict::NoBlasts => "NEG",
            Verdict::Uncertain => "UNSURE",
            Verdict::Refer => "REFER",
            Verdict::Insufficient => "INSUFF",
            Verdict::Incomplete => "INCOMP",
            Verdict::Unfamiliar => "UNFAM",
        }
    }

    /// What the verdict means, in a sentence for a report or a log.
    pub fn meaning(self) -> &'static str {
        match self {
            Verdict::NoBlasts => "no blasts seen in the fields counted",
            Verdict::Uncertain => "too many fields were uncertain to say",
            Verdict::Refer => "blasts seen: refer the slide to a haematologist",
            Verdict::Insufficient => "too few good fields: scan more fields",
            Verdict::Incomplete => "the scan was cut short by a fault: rescan the slide",
            Verdict::Unfamiliar => "not validated for these pictures",
        }
    }

    /// The verdict for its `as_str` word.
    pub fn from_word(word: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_serialize_as_their_slide_words_and_fit_the_display() {
        for verdict in Verdict::ALL {
            let json = format!("\"{}\"", verdict.as_str());
            assert_eq!(serde_json::to_string(&verdict).unwrap(), json);
            assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), verdict);
            assert_eq!(Verdict::from_word(verdict.as_str()), Some(verdict));
            assert!(verdict.short().len() <= 6);
        }
        assert_eq!(Verdict::from_word("negative"), None);
        assert_eq!(
            (
                Verdict::from_word("unfamiliar"),
                Verdict::Unfamiliar.headline(),
                Verdict::Unfamiliar.short(),
                Verdict::Unfamiliar.meaning()
            ),
            (
                Some(Verdict::Unfamiliar),
                "UNFAMILIAR - NOT VALIDATED",
                "UNFAM",
                "not validated for these pictures"
            )
        );
    }
}
