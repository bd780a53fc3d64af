//! TLS to PostgreSQL as libpq's `sslmode` and `sslrootcert` mean it.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and no
//! `sslrootcert`, so both are taken off the URL here and the OpenSSL
//! connector is set up to check what the mode promises:
//!
//! | `sslmode`     | encrypted            | certificate chain checked | host name checked |
//! |---------------|----------------------|---------------------------|-------------------|
//! | `disable`     | no                   | no                        | no                |
//! | `prefer`      | if the server offers | no                        | no                |
//! | `require`     | yes                  | no (yes with `sslrootcert`, as libpq) | no    |
//! | `verify-ca`   | yes                  | yes, against `sslrootcert` | no               |
//! | `verify-full` | yes                  | yes, against `sslrootcert` or the system's roots | yes |
//!
//! `sslrootcert=system` names the system's roots (libpq 16's spelling).

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use percent_encoding::percent_decode_str;
use postgres_openssl::MakeTlsConnector;

use super::store::StoreError;

/// libpq's `sslmode` values this store implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, StoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(StoreError::Invalid(format!(
                    "database.url has sslmode={other:?}: expected disable, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's CA certificates (OpenSSL's default paths).
    System,
    /// Only the certificates in this PEM file.
    File(PathBuf),
}

/// The TLS part of `database.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert`, if given.
    pub root_cert: Option<RootCerts>,
}

impl TlsSettings {
    /// Takes `sslmode` and `sslrootcert` off `url` (URL or `key=value` form);
    /// returns the rest, for `tokio_postgres::Config`, and the settings.
    pub fn split_url(url: &str) -> Result<(String, TlsSettings), StoreError> {
        let mut mode = None;
        let mut root = None;
        let mut take = |key: &str, value: &str| -> Result<bool, StoreError> {
            match key {
                "sslmode" => mode = Some(SslMode::parse(value)?),
                "sslrootcert" => {
                    root = Some(if value == "system" {
                        RootCerts::System
                    } else {
                        RootCerts::File(PathBuf::from(value))
                    })
                }
                _ => return Ok(false),
            }
            Ok(true)
        };
        let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            match url.split_once('?') {
                None => url.to_string(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        let v = percent_decode_str(v).decode_utf8_lossy();
                        if !take(k, &v)? {
                            kept.push(pair);
                        }
                    }
                    if kept.is_empty() {
                        base.to_string()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            let mut kept = Vec::new();
            for pair in url.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if !take(k.trim(), v.trim_matches('\''))? {
                    kept.push(pair);
                }
            }
            kept.join(" ")
        };
        let settings = TlsSettings {
            mode: mode.unwrap_or(SslMode::Prefer),
            root_cert: root,
        };
        settings.check()?;
        Ok((rest, settings))
    }

    fn check(&self) -> Result<(), StoreError> {
        match (self.mode, &self.root_cert) {
            (SslMode::VerifyCa, None) => Err(StoreError::Invalid(
                "database.url has sslmode=verify-ca without sslrootcert: expected sslrootcert=FILE, the CA certificate(s) that signed the server's certificate"
                    .into(),
            )),
            (SslMode::VerifyCa, Some(RootCerts::System)) => Err(StoreError::Invalid(
                "database.url has sslmode=verify-ca with sslrootcert=system: any certificate from a public CA would pass without a host name check; use verify-full"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// What the driver is told: TLS off, optional or required.
    pub fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    /// Whether the certificate chain is checked (`verify-*`, and `require`
    /// with `sslrootcert`, as libpq does).
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.root_cert.is_some(),
            SslMode::Disable | SslMode::Prefer => false,
        }
    }

    /// What a connection failure message adds, so an operator sees which
    /// check refused the server.
    pub fn describe(&self) -> String {
        let roots = match &self.root_cert {
            Some(RootCerts::File(p)) => format!("sslrootcert={}", p.display()),
            Some(RootCerts::System) | None => "the system's CA certificates".into(),
        };
        match self.mode {
            SslMode::VerifyFull => format!(
                "sslmode=verify-full: the server's certificate must be signed by a CA in {roots} and name the host"
            ),
            _ if self.verifies_chain() => format!(
                "sslmode={}: the server's certificate must be signed by a CA in {roots}",
                self.mode.as_str()
            ),
            mode => format!("sslmode={}", mode.as_str()),
        }
    }

    /// The OpenSSL connector that checks what the mode promises.
    pub fn connector(&self) -> Result<MakeTlsConnector, StoreError> {
        let fail = |e: openssl::error::ErrorStack| {
            StoreError::Invalid(format!("cannot set up TLS for PostgreSQL: {e}"))
        };
        // Loads the system's default verify paths.
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(fail)?;
        if let Some(RootCerts::File(path)) = &self.root_cert {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Invalid(format!(
                    "database.url has sslrootcert={}: cannot read it: {e}",
                    path.display()
                ))
            })?;
            let certs = X509::stack_from_pem(&pem).map_err(|e| {
                StoreError::Invalid(format!(
                    "database.url has sslrootcert={}: not PEM certificates: {e}",
                    path.display()
                ))
            })?;
            // Only these CAs, not the system's too.
            let mut store = X509StoreBuilder::new().map_err(fail)?;
            for cert in certs {
                store.add_cert(cert).map_err(fail)?;
            }
            builder.set_cert_store(store.build());
        }
        let verify = self.verifies_chain();
        builder.set_verify(if verify {
            SslVerifyMode::PEER
        } else {
            SslVerifyMode::NONE
        });
        let check_name = self.mode == SslMode::VerifyFull;
        let mut connector = MakeTlsConnector::new(builder.build());
        connector.set_callback(move |config, _| {
            config.set_verify_hostname(check_name);
            Ok(())
        });
        Ok(connector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_off_the_url() {
        let (rest, s) = TlsSettings::split_url(
            "postgres://u@db:5432/audit?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@db:5432/audit?application_name=x");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(RootCerts::File("/etc/ca.pem".into())));
        assert!(s.verifies_chain());

        let (rest, s) = TlsSettings::split_url("host=db sslmode=require dbname=audit").unwrap();
        assert_eq!(rest, "host=db dbname=audit");
        assert_eq!(s.mode, SslMode::Require);
        assert!(
            !s.verifies_chain(),
            "require alone checks nothing, as libpq"
        );

        let (_, s) = TlsSettings::split_url("postgres://db/audit").unwrap();
        assert_eq!(s.mode, SslMode::Prefer);
        let (_, s) =
            TlsSettings::split_url("postgres://db/a?sslmode=require&sslrootcert=/ca").unwrap();
        assert!(s.verifies_chain(), "require with a root file is verify-ca");
    }

    #[test]
    fn bad_tls_settings_name_the_field_and_value() {
        let e = TlsSettings::split_url("postgres://db/a?sslmode=verify").unwrap_err();
        assert!(e.to_string().contains("sslmode=\"verify\""), "{e}");
        let e = TlsSettings::split_url("postgres://db/a?sslmode=verify-ca").unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let s = TlsSettings::split_url("postgres://db/a?sslmode=verify-full&sslrootcert=/nope.pem")
            .unwrap()
            .1;
        let e = s.connector().err().expect("missing file");
        assert!(e.to_string().contains("/nope.pem"), "{e}");
    }
}
