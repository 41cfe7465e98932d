use std::borrow::Cow;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn env(vars: &[(&str, &str)]) -> Redactor {
    Redactor::from_env(
        vars.iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    )
}

fn plain() -> Redactor {
    Redactor::default()
}

#[test]
fn secret_names_are_recognised_case_insensitively() {
    for name in [
        "GITHUB_TOKEN",
        "slack_webhook_url",
        "DB_PASSWORD",
        "MYSQL_PASSWD",
        "AWS_SECRET_ACCESS_KEY",
        "api_key",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "HTTP_AUTH",
        "Authorization",
        "GPG_PASSPHRASE",
        "SSH_PRIVATE",
    ] {
        assert!(is_secret_name(name), "{name}");
    }
    for name in [
        "PATH",
        "HOME",
        "GIT_AUTHOR_NAME",
        "XAUTHORITY",
        "KEYBOARD_LAYOUT",
        "author",
    ] {
        assert!(!is_secret_name(name), "{name}");
    }
}

#[test]
fn env_secrets_never_survive_wherever_they_appear() {
    let mut redactor = env(&[
        ("GITHUB_TOKEN", "s3cr3t-t0ken"),
        ("PATH", "/usr/bin"),
        ("SHORT_KEY", "abc"),
        ("USE_KEYRING", "true"),
    ]);
    for (line, redacted) in [
        ("s3cr3t-t0ken", "[redacted:GITHUB_TOKEN]"),
        (
            "s3cr3t-t0ken at start and end s3cr3t-t0ken",
            "[redacted:GITHUB_TOKEN] at start and end [redacted:GITHUB_TOKEN]",
        ),
        (
            "twice:s3cr3t-t0kens3cr3t-t0ken!",
            "twice:[redacted:GITHUB_TOKEN][redacted:GITHUB_TOKEN]!",
        ),
        ("/usr/bin/cargo abc true", "/usr/bin/cargo abc true"),
        ("ünï s3cr3t-t0ken 🦀", "ünï [redacted:GITHUB_TOKEN] 🦀"),
    ] {
        assert_eq!(redactor.line(line), redacted, "{line}");
    }
    assert_eq!(redactor.secret_names(), ["GITHUB_TOKEN"]);
}

#[test]
fn the_longest_of_nested_or_overlapping_values_names_the_match() {
    let mut redactor = env(&[
        ("SHORT_TOKEN", "abcd1234"),
        ("LONG_TOKEN", "abcd1234efgh"),
        ("OTHER_SECRET", "efgh5678"),
        ("REPEAT_KEY", "abab"),
    ]);
    assert_eq!(
        redactor.line("x abcd1234efgh y"),
        "x [redacted:LONG_TOKEN] y"
    );
    assert_eq!(redactor.line("x abcd1234 y"), "x [redacted:SHORT_TOKEN] y");
    // Overlapping values: one marker, nothing of either left.
    assert_eq!(redactor.line("abcd1234efgh5678"), "[redacted:LONG_TOKEN]");
    assert_eq!(redactor.line("ababab."), "[redacted:REPEAT_KEY].");
}

#[test]
fn a_multi_line_secret_is_redacted_line_by_line() {
    let mut redactor = env(&[(
        "DEPLOY_KEY",
        "first-line-secret\n  second-line-secret\n\nok\n",
    )]);
    assert_eq!(redactor.line("first-line-secret"), "[redacted:DEPLOY_KEY]");
    assert_eq!(
        redactor.line("  second-line-secret"),
        "  [redacted:DEPLOY_KEY]"
    );
    assert_eq!(redactor.line("ok"), "ok");
}

#[test]
fn configured_secrets_can_be_added() {
    let mut redactor = plain();
    redactor.add_secret(
        "alerting.slack",
        "https://hooks.slack.com/services/T0/B0/xyz",
    );
    assert_eq!(
        redactor.line("posting to https://hooks.slack.com/services/T0/B0/xyz failed"),
        "posting to [redacted:alerting.slack] failed"
    );
}

#[test]
fn url_credentials_are_redacted_in_free_text() {
    let mut redactor = plain();
    for (line, redacted) in [
        (
            "cloning https://user:pa55w0rd@git.home.arpa/repo.git ...",
            "cloning https://[redacted]@git.home.arpa/repo.git ...",
        ),
        (
            "https://ghtoken@github.com",
            "https://[redacted]@github.com",
        ),
        ("ssh://git@host:22/x", "ssh://[redacted]@host:22/x"),
        (
            "\"postgres://app:p%40ss@db:5432/app\"",
            "\"postgres://[redacted]@db:5432/app\"",
        ),
        ("a://u:p@h b://v:q@i", "a://[redacted]@h b://[redacted]@i"),
        ("https://u:p@a@host/", "https://[redacted]@host/"),
        (
            "https://registry.home.arpa/@scope/pkg",
            "https://registry.home.arpa/@scope/pkg",
        ),
        ("mail me at me@home.arpa", "mail me at me@home.arpa"),
        ("https://host", "https://host"),
        ("://@", "://@"),
    ] {
        assert_eq!(redactor.line(line), redacted, "{line}");
    }
}

#[test]
fn a_url_password_from_the_environment_is_redacted_once_by_name() {
    let mut redactor = env(&[("REGISTRY_PASSWORD", "hunter22")]);
    assert_eq!(
        redactor.line("https://bob:hunter22@registry/v2 and hunter22"),
        "https://[redacted:REGISTRY_PASSWORD]@registry/v2 and [redacted:REGISTRY_PASSWORD]"
    );
}

#[test]
fn secret_parameters_and_assignments_are_redacted() {
    let mut redactor = plain();
    for (line, redacted) in [
        (
            "GET /api?token=abc123&page=2 200",
            "GET /api?token=[redacted]&page=2 200",
        ),
        (
            "https://s3/b/o?X-Amz-Signature=f00d&X-Amz-Credential=AK/x&v=1",
            "https://s3/b/o?X-Amz-Signature=[redacted]&X-Amz-Credential=[redacted]&v=1",
        ),
        (
            "?sig=aa&key=bb&secret=cc&password=dd",
            "?sig=[redacted]&key=[redacted]&secret=[redacted]&password=[redacted]",
        ),
        (
            "--password=hunter2 --verbose",
            "--password=[redacted] --verbose",
        ),
        ("GITHUB_TOKEN=ghx-abc", "GITHUB_TOKEN=[redacted]"),
        ("access_token=", "access_token="),
        (
            r#"{"api_key": "a b c", "user": "bob"}"#,
            r#"{"api_key": "[redacted]", "user": "bob"}"#,
        ),
        (r#"{"token":12345,"n":1}"#, r#"{"token":[redacted],"n":1}"#),
        (
            r#"{"password":"x\"y z","ok":true}"#,
            r#"{"password":"[redacted]","ok":true}"#,
        ),
        (
            r#"msg="{\"secret\": \"a b\"}""#,
            r#"msg="{\"secret\": \"[redacted]\"}""#,
        ),
        (
            r#"password = "correct horse""#,
            r#"password = "[redacted]""#,
        ),
        ("password='correct horse' x", "password='[redacted]' x"),
        (
            "3 |     let api_key = std::env::var(\"K\");",
            "3 |     let api_key = std::env::var(\"K\");",
        ),
        ("if key == other {", "if key == other {"),
        ("key != x && key >= y", "key != x && key >= y"),
        ("page=2&author=me&sort=asc", "page=2&author=me&sort=asc"),
        ("error: key: not found", "error: key: not found"),
        ("ünï_token=x ü", "ünï_token=[redacted] ü"),
    ] {
        assert_eq!(redactor.line(line), redacted, "{line}");
    }
}

#[test]
fn authorization_headers_and_bearer_tokens_are_redacted() {
    let mut redactor = plain();
    for (line, redacted) in [
        (
            "Authorization: Bearer abc.def.ghi",
            "Authorization: Bearer [redacted]",
        ),
        (
            "authorization: Basic dXNlcjpwYXNz",
            "authorization: Basic [redacted]",
        ),
        (
            "curl -H 'Authorization: token ghx123' https://api",
            "curl -H 'Authorization: token [redacted]' https://api",
        ),
        (
            "Proxy-Authorization:opaque",
            "Proxy-Authorization:[redacted]",
        ),
        (
            r#"{"Authorization": "Bearer abc def"}"#,
            r#"{"Authorization": "[redacted]"}"#,
        ),
        (
            r#"headers: {\"authorization\": \"Basic Zm9vOmJhcg==\"}"#,
            r#"headers: {\"authorization\": \"[redacted]\"}"#,
        ),
        ("sent bearer 0123456789abcdef", "sent bearer [redacted]"),
        ("a bearer token is needed", "a bearer token is needed"),
        ("authorization failed: bad", "authorization failed: bad"),
        ("Authorization:", "Authorization:"),
    ] {
        assert_eq!(redactor.line(line), redacted, "{line}");
    }
}

#[test]
fn well_known_token_shapes_are_redacted_anywhere() {
    let mut redactor = plain();
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
    for (line, redacted) in [
        (
            "pushing with ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "pushing with [redacted]",
        ),
        ("github_pat_11AAAAAAA0abcdefghijklmnop_rest", "[redacted]"),
        ("glpat-abcdefghijklmnop1234 done", "[redacted] done"),
        ("xoxb-1234567890-abcdefghij", "[redacted]"),
        ("id AKIAIOSFODNN7EXAMPLE.", "id [redacted]"),
        (&format!("cookie {jwt};"), "cookie [redacted];"),
        ("eyJshort", "eyJshort"),
        (
            "notghp_abcdefghijklmnopqrstuvwxyz",
            "notghp_abcdefghijklmnopqrstuvwxyz",
        ),
        ("ghp_short", "ghp_short"),
    ] {
        assert_eq!(redactor.line(line), redacted, "{line}");
    }
}

#[test]
fn private_key_blocks_are_redacted_across_lines() {
    let mut redactor = plain();
    let output = [
        "writing key:",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
        "QyNTUxOQAAACDr",
        "-----END OPENSSH PRIVATE KEY-----",
        "done",
        r#"{"key": "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"}"#,
        "after",
        "-----BEGIN CERTIFICATE-----",
        "MIIB",
    ];
    let redacted: Vec<String> = output
        .iter()
        .map(|l| redactor.line(l).into_owned())
        .collect();
    assert_eq!(
        redacted,
        [
            "writing key:",
            REDACTED_PRIVATE_KEY,
            REDACTED_PRIVATE_KEY,
            REDACTED_PRIVATE_KEY,
            REDACTED_PRIVATE_KEY,
            "done",
            REDACTED_PRIVATE_KEY,
            "after",
            "-----BEGIN CERTIFICATE-----",
            "MIIB",
        ]
    );
}

#[test]
fn a_key_without_its_end_keeps_everything_after_redacted() {
    let mut redactor = plain();
    redactor.line("-----BEGIN RSA PRIVATE KEY-----");
    for line in ["MIIE", "", "anything at all"] {
        assert_eq!(redactor.line(line), REDACTED_PRIVATE_KEY);
    }
}

#[test]
fn text_is_redacted_on_its_own() {
    let mut redactor = env(&[("API_TOKEN", "tok-12345")]);
    redactor.line("-----BEGIN PRIVATE KEY-----");
    let text =
        "run --token tok-12345\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\nok";
    assert_eq!(
        redactor.text(text),
        format!(
            "run --token [redacted:API_TOKEN]\n{REDACTED_PRIVATE_KEY}\n{REDACTED_PRIVATE_KEY}\n{REDACTED_PRIVATE_KEY}\nok"
        )
    );
    // The output's own key block is still open.
    assert_eq!(redactor.line("BBBB"), REDACTED_PRIVATE_KEY);
}

#[test]
fn clean_lines_are_not_copied() {
    let mut redactor = env(&[("API_TOKEN", "tok-12345")]);
    assert!(matches!(
        redactor.line("   Compiling labmesh v0.1.0"),
        Cow::Borrowed(_)
    ));
}

/// Lines built to make a careless scanner quadratic: each must be redacted in moments.
#[test]
fn adversarial_long_lines_are_redacted_in_linear_time() {
    let mut redactor = env(&[("REPEAT_TOKEN", "aaaa")]);
    let started = std::time::Instant::now();
    for unit in [
        "key=",
        "\"key\":",
        "authorization:",
        "authorization=",
        "eyJ-",
        "eyJ.",
        "ghp_-",
        "a",
        "://@",
        "bearer ",
        "x=",
        " = ",
    ] {
        let line = unit.repeat(200_000 / unit.len());
        let redacted = redactor.line(&line);
        assert!(redacted.len() <= line.len() * 4, "{unit}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// Random secrets among random text, numbers, URLs and markup: not one secret survives, and
/// nothing panics.
#[test]
fn random_lines_never_leak_a_secret() {
    let mut rng = StdRng::seed_from_u64(0x5ec2e7);
    let alphabet: Vec<char> = "abcXYZ019-_.:/@?&=\"' é🦀\\{}".chars().collect();
    let secret_chars: Vec<char> = "abcdefXYZ0123456789-_".chars().collect();
    for round in 0..300 {
        let secret = |rng: &mut StdRng| -> String {
            (0..rng.random_range(6..16))
                .map(|_| secret_chars[rng.random_range(0..secret_chars.len())])
                .collect()
        };
        let env_secrets: Vec<String> = (0..3).map(|_| secret(&mut rng)).collect();
        let mut redactor = Redactor::from_env(
            env_secrets
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("SECRET_{i}"), s.clone())),
        );
        for _ in 0..20 {
            let mut line = String::new();
            let mut planted = Vec::new();
            for _ in 0..rng.random_range(0..10) {
                match rng.random_range(0..6) {
                    0 => line.push_str(&env_secrets[rng.random_range(0..3)]),
                    1 => {
                        let password = secret(&mut rng);
                        line.push_str(&format!("https://user:{password}@host/p"));
                        planted.push(password);
                    }
                    2 => {
                        let token = secret(&mut rng);
                        line.push_str(&format!("?token={token}&"));
                        planted.push(token);
                    }
                    3 => {
                        let token = secret(&mut rng);
                        line.push_str(&format!(" Bearer {token}ab"));
                        planted.push(format!("{token}ab"));
                    }
                    _ => {
                        for _ in 0..rng.random_range(0..12) {
                            line.push(alphabet[rng.random_range(0..alphabet.len())]);
                        }
                    }
                }
            }
            let redacted = redactor.line(&line).into_owned();
            for leaked in env_secrets.iter().chain(&planted) {
                // A planted value can also be made of the text around it by chance; only a
                // value that was planted and is still whole counts as a leak.
                if line.contains(leaked.as_str()) {
                    assert!(
                        !redacted.contains(leaked.as_str()),
                        "round {round}: {leaked:?} survives in {redacted:?} (from {line:?})"
                    );
                }
            }
        }
    }
}
