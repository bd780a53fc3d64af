//! A test certificate authority made with the `openssl` command: a CA
//! certificate and server certificates it signs, for tests that check TLS
//! verification (a right CA and name connect; a wrong one is refused).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::HarnessError;

/// A CA in `dir`: `NAME-ca.pem` and its key; certificates it issues land
/// beside it.
pub struct TestCa {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), HarnessError> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            HarnessError(format!(
                "cannot run openssl ({e}); install it with `apt-get install openssl`"
            ))
        })?;
    if !out.status.success() {
        return Err(HarnessError(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl TestCa {
    /// A new self-signed CA named `name` (its subject CN), valid for a day.
    pub fn new(dir: &Path, name: &str) -> Result<TestCa, HarnessError> {
        let stem: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let cert = dir.join(format!("{stem}-ca.pem"));
        let key = dir.join(format!("{stem}-ca.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &key.to_string_lossy(),
                "-out",
                &cert.to_string_lossy(),
            ],
        )?;
        Ok(TestCa {
            dir: dir.to_path_buf(),
            cert,
            key,
        })
    }

    /// The CA certificate (PEM), what a client trusts.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// Issues `NAME.pem` and `NAME.key` (mode 0600) in the CA's directory for
    /// subject `cn` with these subject alternative names (`DNS:host`,
    /// `IP:127.0.0.1`); returns (certificate, key).
    pub fn issue(
        &self,
        name: &str,
        cn: &str,
        alt_names: &[&str],
    ) -> Result<(PathBuf, PathBuf), HarnessError> {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
                alt_names.join(",")
            ),
        )
        .map_err(|e| HarnessError(e.to_string()))?;
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &key.to_string_lossy(),
                "-out",
                &csr.to_string_lossy(),
            ],
        )?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr.to_string_lossy(),
                "-CA",
                &self.cert.to_string_lossy(),
                "-CAkey",
                &self.key.to_string_lossy(),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext.to_string_lossy(),
                "-out",
                &cert.to_string_lossy(),
            ],
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| HarnessError(e.to_string()))?;
        Ok((cert, key))
    }
}
