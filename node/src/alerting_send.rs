//! Performing a notification: HTTP with reqwest, email with lettre. Each gives up at the
//! notification's deadline; error texts never carry a URL or password (they may hold tokens).

use std::time::Duration;

pub async fn http(req: alerting::HttpRequest, timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut b = client.request(method, req.url.expose()).body(req.body);
    for (k, v) in &req.headers {
        b = b.header(k, v);
    }
    for (k, v) in &req.secret_headers {
        b = b.header(k, v.expose());
    }
    // The error text of reqwest may hold the URL (with a token in it): keep only the kind.
    let resp = b.send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            "request failed".to_owned()
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// Sends over SMTP: port 465 with TLS, 587 with STARTTLS required, other ports (25, a local
/// relay, mailpit) with STARTTLS when offered. Errors name the stage, never the password.
pub async fn email(mail: alerting::EmailMessage, timeout: Duration) -> Result<(), String> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let from: Mailbox = mail
        .from
        .parse()
        .map_err(|e| format!("`from` {:?}: {e}", mail.from))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(mail.subject.clone());
    for to in &mail.to {
        let to: Mailbox = to.parse().map_err(|e| format!("`to` {to:?}: {e}"))?;
        builder = builder.to(to);
    }
    let message = builder
        .header(ContentType::TEXT_PLAIN)
        .body(mail.text_body.clone())
        .map_err(|e| format!("cannot build the email: {e}"))?;
    let (host, port) = match mail.smtp.rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            p.parse::<u16>()
                .map_err(|_| format!("`smtp` {:?}: bad port", mail.smtp))?,
        ),
        None => (mail.smtp.clone(), 587),
    };
    let mut transport = match port {
        465 => AsyncSmtpTransport::<Tokio1Executor>::relay(&host),
        587 => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host),
        _ => TlsParameters::new(host.clone()).map(|tls| {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
                .tls(Tls::Opportunistic(tls))
        }),
    }
    .map_err(|e| format!("SMTP relay {host}: {e}"))?
    .port(port)
    .timeout(Some(timeout));
    if let (Some(user), Some(pass)) = (&mail.username, &mail.password) {
        transport = transport.credentials(Credentials::new(user.clone(), pass.expose().to_owned()));
    }
    let transport = transport.build();
    match tokio::time::timeout(timeout, transport.send(message)).await {
        Err(_) => Err("timed out".to_owned()),
        Ok(Err(e)) => Err(format!("SMTP {host}:{port}: {e}")),
        Ok(Ok(_)) => Ok(()),
    }
}
