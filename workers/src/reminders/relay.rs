//! The SMTP relay connection pool: lettre's SMTP client
//! ([`AsyncSmtpConnection`]: EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA, NOOP,
//! QUIT) over sockets this module opens, with `TCP_NODELAY` set.
//!
//! Why not lettre's own `AsyncSmtpTransport` and its pool: lettre 0.11.23 (the
//! newest release) leaves Nagle's algorithm on, and it writes a message's body
//! and its closing `\r\n.\r\n` as two writes; the second waits for the relay's
//! delayed ACK, 40 ms on Linux, on every message. Measured against aiosmtpd on
//! loopback, one connection: 50 ms a message with Nagle, 1.2 ms without. The
//! fix is merged upstream (lettre pull request 1159) but not released; when it
//! is, this module can give way to `AsyncSmtpTransport::from_url(..).pool_config(..)`
//! again, whose URL form and behaviour it copies:
//! - `smtp://host[:25]` plain, `smtp://host[:587]?tls=required` STARTTLS
//!   required, `?tls=opportunistic` STARTTLS when offered,
//!   `smtps://host[:465]` implicit TLS; `user:password@` (percent-decoded)
//!   logs in with PLAIN or LOGIN; a path names the EHLO host;
//! - at most `max_idle` connections are kept; each is checked with `NOOP`
//!   before reuse and dropped when idle for longer than [`IDLE_TIMEOUT`]; a
//!   connection that saw any error is closed, never reused.
//!
//! TLS is OpenSSL through native-tls, certificates verified against the
//! system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured).

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use url::Url;

/// A pooled connection idle for longer than this is closed instead of reused
/// (relays drop idle clients after a few minutes; Postfix after 300 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How the relay is reached over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTls {
    None,
    /// STARTTLS, refusing to continue without it.
    Required,
    /// STARTTLS when the relay offers it.
    Opportunistic,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// A failure talking to the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The relay answered, or lettre's client failed (reply codes, protocol).
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("cannot connect to {relay}: {source}")]
    Connect { relay: String, source: io::Error },
    #[error("no connection to {relay} within {timeout:?}")]
    ConnectTimeout { relay: String, timeout: Duration },
    #[error("TLS with {relay} failed: {reason}")]
    Tls { relay: String, reason: String },
    #[error("{relay} does not offer STARTTLS, and the URL requires it (tls=required)")]
    NoStartTls { relay: String },
}

/// Where the relay is and how to log in, from `SMTP_URL`.
#[derive(Clone)]
pub struct RelayAddress {
    host: String,
    port: u16,
    tls: RelayTls,
    credentials: Option<Credentials>,
    hello: ClientId,
}

impl fmt::Debug for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayAddress")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("login", &self.credentials.is_some())
            .finish()
    }
}

impl RelayAddress {
    /// Parses lettre's URL form. The error never contains the URL (it may
    /// hold a password): the caller shows the masked URL beside it.
    pub fn parse(smtp_url: &str) -> Result<RelayAddress, String> {
        let url = Url::parse(smtp_url).map_err(|e| e.to_string())?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL names no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls_param = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None) => (RelayTls::None, 25),
            ("smtp", Some("required")) => (RelayTls::Required, 587),
            ("smtp", Some("opportunistic")) => (RelayTls::Opportunistic, 587),
            ("smtps", None) => (RelayTls::Implicit, 465),
            (scheme, tls) => {
                return Err(format!(
                    "unknown scheme {scheme:?} or tls parameter {tls:?}"
                ))
            }
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|_| {
                    "the user or password is not valid UTF-8 once percent-decoded".to_string()
                })
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(decode(url.username())?, decode(password)?)),
            None if !url.username().is_empty() => {
                return Err("a user without a password".to_string())
            }
            None => None,
        };
        let name = url.path().trim_matches('/');
        let hello = if name.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(name.to_string())
        };
        Ok(RelayAddress {
            port: url.port().unwrap_or(default_port),
            host,
            tls,
            credentials,
            hello,
        })
    }

    pub fn tls(&self) -> RelayTls {
        self.tls
    }

    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A pool of connections to one relay.
pub struct SmtpRelay {
    address: RelayAddress,
    connect_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("address", &self.address)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl SmtpRelay {
    /// Connects to nothing yet; the first send does.
    pub fn new(address: RelayAddress, connect_timeout: Duration, max_idle: usize) -> SmtpRelay {
        SmtpRelay {
            address,
            connect_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn address(&self) -> &RelayAddress {
        &self.address
    }

    /// Sends one message over a pooled (or new) connection. The connection
    /// goes back to the pool only after a success.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Response, RelayError> {
        let mut conn = self.checkout().await?;
        let response = conn.send(envelope, message).await?;
        self.checkin(conn).await;
        Ok(response)
    }

    /// Whether the relay answers `NOOP` now (on a pooled or new connection).
    pub async fn check(&self) -> Result<(), RelayError> {
        let conn = self.checkout().await?;
        self.checkin(conn).await;
        Ok(())
    }

    /// Says QUIT on every idle connection.
    pub async fn shutdown(&self) {
        let idle: Vec<_> = std::mem::take(&mut *self.idle.lock().await);
        for (mut conn, _) in idle {
            conn.abort().await;
        }
    }

    async fn checkout(&self) -> Result<AsyncSmtpConnection, RelayError> {
        loop {
            let parked = self.idle.lock().await.pop();
            let Some((mut conn, since)) = parked else {
                return self.connect().await;
            };
            if since.elapsed() <= IDLE_TIMEOUT && conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    async fn checkin(&self, mut conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().await;
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        } else {
            drop(idle);
            conn.abort().await;
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, RelayError> {
        let a = &self.address;
        let relay = a.name();
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((a.host.as_str(), a.port)),
        )
        .await
        .map_err(|_| RelayError::ConnectTimeout {
            relay: relay.clone(),
            timeout: self.connect_timeout,
        })?
        .map_err(|source| RelayError::Connect {
            relay: relay.clone(),
            source,
        })?;
        // The point of this module: no 40 ms Nagle stall per message.
        tcp.set_nodelay(true)
            .map_err(|source| RelayError::Connect {
                relay: relay.clone(),
                source,
            })?;
        let stream: Box<dyn AsyncTokioStream> = if a.tls == RelayTls::Implicit {
            let connector = native_tls::TlsConnector::new().map_err(|e| RelayError::Tls {
                relay: relay.clone(),
                reason: e.to_string(),
            })?;
            let tls = tokio_native_tls::TlsConnector::from(connector)
                .connect(&a.host, tcp)
                .await
                .map_err(|e| RelayError::Tls {
                    relay: relay.clone(),
                    reason: e.to_string(),
                })?;
            Box::new(ImplicitTls(tls))
        } else {
            Box::new(tcp)
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &a.hello).await?;
        let starttls = match a.tls {
            RelayTls::Required if !conn.can_starttls() => {
                conn.abort().await;
                return Err(RelayError::NoStartTls { relay });
            }
            RelayTls::Required => true,
            RelayTls::Opportunistic => conn.can_starttls(),
            RelayTls::None | RelayTls::Implicit => false,
        };
        if starttls {
            let parameters = TlsParameters::new(a.host.clone())?;
            conn.starttls(parameters, &a.hello).await?;
        }
        if let Some(credentials) = &a.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }
}

/// A TLS-from-the-start stream, in the shape lettre's client takes.
#[derive(Debug)]
struct ImplicitTls(tokio_native_tls::TlsStream<TcpStream>);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().get_ref().get_ref().peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_lettres_form() {
        let a = RelayAddress::parse("smtp://relay.example.com").unwrap();
        assert_eq!(
            (a.port, a.tls, a.credentials.is_some()),
            (25, RelayTls::None, false)
        );
        let a = RelayAddress::parse("smtp://relay.example.com?tls=required").unwrap();
        assert_eq!((a.port, a.tls), (587, RelayTls::Required));
        let a = RelayAddress::parse("smtp://relay.example.com:2525?tls=opportunistic").unwrap();
        assert_eq!((a.port, a.tls), (2525, RelayTls::Opportunistic));
        let a = RelayAddress::parse(
            "smtps://bob%40corp:p%40ss%3Aw@relay.example.com/client.example.com",
        )
        .unwrap();
        assert_eq!((a.port, a.tls), (465, RelayTls::Implicit));
        assert_eq!(
            a.credentials,
            Some(Credentials::new("bob@corp".into(), "p@ss:w".into()))
        );
        assert_eq!(a.hello, ClientId::Domain("client.example.com".into()));
        let a = RelayAddress::parse("smtp://[::1]:25").unwrap();
        assert_eq!(a.host, "::1");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for url in [
            "imap://bob:hunter2@relay",
            "smtp://bob:hunter2@relay?tls=sometimes",
            "smtps://relay?tls=required",
            "smtp://bob@relay",
            "relay:25",
            "smtp://",
        ] {
            let err = RelayAddress::parse(url).unwrap_err();
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
        let debug = format!(
            "{:?}",
            RelayAddress::parse("smtp://bob:hunter2@relay:25").unwrap()
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
