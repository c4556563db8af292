//! Bearer tokens: a valid ES256 token names its client; an expired one, one
//! for another audience or issuer, one not yet valid, a tampered one and
//! one signed by another key are refused, each saying why; nothing a
//! caller can send in an authorization header panics.

use std::time::{SystemTime, UNIX_EPOCH};

use baton_tls::testing::TestSigner;
use baton_tls::{ClientEntry, Clients, JwtConfig, Scope, TokenError, TokenVerifier, bearer};
use proptest::prelude::*;
use serde_json::json;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn setup() -> (tempfile::TempDir, TestSigner, Clients) {
    setup_with_leeway(30)
}

/// A signer, and a clients table whose one client is named by its tokens'
/// `sub`, checked with `leeway_s` of clock skew.
fn setup_with_leeway(leeway_s: u64) -> (tempfile::TempDir, TestSigner, Clients) {
    let dir = tempfile::tempdir().unwrap();
    let signer = TestSigner::new();
    let public = signer.write_public(&dir.path().join("signing.pem"));
    let config = JwtConfig {
        issuer: "https://auth.example.nhs.uk".into(),
        audience: "baton".into(),
        keys: vec![public],
        leeway_s,
        ..JwtConfig::default()
    };
    let clients = Clients::new(&[ClientEntry {
        id: "frailty-board".into(),
        certificate_names: Vec::new(),
        token_subjects: vec!["app-123".into()],
        organisations: Vec::new(),
        services: Vec::new(),
        scopes: [Scope::Read].into(),
    }])
    .unwrap()
    .with_tokens(TokenVerifier::load(&config).unwrap());
    (dir, signer, clients)
}

fn claims(overrides: serde_json::Value) -> serde_json::Value {
    let mut claims = json!({
        "iss": "https://auth.example.nhs.uk",
        "aud": "baton",
        "sub": "app-123",
        "exp": now() + 300,
        "nbf": now() - 10,
    });
    for (key, value) in overrides.as_object().unwrap() {
        claims[key] = value.clone();
    }
    claims
}

#[test]
fn a_valid_token_names_its_client_and_bad_ones_say_why() {
    let (_dir, signer, clients) = setup();
    let identity = clients.by_token(&signer.sign(&claims(json!({})))).unwrap();
    assert_eq!(identity.id, "frailty-board");
    assert!(identity.has(Scope::Read));
    assert_eq!(identity.authenticated_by, baton_tls::Authentication::Token);
    assert!(identity.asserted.is_empty());
    // The end user, role and purpose its claims assert, as recorded:
    // bounded, control characters dropped.
    let asserted = clients
        .by_token(&signer.sign(&claims(json!({
            "user": "555123456789",
            "role": "R8000\n",
            "purpose": "x".repeat(1000),
        }))))
        .unwrap()
        .asserted;
    assert_eq!(asserted.user, "555123456789");
    assert_eq!(asserted.role, "R8000");
    assert_eq!(asserted.purpose.len(), baton_tls::ASSERTED_MAX_CHARS);

    let refused = |claims: serde_json::Value| clients.by_token(&signer.sign(&claims)).unwrap_err();
    assert_eq!(
        refused(claims(json!({"exp": now() - 120}))),
        TokenError::Expired
    );
    // Within the leeway, still good.
    clients
        .by_token(&signer.sign(&claims(json!({"exp": now() - 5}))))
        .unwrap();
    assert_eq!(
        refused(claims(json!({"aud": "another-api"}))),
        TokenError::Audience
    );
    assert_eq!(
        refused(claims(json!({"iss": "https://evil.example"}))),
        TokenError::Issuer
    );
    assert_eq!(
        refused(claims(json!({"nbf": now() + 600}))),
        TokenError::NotYetValid
    );
    assert_eq!(
        refused(claims(json!({"sub": "someone-else"}))),
        TokenError::UnknownClient
    );

    // Tampered: the payload changed after signing.
    let token = signer.sign(&claims(json!({})));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let forged = signer.sign(&claims(json!({"sub": "app-123", "scope": "admin"})));
    parts[1] = forged.split('.').nth(1).unwrap().to_owned();
    parts[1].push('A');
    let tampered = parts.join(".");
    assert!(clients.by_token(&tampered).is_err());
    let mut other = token.split('.').map(str::to_owned).collect::<Vec<_>>();
    other[1] = forged.split('.').nth(1).unwrap().to_owned();
    assert_eq!(
        clients.by_token(&other.join(".")).unwrap_err(),
        TokenError::Signature
    );

    // Signed by a key that is not configured.
    let stranger = TestSigner::new();
    assert_eq!(
        clients
            .by_token(&stranger.sign(&claims(json!({}))))
            .unwrap_err(),
        TokenError::Signature
    );
    assert_eq!(
        clients.by_token("not.a.jwt").unwrap_err(),
        TokenError::Malformed
    );
    // Without a verifier, tokens are not accepted at all.
    assert_eq!(
        Clients::default().by_token(&token).unwrap_err(),
        TokenError::NotAccepted
    );
    // Messages never quote the token.
    assert!(!TokenError::Signature.to_string().contains(&token));
}

#[test]
fn the_authorization_header_is_read_as_bearer_tokens_only() {
    assert_eq!(bearer(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
    assert_eq!(bearer(b"bearer  abc "), Some("abc"));
    assert_eq!(bearer(b"Basic dXNlcjpwYXNz"), None);
    assert_eq!(bearer(b"Bearer "), None);
    assert_eq!(bearer(&[0xff, 0xfe]), None);
}

#[test]
fn settings_missing_what_tokens_need_are_named() {
    assert!(
        TokenVerifier::load(&JwtConfig::default())
            .unwrap()
            .is_none()
    );
    let no_audience = JwtConfig {
        issuer: "x".into(),
        ..JwtConfig::default()
    };
    assert!(
        TokenVerifier::load(&no_audience)
            .unwrap_err()
            .starts_with("jwt.audience:")
    );
    let no_keys = JwtConfig {
        issuer: "x".into(),
        audience: "baton".into(),
        ..JwtConfig::default()
    };
    assert!(
        TokenVerifier::load(&no_keys)
            .unwrap_err()
            .starts_with("jwt.keys:")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_header_value_or_token_panics(value in proptest::collection::vec(any::<u8>(), 0..300), text in ".{0,200}") {
        let (_dir, _signer, clients) = setup();
        if let Some(token) = bearer(&value) {
            let _ = clients.by_token(token);
        }
        let _ = clients.by_token(&text);
        let dotted = format!("{text}.{text}.{text}");
        let _ = clients.by_token(&dotted);
        let _ = baton_tls::certificate_names(&value);
    }
}

/// A token is checked once and remembered, but never past its expiry:
/// the same token, asked again after `exp`, is refused as expired.
#[test]
fn a_remembered_token_is_refused_once_it_expires() {
    let (_dir, signer, clients) = setup_with_leeway(0);
    let token = signer.sign(&claims(json!({"exp": now() + 1})));
    for _ in 0..3 {
        assert_eq!(clients.by_token(&token).unwrap().id, "frailty-board");
    }
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    assert_eq!(
        clients.by_token(&token).unwrap_err(),
        baton_tls::TokenError::Expired
    );
}
