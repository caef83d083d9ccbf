//! Redaction: secret values never reach the terminal, the journal or a notification.
//!
//! Every journal record passes through here before it is written or shown, so there is one
//! choke point. It removes two kinds of secret.
//!
//! **Known secrets** are values the run knows to be secret: params marked `secret`, facts
//! marked `secret`, and everything read from a Kubernetes Secret. Each is removed in every encoding it is commonly written in, escapes and
//! all:
//!
//! | encoding | how it is found |
//! |---|---|
//! | as it is | the value itself |
//! | base64, standard and URL-safe, with and without `=` padding | the four forms are remembered with the value |
//! | JSON-escaped (`\"`, `\\`, `\n`, `\u00e9`, ...), once or twice (JSON inside a JSON string) | the text is unescaped and searched |
//! | percent-encoded (URLs, query strings, forms): any characters escaped, `%2f` or `%2F`, a space as `%20` or `+` | the text is percent-decoded and searched |
//!
//! **Credential shapes** are removed from any text, known or not: bearer tokens, JWTs,
//! Vault/GitHub/Slack/AWS tokens, `password=...`.

use std::sync::RwLock;

use base64::Engine as _;
use regex_automata::meta::Regex;

pub const REDACTED: &str = "<redacted>";

/// Known secrets are at least this long; shorter values would redact ordinary words.
const MIN_SECRET_LEN: usize = 4;

pub struct Redactor {
    /// Known secrets in their remembered forms (as they are, and base64), longest first, so a
    /// secret that contains another is removed whole.
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

    /// Remembers a secret value, with its base64 forms (as a Kubernetes Secret or a basic-auth
    /// header holds it); its escaped forms are found when text is redacted.
    pub fn add(&self, secret: &str) {
        let secret = secret.trim();
        if secret.chars().count() < MIN_SECRET_LEN {
            return;
        }
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        let bytes = secret.as_bytes();
        let forms = [
            secret.to_owned(),
            STANDARD.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
        ];
        let mut known = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for form in forms {
            if !known.contains(&form) {
                known.push(form);
            }
        }
        known.sort_by_key(|form| std::cmp::Reverse(form.len()));
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

    /// Whether `text` holds a known secret, in any of the encodings [`Redactor::redact_known`]
    /// removes.
    pub fn contains_known(&self, text: &str) -> bool {
        !self.known_spans(text).is_empty()
    }

    /// Removes only the known secret values (no credential patterns), in every encoding.
    pub fn redact_known(&self, text: &str) -> String {
        replace_spans(text, self.known_spans(text))
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

    /// Where known secrets are in `text`, in every encoding of the module's table.
    fn known_spans(&self, text: &str) -> Vec<(usize, usize)> {
        let known = self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut spans = Vec::new();
        if known.is_empty() {
            return spans;
        }
        for form in known.iter() {
            spans.extend(
                text.match_indices(form.as_str())
                    .map(|(start, found)| (start, start + found.len())),
            );
        }
        let mut views = Vec::new();
        views.extend(View::percent_decoded(text, false));
        if text.contains('+') {
            views.extend(View::percent_decoded(text, true));
        }
        if let Some(once) = View::json_unescaped(text) {
            if let Some(twice) = View::json_unescaped(&once.text) {
                views.push(once.then(twice));
            }
            views.push(once);
        }
        for view in &views {
            for form in known.iter() {
                spans.extend(
                    view.text
                        .match_indices(form.as_str())
                        .map(|(start, found)| view.source(start, start + found.len())),
                );
            }
        }
        spans
    }
}

/// Replaces each span (merged where they overlap) by [`REDACTED`].
fn replace_spans(text: &str, mut spans: Vec<(usize, usize)>) -> String {
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut index = 0;
    while index < spans.len() {
        let (start, mut end) = spans[index];
        index += 1;
        while index < spans.len() && spans[index].0 < end {
            end = end.max(spans[index].1);
            index += 1;
        }
        // Matches are on character boundaries; a span that is not is left alone rather than
        // cut a character in half.
        if !(text.is_char_boundary(start) && text.is_char_boundary(end)) {
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str(REDACTED);
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Text as one decoding reads it, and for each of its bytes the span of the original text it
/// was decoded from (a whole escape, or the whole character it belongs to).
struct View {
    text: String,
    source: Vec<(usize, usize)>,
}

impl View {
    fn push(&mut self, decoded: &str, from: (usize, usize)) {
        self.text.push_str(decoded);
        self.source.extend(std::iter::repeat_n(from, decoded.len()));
    }

    /// The span of the original text that bytes `start..end` of the view were decoded from.
    fn source(&self, start: usize, end: usize) -> (usize, usize) {
        (self.source[start].0, self.source[end - 1].1)
    }

    /// This view read again by `inner` (a view of this view's text), as a view of the original.
    fn then(&self, inner: View) -> View {
        let source = inner
            .source
            .iter()
            .map(|&(start, end)| self.source(start, end))
            .collect();
        View {
            text: inner.text,
            source,
        }
    }

    /// `%HH` escapes decoded (and `+` as a space, if asked). Escapes that do not decode to
    /// UTF-8 stay as written. `None` when there is nothing to decode.
    fn percent_decoded(text: &str, plus_is_space: bool) -> Option<View> {
        if !(text.contains('%') || plus_is_space && text.contains('+')) {
            return None;
        }
        let bytes = text.as_bytes();
        let hex = |b: u8| (b as char).to_digit(16);
        let mut view = View {
            text: String::with_capacity(text.len()),
            source: Vec::with_capacity(text.len()),
        };
        let mut index = 0;
        while index < bytes.len() {
            let mut decoded = Vec::new();
            let mut from = Vec::new();
            while let Some(&[b'%', high, low]) = bytes.get(index..index + 3) {
                let (Some(high), Some(low)) = (hex(high), hex(low)) else {
                    break;
                };
                decoded.push((high * 16 + low) as u8);
                from.push((index, index + 3));
                index += 3;
            }
            if !decoded.is_empty() {
                let mut at = 0;
                for chunk in decoded.utf8_chunks() {
                    for character in chunk.valid().chars() {
                        let length = character.len_utf8();
                        let span = (from[at].0, from[at + length - 1].1);
                        view.push(character.encode_utf8(&mut [0; 4]), span);
                        at += length;
                    }
                    for _ in chunk.invalid() {
                        let (start, end) = from[at];
                        view.push(&text[start..end], (start, end));
                        at += 1;
                    }
                }
                continue;
            }
            // Escapes are ASCII, so `index` is on a character boundary here.
            let Some(character) = text[index..].chars().next() else {
                break;
            };
            let span = (index, index + character.len_utf8());
            if character == '+' && plus_is_space {
                view.push(" ", span);
            } else {
                view.push(&text[span.0..span.1], span);
            }
            index = span.1;
        }
        Some(view)
    }

    /// JSON string escapes decoded (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX`
    /// with surrogate pairs); anything else stays as written. `None` when there is no escape.
    fn json_unescaped(text: &str) -> Option<View> {
        if !text.contains('\\') {
            return None;
        }
        let mut view = View {
            text: String::with_capacity(text.len()),
            source: Vec::with_capacity(text.len()),
        };
        let mut index = 0;
        while let Some(character) = text[index..].chars().next() {
            let (decoded, length) = if character == '\\' {
                json_escape(&text[index..]).unwrap_or(('\\', 1))
            } else {
                (character, character.len_utf8())
            };
            view.push(decoded.encode_utf8(&mut [0; 4]), (index, index + length));
            index += length;
        }
        Some(view)
    }
}

/// The character a JSON escape at the start of `text` stands for, and the escape's length.
fn json_escape(text: &str) -> Option<(char, usize)> {
    let simple = match text.as_bytes().get(1)? {
        b'"' => Some('"'),
        b'\\' => Some('\\'),
        b'/' => Some('/'),
        b'b' => Some('\u{8}'),
        b'f' => Some('\u{c}'),
        b'n' => Some('\n'),
        b'r' => Some('\r'),
        b't' => Some('\t'),
        b'u' => None,
        _ => return None,
    };
    if let Some(character) = simple {
        return Some((character, 2));
    }
    let unit = |at: usize| {
        text.get(at..at + 6)
            .filter(|escape| escape.starts_with("\\u"))
            .and_then(|escape| u32::from_str_radix(&escape[2..], 16).ok())
    };
    let high = unit(0)?;
    if (0xD800..0xDC00).contains(&high) {
        let low = unit(6).filter(|low| (0xDC00..0xE000).contains(low))?;
        let combined = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
        return char::from_u32(combined).map(|character| (character, 12));
    }
    char::from_u32(high).map(|character| (character, 6))
}

/// A Secret's `data` value decoded (padding optional), if it is text.
fn unbase64(text: &str) -> Option<String> {
    use base64::engine::{
        general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig,
    };
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = LENIENT.decode(text.trim()).ok()?;
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

    /// Issue 13: a secret holding `"` or `\` leaked JSON-escaped in fact values; it must go in
    /// every encoding it is written in.
    #[test]
    fn a_known_secret_is_removed_in_every_encoding_it_is_written_in() {
        let redactor = Redactor::new();
        let secret = r#"p"a\ss w/rd+?é"#;
        redactor.add(secret);
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        let json = serde_json::to_string(secret).expect("json");
        // JSON in a JSON string: `"\"p\\\"a...\""`, without the quotes around both.
        let twice = serde_json::to_string(&json).expect("json");
        let twice = &twice[3..twice.len() - 3];
        // As `application/x-www-form-urlencoded` writes it (`form_urlencoded`, HTML forms).
        let percent = "p%22a%5Css+w%2Frd%2B%3F%C3%A9";
        let written = [
            ("as it is", secret.to_owned()),
            ("JSON-escaped", json[1..json.len() - 1].to_owned()),
            ("JSON-escaped twice", twice.to_owned()),
            (
                "JSON with \\u escapes",
                r#"p\u0022a\\ss w\/rd+?\u00e9"#.to_owned(),
            ),
            ("base64", STANDARD.encode(secret)),
            ("base64 without padding", STANDARD_NO_PAD.encode(secret)),
            ("URL-safe base64", URL_SAFE.encode(secret)),
            (
                "URL-safe base64 without padding",
                URL_SAFE_NO_PAD.encode(secret),
            ),
            ("form-encoded", percent.to_owned()),
            (
                "percent-encoded, lower-case hex",
                percent.to_lowercase().replace("+", "%20"),
            ),
            (
                "percent-encoded, only what a URL must",
                "p%22a%5Css%20w%2Frd%2B%3F%C3%A9".to_owned(),
            ),
        ];
        for (encoding, form) in written {
            let text = format!("before {form} after");
            assert_eq!(
                redactor.redact(&text),
                "before <redacted> after",
                "{encoding}: {form}"
            );
            assert!(redactor.contains_known(&text), "{encoding}");
        }
        assert_eq!(
            redactor.redact(r#"{"value":"p\"a\\ss w/rd+?é"}"#),
            r#"{"value":"<redacted>"}"#,
            "a fact's value, as its JSON is shown"
        );
        assert_eq!(
            redactor.redact("100% sure, a+b, \\n"),
            "100% sure, a+b, \\n",
            "text without the secret is left as it is"
        );
    }

    #[test]
    fn base64_round_trips() {
        for text in ["a", "ab", "abc", "abcd", "hunter22"] {
            use base64::engine::general_purpose::STANDARD;
            assert_eq!(
                unbase64(&STANDARD.encode(text.as_bytes())).as_deref(),
                Some(text)
            );
        }
    }
}
