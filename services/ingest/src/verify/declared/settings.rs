//! `[sources.NAME.hmac]`: a declared HMAC scheme as TOML gives it, and the
//! parsers of its two small languages (locations and the signed template).
//! `Scheme::compile` (the parent module) turns it into a verifier; nothing
//! else reads these strings.

use std::borrow::Cow;

use serde::Deserialize;

/// What a source's sender signs, and where it puts each part.
///
/// ```toml
/// [sources.acme.hmac]
/// algorithm = "sha256"                 # sha1 | sha256 | sha512
/// encoding = "hex"                     # hex | base64
/// signature_headers = ["acme-signature"]
/// signature_list = { separator = ",", key = "v1" }   # or signature_prefix = "sha256="
/// signed = "{timestamp}.{body}"        # {body}, {timestamp}, {id}, fixed text
/// timestamp = "signature:t"            # header:NAME | signature:KEY | body:/pointer
/// timestamp_unit = "s"                 # s | ms
/// delivery_id = ["body:/id"]           # header:NAME | body:/pointer, first present
/// event_type = ["body:/type"]          # the same; none present: "unknown"
/// keep_headers = ["acme-account"]      # stored with the event
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HmacSettings {
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub encoding: Encoding,
    /// The first of these present holds the signature.
    pub signature_headers: Vec<String>,
    /// Text before the signature (`sha256=`, `v0=`); none by default.
    #[serde(default)]
    pub signature_prefix: Option<String>,
    /// The header holds a list of `key=value` entries instead (`t=…,v1=…,v1=…`);
    /// every entry named `key` is a candidate, any of which may match.
    #[serde(default)]
    pub signature_list: Option<SignatureList>,
    /// What the HMAC covers; `{body}` is the raw body, exactly once.
    #[serde(default = "default_signed")]
    pub signed: String,
    /// Where the send time is, when the sender gives one that is signed.
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// Where the delivery id (the dedup key) is; the first present is used.
    pub delivery_id: Vec<String>,
    /// Where the event's type is; the first present is used.
    #[serde(default)]
    pub event_type: Vec<String>,
    /// More headers stored with the event (never a signature header).
    #[serde(default)]
    pub keep_headers: Vec<String>,
}

fn default_signed() -> String {
    "{body}".to_owned()
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignatureList {
    pub separator: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Only for senders that still sign with it.
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TimestampUnit {
    #[default]
    S,
    Ms,
}

/// Where a part of a delivery is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A header, by its lower-case name.
    Header(Cow<'static, str>),
    /// A JSON pointer into the body, read only once the signature matched.
    Body(String),
    /// A `key=value` entry of the signature list (`t` in `t=…,v1=…`).
    Signature(String),
}

impl Location {
    /// `header:NAME`, `body:/pointer` or `signature:KEY`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, rest) = text.split_once(':').ok_or_else(|| {
            format!("{text:?}: expected header:NAME, body:/pointer or signature:KEY")
        })?;
        match kind {
            "header" => header_name(rest).map(Self::Header),
            "body" => {
                if !rest.starts_with('/') {
                    return Err(format!("{text:?}: a JSON pointer starts with '/'"));
                }
                Ok(Self::Body(rest.to_owned()))
            }
            "signature" => {
                if rest.is_empty() || rest.contains(['=', ',', ' ']) {
                    return Err(format!("{text:?}: a signature field's key is a plain word"));
                }
                Ok(Self::Signature(rest.to_owned()))
            }
            _ => Err(format!(
                "{text:?}: expected header:NAME, body:/pointer or signature:KEY"
            )),
        }
    }
}

/// A header name as HTTP allows it, lower-cased (header maps compare so).
pub fn header_name(name: &str) -> Result<Cow<'static, str>, String> {
    actix_web::http::header::HeaderName::from_bytes(name.as_bytes())
        .map(|n| Cow::Owned(n.as_str().to_owned()))
        .map_err(|_| format!("{name:?} is not a header name"))
}

/// One part of what is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(Vec<u8>),
    Body,
    Timestamp,
    Id,
}

/// Parses `signed`: `{body}`, `{timestamp}` and `{id}` stand for those parts
/// as sent; `{{` and `}}` for braces; anything else is itself.
pub fn parse_template(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '}' => return Err("a lone '}' (write '}}' for a brace)".to_owned()),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err("an unclosed '{' (write '{{' for a brace)".to_owned()),
                    }
                }
                let part = match name.as_str() {
                    "body" => Part::Body,
                    "timestamp" => Part::Timestamp,
                    "id" => Part::Id,
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}}: use {{body}}, {{timestamp}} or {{id}}"
                        ));
                    }
                };
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text).into_bytes()));
                }
                parts.push(part);
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text.into_bytes()));
    }
    if parts.iter().filter(|p| **p == Part::Body).count() != 1 {
        return Err("must contain {body} exactly once".to_owned());
    }
    Ok(parts)
}
