//! Anchored regular expressions for label matchers and param patterns.
//!
//! We use `regex-automata`'s meta engine (the one the `regex` crate wraps) with the eager full
//! DFA switched off: our patterns match short label values, so compile time dominates, and a
//! dense DFA per pattern cost a quarter of `validate`'s time on a large runbook library. The
//! lazy DFA still makes matching fast.

use regex_automata::meta::{Config, Regex};

#[derive(Clone, Debug)]
pub struct Pattern {
    written: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `written` anchored at both ends, as Alertmanager anchors its regexes.
    pub fn anchored(written: &str) -> Result<Self, String> {
        let regex = Regex::builder()
            .configure(Config::new().dfa(false).onepass(false))
            .build(&format!("^(?:{written})$"))
            .map_err(|error| {
                // A syntax error's last line says what is wrong ("unclosed group").
                let text = error
                    .syntax_error()
                    .map_or_else(|| error.to_string(), ToString::to_string);
                let reason = text
                    .lines()
                    .rev()
                    .find(|line| !line.trim().is_empty())
                    .unwrap_or(&text);
                reason.trim().trim_start_matches("error:").trim().to_owned()
            })?;
        Ok(Self {
            written: written.to_owned(),
            regex,
        })
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }

    /// The pattern as the author wrote it (unanchored).
    pub fn as_str(&self) -> &str {
        &self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_both_ends_and_explains_errors() {
        let pattern = Pattern::anchored("team-.*").expect("compiles");
        assert!(pattern.is_match("team-a"));
        assert!(!pattern.is_match("xteam-a"));
        assert!(!Pattern::anchored("a|b").expect("compiles").is_match("ab"));
        assert_eq!(
            Pattern::anchored("(crit").expect_err("fails"),
            "unclosed group"
        );
    }
}
