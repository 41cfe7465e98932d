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

/// Sends over SMTP. `tls = "auto"` goes by port: 465 with TLS, 587 with STARTTLS required,
/// other ports (25, a local relay, mailpit) with STARTTLS when offered. Errors name the stage, never the password.
pub async fn email(mail: alerting::EmailMessage, timeout: Duration) -> Result<(), String> {
    use alerting::receiver::SmtpTls;
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
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
    let mut params = TlsParameters::builder(host.clone());
    if let Some(path) = &mail.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("`ca_file` {path}: {e}"))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("`ca_file` {path} is not a PEM certificate file: {e}"))?;
        // Only that CA: the homelab's own mail server, not anything a public CA signed.
        params = params
            .certificate_store(CertificateStore::None)
            .add_root_certificate(cert);
    }
    let params = params
        .build_rustls()
        .map_err(|e| format!("SMTP relay {host}: {e}"))?;
    let tls = match (mail.tls, port) {
        (SmtpTls::Implicit, _) | (SmtpTls::Auto, 465) => Tls::Wrapper(params),
        (SmtpTls::Starttls, _) | (SmtpTls::Auto, 587) => Tls::Required(params),
        (SmtpTls::Auto, _) => Tls::Opportunistic(params),
        (SmtpTls::None, _) => Tls::None,
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
        .tls(tls)
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
