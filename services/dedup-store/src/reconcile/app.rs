//! A GitHub App's own webhook (`/app/hook/deliveries`) is read as the App:
//! with a JSON Web Token signed by the App's private key (RS256), issued by
//! its client ID (or app ID), valid at most 10 minutes. A new one is made
//! for every request, so a run that waits out a rate limit never presents
//! an expired one.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;

#[derive(Clone)]
pub struct AppKey {
    issuer: String,
    key: Arc<RsaKeyPair>,
}

/// Never the key, whatever prints it.
impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey")
            .field("issuer", &self.issuer)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl AppKey {
    /// `pem` is the App's private key as GitHub hands it out (PKCS#1,
    /// `BEGIN RSA PRIVATE KEY`) or converted to PKCS#8.
    pub fn from_pem(issuer: &str, pem: &str) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "not a PEM private key".to_owned())?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err("not an RSA private key".to_owned()),
        }
        .map_err(|e| format!("not a usable RSA private key: {e}"))?;
        Ok(Self {
            issuer: issuer.to_owned(),
            key: Arc::new(key),
        })
    }

    /// A token valid from a minute ago (clocks differ) for nine minutes.
    pub fn jwt(&self, now_epoch: u64) -> String {
        let header = B64URL.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = B64URL.encode(
            serde_json::json!({
                "iat": now_epoch.saturating_sub(60),
                "exp": now_epoch + 540,
                "iss": self.issuer,
            })
            .to_string(),
        );
        let signed = format!("{header}.{claims}");
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .expect("an RSA signature of a valid key");
        format!("{signed}.{}", B64URL.encode(signature))
    }
}
