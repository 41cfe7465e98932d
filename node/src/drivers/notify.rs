//! Performing a notification: HTTP with reqwest, email with lettre. Each gives up at the
//! notification's deadline; error texts never carry a URL or password (they may hold tokens).
//!
//! The alerting driver hands every notification to a [`Notifier`]; the agent's is
//! [`HostNotifier`] (real HTTP and SMTP, secrets from this host's environment and files), the
//! simulation's a recording stand-in.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use alerting::receiver::Receiver;
use alerting::{Notification, NotificationMessage};

/// A notification's outcome, when the send is over.
pub type Delivery = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Performs the notifications the alerting engine asks for.
pub trait Notifier: Send + Sync {
    /// Sends `n` through `receiver` (the engine's receiver of that name, if it has one),
    /// giving up after `timeout`; the future resolves with the outcome the engine records.
    fn deliver(&self, n: &Notification, receiver: Option<&Receiver>, timeout: Duration)
    -> Delivery;
}

/// The agent's notifier: real HTTP and SMTP.
pub struct HostNotifier;

impl Notifier for HostNotifier {
    fn deliver(
        &self,
        n: &Notification,
        receiver: Option<&Receiver>,
        timeout: Duration,
    ) -> Delivery {
        let delivery = match receiver {
            Some(r) => alerting::build_delivery(r, &HostSecrets, &n.message),
            None => {
                let missing = format!("no receiver named {}", n.receiver);
                return Box::pin(async move { Err(missing) });
            }
        };
        Box::pin(async move { send(delivery.map_err(|e| e.to_string())?, timeout).await })
    }
}

/// Sends a message (the digest) through `receiver` now, outside the alerting pipeline.
pub async fn send_message(
    receiver: &Receiver,
    message: &NotificationMessage,
    timeout: Duration,
) -> Result<(), String> {
    let delivery =
        alerting::build_delivery(receiver, &HostSecrets, message).map_err(|e| e.to_string())?;
    send(delivery, timeout).await
}

async fn send(delivery: alerting::Delivery, timeout: Duration) -> Result<(), String> {
    match delivery {
        alerting::Delivery::Http(req) => http(req, timeout).await,
        alerting::Delivery::Email(mail) => email(mail, timeout).await,
    }
}

/// Secrets from the agent's environment and files (files must be 0600 or stricter).
pub struct HostSecrets;

impl alerting::SecretSource for HostSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &str) -> Result<String, String> {
        check_secret_file(path)?;
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
}

/// Refuses a secret file that others can read or write.
pub fn check_secret_file(path: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "secret file {path} has mode {mode:o}: others may read it; run chmod 600 {path}"
        ));
    }
    Ok(())
}

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
