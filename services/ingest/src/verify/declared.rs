//! A declared HMAC scheme (`kind = "hmac"`, and every preset in
//! `presets.rs`): the signature, timestamp and delivery id wherever the
//! sender puts them, checked on the raw bytes. The body is parsed only once
//! the signature has matched, and only when a part is read from it.

use std::borrow::Cow;

use actix_web::http::header::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rave_service::crypto::constant_time_eq;
use rave_service::ids::{EventType, EventUuid};
use rave_service::settings::Secret;
use ring::hmac;
use serde_json::Value;

pub use settings::{
    Algorithm, Encoding, HmacSettings, Location, Part, SignatureList, TimestampUnit, parse_template,
};

use super::{Verdict, Verified, VerifyError, first_present, malformed, required};

mod settings;
#[cfg(test)]
mod tests;

/// How the signature header is laid out.
#[derive(Debug)]
enum Format {
    /// One signature after a fixed prefix (possibly empty).
    Single { prefix: String },
    /// `key=value` entries; every `key` entry is a candidate.
    List { separator: String, key: String },
}

#[derive(Debug)]
struct Timestamp {
    from: Location,
    unit: TimestampUnit,
    tolerance_secs: u64,
}

/// A handshake some senders make before delivering (Slack's
/// `url_verification`): a signed body whose `when` pointer equals `equals`
/// is answered with the string at `echo` and never stored.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub when: &'static str,
    pub equals: &'static str,
    pub echo: &'static str,
}

/// A compiled scheme: everything the settings said, checked once at load.
#[derive(Debug)]
pub struct Scheme {
    keys: Vec<hmac::Key>,
    digest_len: usize,
    encoding: Encoding,
    signature_headers: Vec<Cow<'static, str>>,
    format: Format,
    signed: Vec<Part>,
    timestamp: Option<Timestamp>,
    delivery_id: Vec<Location>,
    event_type: Vec<Location>,
    kept_headers: Vec<Cow<'static, str>>,
    challenge: Option<Challenge>,
}

impl Scheme {
    /// Checks `settings` and builds the verifier. Errors name the field.
    pub fn compile(
        settings: &HmacSettings,
        secrets: &[&Secret],
        tolerance_secs: u64,
        challenge: Option<Challenge>,
    ) -> Result<Self, String> {
        if secrets.is_empty() {
            return Err("secrets: an hmac source needs at least one secret".to_owned());
        }
        let algorithm = match settings.algorithm {
            Algorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Algorithm::Sha256 => hmac::HMAC_SHA256,
            Algorithm::Sha512 => hmac::HMAC_SHA512,
        };
        let keys = secrets
            .iter()
            .map(|s| hmac::Key::new(algorithm, s.expose().as_bytes()))
            .collect();
        if settings.signature_headers.is_empty() {
            return Err("hmac.signature_headers: name at least one header".to_owned());
        }
        let signature_headers = settings
            .signature_headers
            .iter()
            .map(|h| settings::header_name(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("hmac.signature_headers: {e}"))?;
        let format = match (&settings.signature_prefix, &settings.signature_list) {
            (Some(_), Some(_)) => {
                return Err(
                    "hmac.signature_prefix: give a prefix or a signature_list, not both".to_owned(),
                );
            }
            (_, Some(SignatureList { separator, key })) => {
                if separator.is_empty() || key.is_empty() || key.contains(separator.as_str()) {
                    return Err(
                        "hmac.signature_list: needs a separator and a key without it".to_owned(),
                    );
                }
                Format::List {
                    separator: separator.clone(),
                    key: key.clone(),
                }
            }
            (prefix, None) => Format::Single {
                prefix: prefix.clone().unwrap_or_default(),
            },
        };
        let signed = parse_template(&settings.signed).map_err(|e| format!("hmac.signed: {e}"))?;
        let locations = |field: &str, texts: &[String]| {
            texts
                .iter()
                .map(|t| Location::parse(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("hmac.{field}: {e}"))
        };
        let signs = |part: Part| signed.contains(&part);
        let timestamp = match &settings.timestamp {
            None => None,
            Some(text) => {
                let from = Location::parse(text).map_err(|e| format!("hmac.timestamp: {e}"))?;
                match &from {
                    Location::Signature(_) if !matches!(format, Format::List { .. }) => {
                        return Err(
                            "hmac.timestamp: signature:KEY needs a signature_list".to_owned()
                        );
                    }
                    // A timestamp outside what is signed can be rewritten by
                    // anyone replaying a capture: it would protect nothing.
                    Location::Header(_) | Location::Signature(_) if !signs(Part::Timestamp) => {
                        return Err(
                            "hmac.timestamp: is not signed; add {timestamp} to hmac.signed or drop it"
                                .to_owned(),
                        );
                    }
                    _ => {}
                }
                Some(Timestamp {
                    from,
                    unit: settings.timestamp_unit,
                    tolerance_secs,
                })
            }
        };
        if signs(Part::Timestamp)
            && !matches!(
                timestamp,
                Some(Timestamp {
                    from: Location::Header(_) | Location::Signature(_),
                    ..
                })
            )
        {
            return Err(
                "hmac.signed: {timestamp} needs hmac.timestamp from a header or the signature"
                    .to_owned(),
            );
        }
        let delivery_id = locations("delivery_id", &settings.delivery_id)?;
        if delivery_id.is_empty() {
            return Err("hmac.delivery_id: name where the delivery id is".to_owned());
        }
        if signs(Part::Id) && !matches!(delivery_id.as_slice(), [Location::Header(_)]) {
            return Err("hmac.signed: {id} needs exactly one delivery_id, a header".to_owned());
        }
        let event_type = locations("event_type", &settings.event_type)?;
        if delivery_id
            .iter()
            .chain(&event_type)
            .any(|l| matches!(l, Location::Signature(_)))
        {
            return Err(
                "hmac.delivery_id: signature:KEY is for timestamps only (use header: or body:)"
                    .to_owned(),
            );
        }
        let mut kept_headers: Vec<Cow<'static, str>> = Vec::new();
        let timestamp_header = timestamp.iter().map(|t| &t.from);
        for location in timestamp_header.chain(&delivery_id).chain(&event_type) {
            if let Location::Header(name) = location
                && !kept_headers.contains(name)
            {
                kept_headers.push(name.clone());
            }
        }
        for name in &settings.keep_headers {
            let name =
                settings::header_name(name).map_err(|e| format!("hmac.keep_headers: {e}"))?;
            if signature_headers.contains(&name) {
                return Err(format!(
                    "hmac.keep_headers: {name} holds the signature and is never stored"
                ));
            }
            if !kept_headers.contains(&name) {
                kept_headers.push(name);
            }
        }
        Ok(Self {
            keys,
            digest_len: algorithm.digest_algorithm().output_len(),
            encoding: settings.encoding,
            signature_headers,
            format,
            signed,
            timestamp,
            delivery_id,
            event_type,
            kept_headers,
            challenge,
        })
    }

    /// The headers stored with an event: ids, types, timestamps, provenance.
    pub fn kept_headers(&self) -> impl Iterator<Item = &str> {
        self.kept_headers.iter().map(|h| h.as_ref())
    }

    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verdict, VerifyError> {
        let (value, signature_header) = first_present(headers, &self.signature_headers)?
            .ok_or_else(|| VerifyError::MissingHeader(self.signature_headers[0].clone()))?;
        let (candidates, fields) = self.candidates(signature_header, value)?;
        let timestamp = match self.timestamp.as_ref().map(|t| &t.from) {
            Some(Location::Header(name)) => Some((required(headers, &[name])?, name.clone())),
            Some(Location::Signature(key)) => {
                let text = fields.ok_or_else(|| {
                    malformed(signature_header.clone(), format!("has no {key}= entry"))
                })?;
                Some((text, signature_header.clone()))
            }
            _ => None,
        };
        if let Some((text, header)) = &timestamp {
            let sent: i64 = text
                .parse()
                .map_err(|_| malformed(header.clone(), "must be an integer timestamp"))?;
            self.check_time(sent, now_unix)?;
        }
        let signed_id = match self.delivery_id.as_slice() {
            [Location::Header(name)] if self.signed.contains(&Part::Id) => {
                Some(required(headers, &[name])?)
            }
            _ => None,
        };
        let timestamp_text = timestamp.as_ref().map(|(t, _)| *t);
        if !self.matches(&candidates, body, timestamp_text, signed_id) {
            return Err(VerifyError::InvalidSignature);
        }

        // Authenticated from here on: the body may be read.
        let reads_body = self
            .delivery_id
            .iter()
            .chain(&self.event_type)
            .chain(self.timestamp.iter().map(|t| &t.from))
            .any(|l| matches!(l, Location::Body(_)))
            || self.challenge.is_some();
        let json: Option<Value> = if reads_body {
            Some(
                serde_json::from_slice(body)
                    .map_err(|e| VerifyError::MalformedBody(format!("not JSON: {e}")))?,
            )
        } else {
            None
        };
        let json = json.as_ref();
        let at = |pointer: &str| json.and_then(|j| j.pointer(pointer));
        if let Some(challenge) = &self.challenge
            && at(challenge.when).and_then(Value::as_str) == Some(challenge.equals)
        {
            let echo = at(challenge.echo).and_then(Value::as_str).ok_or_else(|| {
                VerifyError::MalformedBody(format!("no string at {}", challenge.echo))
            })?;
            return Ok(Verdict::Challenge(echo.to_owned()));
        }
        if let Some(Timestamp {
            from: Location::Body(pointer),
            ..
        }) = &self.timestamp
        {
            let sent = at(pointer)
                .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                .ok_or_else(|| {
                    VerifyError::MalformedBody(format!("no integer timestamp at {pointer}"))
                })?;
            self.check_time(sent, now_unix)?;
        }
        let event_uuid = self.delivery_id(headers, json)?;
        let event_type = self.event_type(headers, json)?;
        Ok(Verdict::Event(Verified {
            event_uuid,
            event_type,
        }))
    }

    /// The decoded signatures the header offers, and the list's timestamp.
    fn candidates<'h>(
        &self,
        header: &str,
        value: &'h str,
    ) -> Result<(Vec<Vec<u8>>, Option<&'h str>), VerifyError> {
        let decode = |text: &str| {
            let raw = match self.encoding {
                Encoding::Hex => hex::decode(text).ok()?,
                Encoding::Base64 => BASE64.decode(text).ok()?,
            };
            (raw.len() == self.digest_len).then_some(raw)
        };
        let encoding = match self.encoding {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        };
        match &self.format {
            Format::Single { prefix } => {
                let signature = value
                    .strip_prefix(prefix.as_str())
                    .and_then(decode)
                    .ok_or_else(|| {
                        malformed(
                            header.to_owned(),
                            format!(
                                "expected {prefix}<{encoding} of a {}-byte HMAC>",
                                self.digest_len
                            ),
                        )
                    })?;
                Ok((vec![signature], None))
            }
            Format::List { separator, key } => {
                let timestamp_key = match self.timestamp.as_ref().map(|t| &t.from) {
                    Some(Location::Signature(k)) => Some(k.as_str()),
                    _ => None,
                };
                let mut candidates = Vec::new();
                let mut timestamp = None;
                for entry in value.split(separator.as_str()) {
                    let Some((k, v)) = entry.trim().split_once('=') else {
                        continue;
                    };
                    if k == key {
                        // One this scheme cannot read cannot match: skipped,
                        // as the providers' own libraries do.
                        candidates.extend(decode(v));
                    } else if Some(k) == timestamp_key && timestamp.is_none() {
                        timestamp = Some(v);
                    }
                }
                if candidates.is_empty() {
                    return Err(malformed(
                        header.to_owned(),
                        format!(
                            "has no {key}=<{encoding} of a {}-byte HMAC>",
                            self.digest_len
                        ),
                    ));
                }
                Ok((candidates, timestamp))
            }
        }
    }

    /// Whether any key's HMAC of the signed parts is among `candidates`;
    /// every key and candidate is compared, in constant time.
    fn matches(
        &self,
        candidates: &[Vec<u8>],
        body: &[u8],
        timestamp: Option<&str>,
        id: Option<&str>,
    ) -> bool {
        self.keys.iter().fold(false, |found, key| {
            let mut context = hmac::Context::with_key(key);
            for part in &self.signed {
                match part {
                    Part::Text(text) => context.update(text),
                    Part::Body => context.update(body),
                    Part::Timestamp => context.update(timestamp.unwrap_or_default().as_bytes()),
                    Part::Id => context.update(id.unwrap_or_default().as_bytes()),
                }
            }
            let tag = context.sign();
            candidates.iter().fold(found, |found, candidate| {
                constant_time_eq(tag.as_ref(), candidate) | found
            })
        })
    }

    fn check_time(&self, sent: i64, now_unix: i64) -> Result<(), VerifyError> {
        let Some(spec) = &self.timestamp else {
            return Ok(());
        };
        let sent_secs = match spec.unit {
            TimestampUnit::S => sent,
            TimestampUnit::Ms => sent.div_euclid(1000),
        };
        let tolerance = spec.tolerance_secs;
        if now_unix.saturating_sub(sent_secs) > tolerance as i64 {
            return Err(VerifyError::StaleTimestamp { tolerance });
        }
        if sent_secs.saturating_sub(now_unix) > tolerance as i64 {
            return Err(VerifyError::FutureTimestamp { tolerance });
        }
        Ok(())
    }

    fn delivery_id(
        &self,
        headers: &HeaderMap,
        json: Option<&Value>,
    ) -> Result<EventUuid, VerifyError> {
        for location in &self.delivery_id {
            match location {
                Location::Header(name) => {
                    if let Some(value) = header(headers, name)? {
                        return EventUuid::parse(value)
                            .map_err(|e| malformed(name.clone(), e.to_string()));
                    }
                }
                Location::Body(pointer) => {
                    let text = match json.and_then(|j| j.pointer(pointer)) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        Some(_) => {
                            return Err(VerifyError::MalformedBody(format!(
                                "the delivery id at {pointer} is neither a string nor a number"
                            )));
                        }
                        None => continue,
                    };
                    return EventUuid::parse(text).map_err(|e| {
                        VerifyError::MalformedBody(format!("the delivery id at {pointer} {e}"))
                    });
                }
                Location::Signature(_) => unreachable!("refused by compile"),
            }
        }
        Err(match &self.delivery_id[0] {
            Location::Header(name) => VerifyError::MissingHeader(name.clone()),
            Location::Body(pointer) => {
                VerifyError::MalformedBody(format!("no delivery id at {pointer}"))
            }
            Location::Signature(_) => unreachable!("refused by compile"),
        })
    }

    fn event_type(
        &self,
        headers: &HeaderMap,
        json: Option<&Value>,
    ) -> Result<EventType, VerifyError> {
        for location in &self.event_type {
            match location {
                Location::Header(name) => {
                    if let Some(value) = header(headers, name)? {
                        return EventType::parse(value)
                            .map_err(|e| malformed(name.clone(), e.to_string()));
                    }
                }
                Location::Body(pointer) => {
                    if let Some(Value::String(s)) = json.and_then(|j| j.pointer(pointer)) {
                        return EventType::parse(s.clone()).map_err(|e| {
                            VerifyError::MalformedBody(format!("the event type at {pointer} {e}"))
                        });
                    }
                }
                Location::Signature(_) => unreachable!("refused by compile"),
            }
        }
        Ok(EventType::parse("unknown").expect("a valid event type"))
    }
}

/// One header's value as text; two values are ambiguous and refused.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, VerifyError> {
    Ok(first_present(headers, &[name])?.map(|(value, _)| value))
}
