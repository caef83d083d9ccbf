//! Alertmanager label matchers: `severity="critical"`, `namespace=~"team-.*"`, `env!=prod`.
//!
//! Same syntax and semantics as Alertmanager's `matchers:`: regexes are anchored at both ends,
//! and a label the alert does not have matches as the empty string.

use std::collections::BTreeMap;
use std::fmt;

use crate::pattern::Pattern;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    regex: Option<Pattern>,
}

/// Why a matcher did not parse, and the character offset in its text where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatcherError {
    pub message: String,
    pub offset: usize,
}

impl Matcher {
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        let trimmed_start = text.len() - text.trim_start().len();
        let body = text.trim();
        let name_end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(MatcherError {
                message: format!("`{text}` does not start with a label name"),
                offset: trimmed_start,
            });
        }
        let rest = body[name_end..].trim_start();
        let op_offset = trimmed_start + body.len() - rest.len();
        if rest.starts_with("==") {
            return Err(MatcherError {
                message: "`==` is not a matcher operator; use `=` (or `=~` for a regex)".to_owned(),
                offset: op_offset,
            });
        }
        let (op, rest) = if let Some(rest) = rest.strip_prefix("=~") {
            (Op::Regex, rest)
        } else if let Some(rest) = rest.strip_prefix("!~") {
            (Op::NotRegex, rest)
        } else if let Some(rest) = rest.strip_prefix("!=") {
            (Op::NotEqual, rest)
        } else if let Some(rest) = rest.strip_prefix('=') {
            (Op::Equal, rest)
        } else {
            return Err(MatcherError {
                message: format!("expected `=`, `!=`, `=~` or `!~` after `{name}`"),
                offset: op_offset,
            });
        };
        let value_offset = trimmed_start + body.len() - rest.len();
        let rest = rest.trim();
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            unquote(quoted).map_err(|message| MatcherError {
                message,
                offset: value_offset,
            })?
        } else {
            if rest.contains(['"', '{', '}', ',']) {
                return Err(MatcherError {
                    message: format!("unquoted value `{rest}` has characters that need quotes"),
                    offset: value_offset,
                });
            }
            rest.to_owned()
        };
        let regex = match op {
            Op::Regex | Op::NotRegex => {
                Some(Pattern::anchored(&value).map_err(|reason| MatcherError {
                    message: format!("invalid regex: {reason}"),
                    offset: value_offset,
                })?)
            }
            _ => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value,
            regex,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (Op::Equal, _) => value == self.value,
            (Op::NotEqual, _) => value != self.value,
            (Op::Regex, Some(regex)) => regex.is_match(value),
            (Op::NotRegex, Some(regex)) => !regex.is_match(value),
            _ => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

fn unquote(quoted: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut characters = quoted.chars();
    while let Some(character) = characters.next() {
        match character {
            '"' => {
                return if characters.as_str().trim().is_empty() {
                    Ok(out)
                } else {
                    Err(format!(
                        "unexpected `{}` after the closing quote",
                        characters.as_str().trim()
                    ))
                };
            }
            '\\' => match characters.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other @ ('"' | '\\')) => out.push(other),
                Some(other) => out.extend(['\\', other]),
                None => break,
            },
            other => out.push(other),
        }
    }
    Err("the quoted value is never closed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_all_operators() {
        let m = Matcher::parse(r#"severity="critical""#).expect("parses");
        assert!(m.matches(&labels(&[("severity", "critical")])));
        assert!(!m.matches(&labels(&[("severity", "warning")])));
        let m = Matcher::parse("env!=prod").expect("parses");
        assert!(m.matches(&labels(&[])));
        let m = Matcher::parse(r#"namespace =~ "team-.*""#).expect("parses");
        assert!(m.matches(&labels(&[("namespace", "team-a")])));
        assert!(
            !m.matches(&labels(&[("namespace", "xteam-a")])),
            "regexes are anchored"
        );
        let m = Matcher::parse(r#"pod!~"debug-.+""#).expect("parses");
        assert!(m.matches(&labels(&[("pod", "api-1")])));
    }

    #[test]
    fn missing_label_matches_empty() {
        let m = Matcher::parse(r#"team="""#).expect("parses");
        assert!(m.matches(&labels(&[])));
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(
            Matcher::parse("severity critical")
                .expect_err("fails")
                .offset,
            9
        );
        assert_eq!(Matcher::parse(r#"ns=~"(a""#).expect_err("fails").offset, 4);
        assert!(Matcher::parse(r#"ns="open"#).is_err());
        assert!(Matcher::parse("=x").is_err());
        let error = Matcher::parse(r#"severity=="critical""#).expect_err("fails");
        assert_eq!((error.offset, error.message.starts_with("`==`")), (8, true));
    }
}
