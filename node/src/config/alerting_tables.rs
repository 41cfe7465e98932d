//! The alerting part of the agent's config file, checked at start-up: the tables, the digest
//! schedule, and the secret files the receivers name (which must be 0600 or stricter).

use crate::drivers::notify::check_secret_file;

fn plain<T: Clone>(v: &[toml::Spanned<T>]) -> Vec<T> {
    v.iter().map(|s| s.get_ref().clone()).collect()
}

/// Validates the alerting tables of a config file. The error names the table (and its line
/// when one `[[rule]]`, `[[receiver]]` or `[[maintenance]]` is refused on its own), and checks
/// that secret files named by receivers exist with mode 0600 or stricter.
pub fn validate_config(text: &str, file: &super::ConfigFile) -> Result<alerting::Config, String> {
    let all = alerting::AlertingToml {
        alerting: file.alerting.clone(),
        rule: plain(&file.rule),
        receiver: plain(&file.receiver),
        route: plain(&file.route),
        maintenance: plain(&file.maintenance),
    };
    let line = |span: std::ops::Range<usize>| crate::checks::config::line_col(text, span.start).0;
    let config = alerting::Config::try_from(all).map_err(|e| {
        // Find the one table that is refused alone, to give its line.
        let alone = |t: alerting::AlertingToml| alerting::Config::try_from(t).is_err();
        let at = file
            .receiver
            .iter()
            .find(|r| {
                alone(alerting::AlertingToml {
                    receiver: vec![r.get_ref().clone()],
                    ..Default::default()
                })
            })
            .map(|r| ("receiver", line(r.span())))
            .or_else(|| {
                file.rule
                    .iter()
                    .find(|r| {
                        alone(alerting::AlertingToml {
                            rule: vec![r.get_ref().clone()],
                            ..Default::default()
                        })
                    })
                    .map(|r| ("rule", line(r.span())))
            })
            .or_else(|| {
                file.maintenance
                    .iter()
                    .find(|r| {
                        alone(alerting::AlertingToml {
                            maintenance: vec![r.get_ref().clone()],
                            ..Default::default()
                        })
                    })
                    .map(|r| ("maintenance", line(r.span())))
            });
        match at {
            Some((table, line)) => format!("[[{table}]] at line {line}: {e}"),
            None => e.to_string(),
        }
    })?;
    alerting::digest_schedule::parse(
        config
            .digest
            .as_deref()
            .unwrap_or(alerting::digest_schedule::DEFAULT),
    )
    .map_err(|e| format!("[alerting] digest: {e}"))?;
    for r in &file.receiver {
        let t = r.get_ref();
        for f in [&t.url_file, &t.token_file, &t.password_file]
            .into_iter()
            .flatten()
        {
            check_secret_file(f)
                .map_err(|e| format!("[[receiver]] at line {}: {e}", line(r.span())))?;
        }
    }
    Ok(config)
}
