//! Redaction: secret values never reach the terminal, the journal or a notification.
//!
//! Every journal record, and every line an expression prints, passes through the run's one
//! [`Redactor`] before it is written or shown, so there is one choke point; a run and the
//! runbooks it calls share it. It removes
//! two kinds of secret.
//!
//! **Known secrets** are values the run knows to be secret: params marked `secret` (or bound
//! from a secret by the runbook that called this one), facts marked `secret`, and everything
//! read from a Kubernetes Secret. Each is removed in every encoding it is commonly written in, escapes and
//! all:
//!
//! | encoding | how it is found |
//! |---|---|
//! | as it is | the value itself |
//! | base64, standard and URL-safe, with and without `=` padding | the four forms are remembered with the value |
//! | JSON-escaped (`\"`, `\\`, `\n`, `\u00e9`, ...), once or twice (JSON inside a JSON string) | the text is unescaped and searched |
//! | percent-encoded (URLs, query strings, forms): any characters escaped, `%2f` or `%2F`, a space as `%20` or `+` | the text is percent-decoded and searched |
//!
//! **Credential shapes** are removed from any text, known or not:
//!
//! | shape | example | removed |
//! |---|---|---|
//! | JWT | `eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl` | all of it |
//! | bearer token | `Bearer abcdef0123456789` | all of it |
//! | HTTP basic auth | `Authorization: Basic dXNlcjpwYXNz` | the base64 |
//! | Vault token | `hvs.CAESI...`, a legacy `s.` and 24 characters | all of it |
//! | GitHub token | `ghp_...` (also `gho_`, `ghu_`, `ghs_`, `ghr_`) | all of it |
//! | Slack token | `xoxb-...` | all of it |
//! | AWS access key id | `AKIA` and 16 characters | all of it |
//! | PEM private key | `-----BEGIN ... PRIVATE KEY----- ... -----END ... PRIVATE KEY-----` | all of it |
//! | password in a URL | `https://user:PASSWORD@host` | the password |
//!
//! and assignments (`KEY=VALUE`, `KEY: VALUE`, `"KEY": "VALUE"`, `KEY := VALUE`), judged by
//! the key and the shape of the value. The key is split into words at `_`, `-`, `.` and where
//! lower case turns upper (`DB_PASSWORD`, `clientSecret`, `aws_secret_access_key`), and
//! compared without regard to case:
//!
//! | key | value | redacted |
//! |---|---|---|
//! | exactly `secret`, `secretName`, `existingSecret` (Helm's) or `secretKey` (a key in a Secret, as an ExternalSecret names it) | a Kubernetes name: a DNS-1123 subdomain with no run of 16 or more characters mixing letters and digits (generated tokens look like that) | no: it names a Secret, or a key in one |
//! | the same | anything else | yes |
//! | the last word ends in `password`, `passwd`, `passphrase`, `secret` or `token`, or is `pass` after another word (`DB_PASS`; `pass` alone counts passed checks); or the last two words are `api key`, `access key`, `secret key` or `private key` | anything but `true`, `false`, `null`, a `{...}` or `[...]` (whose own keys are judged), or a placeholder (`<redacted>`, and `<secret>` as a plan shows a secret param) | yes |
//! | anything else (`PWD`, `max_tokens`, `secretRef`, `passwordless`, `db-credentials`) | | no |
//!
//! A value runs to its closing quote if it is quoted, else to whitespace or one of `"',}]\&`.

use std::sync::RwLock;

use base64::Engine as _;
use regex_automata::meta::Regex;

pub const REDACTED: &str = "<redacted>";

/// Known secrets are at least this long; shorter values would redact ordinary words.
const MIN_SECRET_LEN: usize = 4;

/// The credential shapes of the module's table: a name and a pattern. Where a pattern has a
/// group, the group is the credential and the rest stays; otherwise the whole match goes.
const TOKENS: &[(&str, &str)] = &[
    (
        "JWT",
        r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    ),
    ("bearer token", r"(?i:bearer)\s+[A-Za-z0-9._~+/-]{8,}=*"),
    (
        "HTTP basic auth",
        r#"(?i:authorization)(?:\\?["'])?[ \t]*[:=][ \t]*(?:\\?["'])?(?i:basic)[ \t]+([A-Za-z0-9+/_-]{4,}={0,2})"#,
    ),
    (
        "Vault token",
        r"hv[sbr]\.[A-Za-z0-9_-]{20,}|\bs\.[A-Za-z0-9]{24}\b",
    ),
    ("GitHub token", r"gh[pousr]_[A-Za-z0-9]{30,}"),
    ("Slack token", r"xox[abprs]-[A-Za-z0-9-]{10,}"),
    ("AWS access key id", r"\bAKIA[0-9A-Z]{16}\b"),
    (
        "PEM private key",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    ),
    (
        "password in a URL",
        r#"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:"']*:([^\s/?#@"']+)@"#,
    ),
];

/// `KEY`, an optional closing quote, the separator, and an optional opening quote (which may
/// be escaped, inside a JSON string): groups 1 (the key) and 2 (the opening quote).
const ASSIGNMENT: &str =
    r#"([A-Za-z_][A-Za-z0-9_.-]*)(?:\\?["'])?[ \t]*(?::=|=|:)[ \t]*(\\?["'])?"#;

/// Keys that are exactly one of these (words joined) may name a Secret, or a key in one, rather
/// than hold a credential.
const SECRET_NAME_KEYS: &[&str] = &["secret", "secretname", "existingsecret", "secretkey"];

/// A key whose last word ends in one of these holds a credential.
const CREDENTIAL_ENDINGS: &[&str] = &["password", "passwd", "passphrase", "secret", "token"];

/// A key whose last two words (joined) are one of these holds a credential.
const CREDENTIAL_PAIRS: &[&str] = &["apikey", "accesskey", "secretkey", "privatekey"];

/// Values that are never credentials, whatever the key.
const NOT_CREDENTIALS: &[&str] = &["true", "false", "null"];

/// What a key says about the value after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    /// A credential, whatever its shape.
    Credential,
    /// A Secret's name, or else a credential.
    SecretName,
    /// Nothing.
    Other,
}

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
        let patterns: Vec<&str> = TOKENS.iter().map(|(_, pattern)| *pattern).collect();
        let tokens = Regex::new_many(&patterns).expect("the token patterns are valid");
        let assignments = Regex::new(ASSIGNMENT).expect("the assignment pattern is valid");
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
        let out = self.redact_tokens(&out);
        self.redact_assignments(&out)
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

    /// Removes the credential shapes of the module's table.
    fn redact_tokens(&self, text: &str) -> String {
        let spans = self
            .tokens
            .captures_iter(text)
            .filter_map(|captures| {
                captures
                    .get_group(1)
                    .or_else(|| captures.get_match().map(|found| found.span()))
            })
            .map(|span| (span.start, span.end))
            .filter(|&(start, end)| &text[start..end] != REDACTED)
            .collect();
        replace_spans(text, spans)
    }

    /// Removes the values of credential assignments, judged by the module's table.
    fn redact_assignments(&self, text: &str) -> String {
        let mut spans = Vec::new();
        // The end of the last value removed: an assignment inside it is gone with it.
        let mut last = 0;
        for captures in self.assignments.captures_iter(text) {
            let (Some(found), Some(key)) = (captures.get_group(0), captures.get_group(1)) else {
                continue;
            };
            if found.start < last {
                continue;
            }
            let kind = classify(&text[key.start..key.end]);
            if kind == Key::Other {
                continue;
            }
            let rest = &text[found.end..];
            // `==` compares and `::` names a path; neither assigns.
            if captures.get_group(2).is_none() && rest.starts_with(['=', ':']) {
                continue;
            }
            let length = match captures.get_group(2) {
                Some(quote) => quoted_length(rest, &text[quote.start..quote.end]),
                None => rest
                    .find(|c: char| c.is_whitespace() || "\"',}]\\&".contains(c))
                    .unwrap_or(rest.len()),
            };
            let value = &rest[..length];
            let keep = value.is_empty()
                || value == REDACTED
                || value == crate::render::SECRET
                || NOT_CREDENTIALS.contains(&value)
                || (captures.get_group(2).is_none() && value.starts_with(['{', '[']))
                || (kind == Key::SecretName && is_object_name(value));
            if !keep {
                spans.push((found.end, found.end + length));
                last = found.end + length;
            }
        }
        replace_spans(text, spans)
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

/// The key's words, lower case: `aws_secret_access_key` and `clientSecret` alike.
fn key_words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut after_lower = false;
    for character in key.chars() {
        if matches!(character, '_' | '-' | '.') {
            words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
            after_lower = false;
            continue;
        }
        if character.is_ascii_uppercase() && after_lower {
            words.push(std::mem::take(&mut word));
        }
        after_lower = character.is_ascii_lowercase() || character.is_ascii_digit();
        word.push(character.to_ascii_lowercase());
    }
    words.extend((!word.is_empty()).then_some(word));
    words
}

/// What a key says about its value (the module's table).
fn classify(key: &str) -> Key {
    let words = key_words(key);
    if SECRET_NAME_KEYS.contains(&words.concat().as_str()) {
        return Key::SecretName;
    }
    let Some(last) = words.last() else {
        return Key::Other;
    };
    let pair = match words.len() {
        0 | 1 => last.clone(),
        n => format!("{}{last}", words[n - 2]),
    };
    let credential = (last == "pass" && words.len() > 1)
        || CREDENTIAL_ENDINGS
            .iter()
            .any(|ending| last.ends_with(ending))
        || CREDENTIAL_PAIRS
            .iter()
            .any(|ending| pair == *ending || last.ends_with(ending));
    if credential {
        Key::Credential
    } else {
        Key::Other
    }
}

/// How long a quoted value is, up to its closing `quote` (an escaped one inside is skipped),
/// or to the end of the line if it is never closed.
fn quoted_length(rest: &str, quote: &str) -> usize {
    let line = rest.find('\n').unwrap_or(rest.len());
    let mut from = 0;
    while let Some(offset) = rest[from..line].find(quote) {
        let at = from + offset;
        let escaped = quote.len() == 1 && rest[..at].ends_with('\\');
        if !escaped {
            return at;
        }
        from = at + quote.len();
    }
    line
}

/// A Kubernetes object name (a DNS-1123 subdomain) that does not look like a generated token.
fn is_object_name(value: &str) -> bool {
    let subdomain = value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let token_like = value.split(['.', '-']).any(|run| {
        run.len() >= 16
            && run.bytes().any(|b| b.is_ascii_digit())
            && run.bytes().any(|b| b.is_ascii_lowercase())
    });
    subdomain && !token_like
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

    /// Issue 13: credentials in output that were missed, and a Secret's name that was taken for
    /// one. Each line is redacted as the module's tables say.
    #[test]
    fn credentials_are_judged_by_their_key_and_the_shape_of_their_value() {
        let redactor = Redactor::new();
        let aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for (text, redacted) in [
            ("DB_PASSWORD=hunter2 next", "DB_PASSWORD=<redacted> next"),
            (
                "client_secret=s3cr3t&grant_type=client_credentials",
                "client_secret=<redacted>&grant_type=client_credentials",
            ),
            (
                "MYSQL_ROOT_PASSWORD: r00t!",
                "MYSQL_ROOT_PASSWORD: <redacted>",
            ),
            (
                &format!("aws_secret_access_key = {aws}"),
                "aws_secret_access_key = <redacted>",
            ),
            (
                &format!("export AWS_SECRET_ACCESS_KEY={aws}"),
                "export AWS_SECRET_ACCESS_KEY=<redacted>",
            ),
            (
                "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA==' x",
                "curl -H 'Authorization: Basic <redacted>' x",
            ),
            (
                "postgres://app:s3cret@db:5432/app",
                "postgres://app:<redacted>@db:5432/app",
            ),
            (
                "fetch https://oncall:pa%40ss@git.example.com/repo.git",
                "fetch https://oncall:<redacted>@git.example.com/repo.git",
            ),
            (
                r#""clientSecret": "two words", "n": 1"#,
                r#""clientSecret": "<redacted>", "n": 1"#,
            ),
            (
                r#"{\"password\": \"x1 y\"}"#,
                r#"{\"password\": \"<redacted>\"}"#,
            ),
            ("--db-pass=letmein", "--db-pass=<redacted>"),
            ("password := \"go\"", "password := \"<redacted>\""),
            // A name key with a value no Secret could be named: a credential after all.
            ("secret=Hunter2!", "secret=<redacted>"),
            (&format!("secretKey: {aws}"), "secretKey: <redacted>"),
            ("secret: 3f9a8c7d6e5b4a3f2e1d0c9b", "secret: <redacted>"),
        ] {
            assert_eq!(redactor.redact(text), redacted, "{text}");
        }
        for kept in [
            "secret=gateway-tls",
            "secretName: gateway-tls",
            "existingSecret: db-credentials",
            "kubectl get secret gateway-tls -o yaml",
            "secretRef: {name: db}",
            "PWD=/home/oncall",
            "max_tokens=512",
            "passwordless: enabled",
            r#""summary": {"pass": 12, "fail": 1}"#,
            r#"{"secretKey": "password", "remoteRef": {"key": "sre/db"}}"#,
            "ExternalSecret monitoring/grafana-admin-credentials: annotations set",
            "token: true",
            "https://example.com:8443/path?x=1",
            "params.token == \"abc\"",
            "Basic authentication is disabled",
        ] {
            assert_eq!(redactor.redact(kept), kept);
        }
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
