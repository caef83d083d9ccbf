//! Redaction: secret values never reach the terminal, the journal or a notification.
//!
//! Two kinds of secret are removed: values known to be secret (params marked `secret`, facts
//! marked `secret`, anything read from a Kubernetes Secret, in plain and base64 form), and text
//! that looks like a credential in any output (bearer tokens, JWTs, Vault/GitHub/Slack/AWS
//! tokens, `password=...`). Every journal record passes through here before it is written or
//! shown, so there is one choke point.

use std::sync::RwLock;

use regex_automata::meta::Regex;

pub const REDACTED: &str = "<redacted>";

/// Known secrets are at least this long; shorter values would redact ordinary words.
const MIN_SECRET_LEN: usize = 4;

pub struct Redactor {
    known: RwLock<Vec<String>>,
    tokens: Regex,
    assignments: Regex,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

impl Redactor {
    pub fn new() -> Self {
        // Patterns for credentials that are recognisable on their own.
        let tokens = Regex::new(concat!(
            r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
            r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]{8,}=*",
            r"|hv[sbr]\.[A-Za-z0-9_-]{20,}",
            r"|\bs\.[A-Za-z0-9]{24}\b",
            r"|gh[pousr]_[A-Za-z0-9]{30,}",
            r"|xox[abprs]-[A-Za-z0-9-]{10,}",
            r"|\bAKIA[0-9A-Z]{16}\b",
            r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        ))
        .expect("the token patterns are valid");
        // `password: x`, `token=x`, `"api_key": "x"`: the name stays, the value goes.
        let assignments = Regex::new(r#"(?i)\b(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)\b["']?\s*[:=]\s*["']?"#)
            .expect("the assignment pattern is valid");
        Self {
            known: RwLock::new(Vec::new()),
            tokens,
            assignments,
        }
    }

    /// Remembers a secret value (and its base64 form, as Kubernetes Secrets hold it).
    pub fn add(&self, secret: &str) {
        let secret = secret.trim();
        if secret.chars().count() < MIN_SECRET_LEN {
            return;
        }
        let mut known = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for value in [secret.to_owned(), base64(secret.as_bytes())] {
            if !known.contains(&value) {
                known.push(value);
            }
        }
        // Longest first, so a secret that contains another is removed whole.
        known.sort_by_key(|value| std::cmp::Reverse(value.len()));
    }

    /// Remembers every string inside a JSON value; `decode_base64` also remembers the decoded
    /// form of each (for a Secret's `data`).
    pub fn add_json(&self, value: &serde_json::Value, decode_base64: bool) {
        match value {
            serde_json::Value::String(text) => {
                self.add(text);
                if decode_base64 {
                    if let Some(decoded) = unbase64(text) {
                        self.add(&decoded);
                    }
                }
            }
            serde_json::Value::Array(items) => items
                .iter()
                .for_each(|item| self.add_json(item, decode_base64)),
            serde_json::Value::Object(entries) => entries
                .values()
                .for_each(|item| self.add_json(item, decode_base64)),
            _ => {}
        }
    }

    /// Removes only the known secret values (no credential patterns).
    pub fn redact_known(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let known = self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for secret in known.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    pub fn redact(&self, text: &str) -> String {
        let out = self.redact_known(text);
        let mut result = String::with_capacity(out.len());
        let mut last = 0;
        for found in self.tokens.find_iter(&out) {
            result.push_str(&out[last..found.start()]);
            result.push_str(REDACTED);
            last = found.end();
        }
        result.push_str(&out[last..]);
        let out = result;
        let mut result = String::with_capacity(out.len());
        let mut last = 0;
        for found in self.assignments.find_iter(&out) {
            if found.start() < last {
                continue;
            }
            result.push_str(&out[last..found.end()]);
            let value_end = out[found.end()..]
                .find(|c: char| c.is_whitespace() || "\"',}]\\".contains(c))
                .map_or(out.len(), |offset| found.end() + offset);
            if value_end > found.end() && &out[found.end()..value_end] != REDACTED {
                result.push_str(REDACTED);
            } else {
                result.push_str(&out[found.end()..value_end]);
            }
            last = value_end;
        }
        result.push_str(&out[last..]);
        result
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in text.trim().chars() {
        let value = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            '=' => break,
            _ => return None,
        };
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(bytes)
        .ok()
        .filter(|decoded| !decoded.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secrets_and_their_base64_are_removed() {
        let redactor = Redactor::new();
        redactor.add("hunter22");
        assert_eq!(
            redactor.redact("pw hunter22 or aHVudGVyMjI="),
            "pw <redacted> or <redacted>"
        );
        redactor.add("abc");
        assert_eq!(
            redactor.redact("abc"),
            "abc",
            "short values are not treated as secrets"
        );
    }

    #[test]
    fn secret_data_is_remembered_decoded() {
        let redactor = Redactor::new();
        redactor.add_json(&serde_json::json!({"key1": "czNjcjN0LXNoYXJl"}), true);
        assert_eq!(
            redactor.redact("share s3cr3t-share used"),
            "share <redacted> used"
        );
    }

    #[test]
    fn credential_shapes_are_removed_from_output() {
        let redactor = Redactor::new();
        let text = "Authorization: Bearer abcdefgh12345678 token=xyz123 \"password\": \"p@ss w\" hvs.CAESIJ1234567890abcdefghijkl ghp_0123456789abcdefghijklmnopqrstuvwxyz";
        let redacted = redactor.redact(text);
        assert!(!redacted.contains("abcdefgh12345678"), "{redacted}");
        assert!(!redacted.contains("xyz123"), "{redacted}");
        assert!(!redacted.contains("p@ss"), "{redacted}");
        assert!(!redacted.contains("hvs.CAES"), "{redacted}");
        assert!(!redacted.contains("ghp_0123"), "{redacted}");
        assert!(redacted.contains("token=<redacted>"), "{redacted}");
        assert_eq!(
            redactor.redact("nothing secret here: replicas=3"),
            "nothing secret here: replicas=3"
        );
    }

    #[test]
    fn base64_round_trips() {
        for text in ["a", "ab", "abc", "abcd", "hunter22"] {
            assert_eq!(unbase64(&base64(text.as_bytes())).as_deref(), Some(text));
        }
    }
}
