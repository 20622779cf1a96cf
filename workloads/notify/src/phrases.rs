//! The words of every message, replaceable as a whole or in part: a site that writes in
//! another language gives notify a JSON file of phrases (`IO360_NOTIFY_STRINGS_FILE`), as it
//! gives the widget its `strings`. Placeholders in braces (`{thread}`) are filled in; a
//! phrase may leave any of them out.

use std::collections::BTreeMap;
use std::path::Path;

/// Every phrase, its key and its English default.
const DEFAULTS: &[(&str, &str)] = &[
    ("lang", "en"),
    ("someone", "Someone"),
    ("whatThread", "new comments on {thread}"),
    ("whatReplies", "replies to comment {comment} on {thread}"),
    ("confirmSubject", "Confirm: email me {what}"),
    (
        "confirmAsked",
        "Someone (we hope you) asked to be told of {what} at this address.",
    ),
    ("confirmOpen", "To confirm, open:"),
    ("confirmButton", "Confirm"),
    (
        "confirmIgnore",
        "If it was not you, ignore this message: nothing will be sent.",
    ),
    ("replySubjectOne", "A new comment on {thread}"),
    ("replySubjectMany", "{n} new comments on {thread}"),
    ("replyWrote", "{who} wrote:"),
    ("replyRead", "Read it"),
    ("stop", "Stop these emails"),
    ("heldSubject", "Held for moderation on {thread}"),
    ("heldWrote", "{who} wrote on {thread}:"),
    ("approve", "Approve"),
    ("delete", "Delete"),
    ("linkOnce", "Each link works once, for {days} days."),
    ("summaryOne", "1 comment is waiting for moderation"),
    ("summaryMany", "{n} comments are waiting for moderation"),
    ("summarySubject", "Moderation: {waiting}"),
    ("summaryOn", "{who} on {thread}:"),
    (
        "summaryMore",
        "{n} more in the moderation console: {console}",
    ),
];

/// The phrases in use: the defaults, with a site's replacements over them.
#[derive(Debug, Clone)]
pub struct Phrases(BTreeMap<&'static str, String>);

impl Default for Phrases {
    fn default() -> Self {
        Phrases(
            DEFAULTS
                .iter()
                .map(|(k, v)| (*k, (*v).to_owned()))
                .collect(),
        )
    }
}

impl Phrases {
    /// The defaults with the replacements of the JSON object in `path` over them. An unknown
    /// key, a value that is not a string, or a line break in a subject is refused, naming it.
    pub fn load(path: &Path) -> Result<Phrases, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// As [`Phrases::load`], from the file's text.
    pub fn parse(text: &str) -> Result<Phrases, String> {
        let given: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| format!("must be one JSON object of phrases: {e}"))?;
        let mut phrases = Phrases::default();
        for (key, value) in given {
            let Some((known, _)) = DEFAULTS.iter().find(|(k, _)| *k == key) else {
                let keys: Vec<&str> = DEFAULTS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown phrase `{key}`; the phrases are {}",
                    keys.join(", ")
                ));
            };
            let serde_json::Value::String(value) = value else {
                return Err(format!("phrase `{key}` must be a string"));
            };
            if value.contains(['\r', '\n']) {
                return Err(format!(
                    "phrase `{key}` must be one line (a subject or a line of a message)"
                ));
            }
            phrases.0.insert(known, value);
        }
        Ok(phrases)
    }

    /// The phrase `key` with its placeholders filled from `values`.
    pub fn fill(&self, key: &str, values: &[(&str, &str)]) -> String {
        let mut out = self.0.get(key).cloned().unwrap_or_default();
        for (name, value) in values {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out
    }

    /// The phrase `key` for HTML: the phrase escaped, then its placeholders filled from
    /// `values`, which must be HTML already.
    pub fn fill_html(&self, key: &str, values: &[(&str, &str)]) -> String {
        let mut out = io360_common::html::escape(self.get(key));
        for (name, value) in values {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out
    }

    /// The phrase `key` as it is.
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_go_over_the_defaults_and_mistakes_are_named() {
        let p = Phrases::parse(
            r#"{"lang": "fr", "replySubjectOne": "Un nouveau commentaire sur {thread}"}"#,
        )
        .unwrap();
        assert_eq!(
            p.fill("replySubjectOne", &[("thread", "/a/")]),
            "Un nouveau commentaire sur /a/"
        );
        assert_eq!(p.get("stop"), "Stop these emails");
        let err = Phrases::parse(r#"{"replySubject": "x"}"#).unwrap_err();
        assert!(err.contains("unknown phrase `replySubject`"), "{err}");
        let err = Phrases::parse(r#"{"stop": 3}"#).unwrap_err();
        assert!(err.contains("`stop` must be a string"), "{err}");
        let err = Phrases::parse("{\"heldSubject\": \"a\\r\\nBcc: x@example.org\"}").unwrap_err();
        assert!(err.contains("one line"), "{err}");
    }
}
