//! A real SMTP server for tests: Debian's `python3-aiosmtpd` on a free
//! loopback port, with a small handler that saves every accepted message (as
//! JSON: envelope, decoded headers, MIME parts, raw bytes) to a directory, and
//! answers a configured reply for chosen recipients (a 4xx or 5xx), so tests
//! can check delivery and the classification of failures against the real
//! protocol rather than a mock. Killable and restartable on the same port, like
//! [`super::RedisServer`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{free_port, unique, HarnessError};

/// The aiosmtpd handler: one module written next to the messages it saves.
/// `handle_RCPT` reads `replies.json` on every recipient, so a test changes the
/// answer without restarting the server; `handle_DATA` parses the message with
/// Python's `email` package (so tests need no MIME parser) and writes one JSON
/// file per message, through a rename, so a reader never sees half a file.
const HANDLER: &str = r#"
import email, json, os, time
from email import policy


class Handler:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.n = 0

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("the output directory is required")
        return cls(args[0])

    def _replies(self):
        try:
            with open(os.path.join(self.out_dir, "replies.json")) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self._replies().get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content
        msg = email.message_from_bytes(raw, policy=policy.default)
        parts = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            try:
                body = part.get_content()
            except Exception as e:
                body = "<undecodable: %s>" % e
            if isinstance(body, bytes):
                body = body.decode("utf-8", "replace")
            parts.append({"content_type": part.get_content_type(), "body": body})
        headers = []
        for k, v in msg.items():
            try:
                headers.append([k, str(v)])
            except Exception:
                headers.append([k, "<unparseable>"])
        record = {
            "mail_from": envelope.mail_from,
            "recipients": list(envelope.rcpt_tos),
            "headers": headers,
            "raw_headers": [[k, v] for k, v in msg.raw_items()],
            "parts": parts,
            "raw": raw.decode("utf-8", "replace"),
        }
        self.n += 1
        name = "%020d-%06d" % (time.time_ns(), self.n)
        tmp = os.path.join(self.out_dir, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(self.out_dir, "messages", name + ".json"))
        return "250 Message accepted for delivery"
"#;

/// The handler module's name (the file is `<name>.py` in the server's directory).
const HANDLER_MODULE: &str = "taskstream_smtp_sink";

/// An `aiosmtpd` child process on a free loopback port, killed on drop.
pub struct SmtpServer {
    port: u16,
    dir: PathBuf,
    python: PathBuf,
    tls: SmtpTls,
    child: Option<Child>,
}

/// How the test server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP.
    None,
    /// STARTTLS offered and required before `MAIL` (lettre's `?tls=required`).
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// One message the server accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The envelope recipients the server accepted (`RCPT TO`).
    pub recipients: Vec<String>,
    /// Header fields in order, values decoded (RFC 2047) and unfolded.
    pub headers: Vec<(String, String)>,
    /// Header fields in order, values as sent.
    pub raw_headers: Vec<(String, String)>,
    /// The leaf MIME parts, transfer encoding undone.
    pub parts: Vec<MailPart>,
    /// The whole message as received.
    pub raw: String,
}

/// One leaf MIME part of a [`ReceivedMail`].
#[derive(Debug, Clone, Deserialize)]
pub struct MailPart {
    pub content_type: String,
    pub body: String,
}

impl ReceivedMail {
    /// The first header of that name (case-insensitive), decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name, decoded.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body of the first part of that content type (`text/plain`, `text/html`).
    pub fn part(&self, content_type: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.content_type.eq_ignore_ascii_case(content_type))
            .map(|p| p.body.as_str())
    }
}

impl SmtpServer {
    /// Starts a plain server and waits until it greets.
    pub fn start() -> Result<Self, HarnessError> {
        Self::launch(SmtpTls::None)
    }

    /// Starts a server speaking TLS as `tls` says, with a self-signed
    /// certificate for `127.0.0.1` and `localhost` made with the `openssl`
    /// command ([`SmtpServer::certificate`]; a client must be told to trust it).
    pub fn start_tls(tls: SmtpTls) -> Result<Self, HarnessError> {
        Self::launch(tls)
    }

    fn launch(tls: SmtpTls) -> Result<Self, HarnessError> {
        let dir = std::env::temp_dir().join(unique("taskstream-smtp"));
        std::fs::create_dir_all(dir.join("messages")).map_err(|e| HarnessError(e.to_string()))?;
        std::fs::write(dir.join(format!("{HANDLER_MODULE}.py")), HANDLER)
            .map_err(|e| HarnessError(e.to_string()))?;
        let mut server = SmtpServer {
            port: free_port()?,
            dir,
            python: find_python()?,
            tls,
            child: None,
        };
        if tls != SmtpTls::None {
            server.make_certificate()?;
        }
        server.spawn()?;
        Ok(server)
    }

    /// A self-signed `cert.pem`/`key.pem` in the server's directory, valid for
    /// `127.0.0.1` and `localhost`.
    fn make_certificate(&self) -> Result<(), HarnessError> {
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .args(["-keyout", "key.pem", "-out", "cert.pem"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| {
                HarnessError(format!(
                    "cannot run openssl ({e}); install it with `apt-get install openssl`"
                ))
            })?;
        if !status.success() {
            return Err(HarnessError(
                "openssl could not make a test certificate".into(),
            ));
        }
        Ok(())
    }

    /// The server's certificate (PEM), when it speaks TLS.
    pub fn certificate(&self) -> Option<PathBuf> {
        (self.tls != SmtpTls::None).then(|| self.dir.join("cert.pem"))
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        // aiosmtpd's own log goes to a file in the server's directory: a test
        // that fails on the protocol can read it there.
        let log = std::fs::File::create(self.dir.join("aiosmtpd.log"))
            .map_err(|e| HarnessError(e.to_string()))?;
        let mut command = Command::new(&self.python);
        command.args(["-m", "aiosmtpd", "-n"]);
        match self.tls {
            SmtpTls::None => {}
            SmtpTls::StartTls => {
                command.args(["--tlscert", "cert.pem", "--tlskey", "key.pem"]);
            }
            SmtpTls::Implicit => {
                command.args(["--smtpscert", "cert.pem", "--smtpskey", "key.pem"]);
            }
        }
        let child = command
            .args(["-l", &format!("127.0.0.1:{}", self.port)])
            .args(["-c", &format!("{HANDLER_MODULE}.Handler")])
            .arg(&self.dir)
            .current_dir(&self.dir)
            .env("PYTHONPATH", &self.dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                HarnessError(format!(
                    "cannot start aiosmtpd ({e}); install it with `apt-get install python3-aiosmtpd`"
                ))
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.greets() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log =
                    std::fs::read_to_string(self.dir.join("aiosmtpd.log")).unwrap_or_default();
                return Err(HarnessError(format!("aiosmtpd exited ({status}): {log}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HarnessError(format!(
            "aiosmtpd on port {} did not start",
            self.port
        )))
    }

    /// Whether the server answers a connection with its `220` greeting (with
    /// implicit TLS, whether it accepts connections: the greeting is encrypted).
    fn greets(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls == SmtpTls::Implicit {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 4];
        let greeted = s.read_exact(&mut buf).is_ok() && buf.starts_with(b"220");
        let _ = s.write_all(b"QUIT\r\n");
        greeted
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// lettre's URL form for this server: `smtp://127.0.0.1:PORT` (plain),
    /// `smtp://127.0.0.1:PORT?tls=required` (STARTTLS), `smtps://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match self.tls {
            SmtpTls::None => format!("smtp://127.0.0.1:{}", self.port),
            SmtpTls::StartTls => format!("smtp://127.0.0.1:{}?tls=required", self.port),
            SmtpTls::Implicit => format!("smtps://127.0.0.1:{}", self.port),
        }
    }

    /// The directory the server keeps its handler, log and messages in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Answers `reply` (a full SMTP reply line such as `550 5.1.1 no such
    /// user` or `451 4.3.0 try again later`) to `RCPT TO:<recipient>` from now
    /// on; an empty `reply` accepts that recipient again.
    pub fn reply_to_recipient(&self, recipient: &str, reply: &str) -> Result<(), HarnessError> {
        let path = self.dir.join("replies.json");
        let mut replies: serde_json::Map<String, serde_json::Value> =
            match std::fs::read_to_string(&path) {
                Ok(text) => serde_json::from_str(&text).map_err(|e| HarnessError(e.to_string()))?,
                Err(_) => serde_json::Map::new(),
            };
        let key = recipient.to_ascii_lowercase();
        if reply.is_empty() {
            replies.remove(&key);
        } else {
            replies.insert(key, serde_json::Value::String(reply.to_string()));
        }
        let tmp = self.dir.join("replies.json.tmp");
        let text = serde_json::to_string(&replies).map_err(|e| HarnessError(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| HarnessError(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| HarnessError(e.to_string()))
    }

    /// Every message accepted so far, oldest first (kept across restarts).
    pub fn messages(&self) -> Result<Vec<ReceivedMail>, HarnessError> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.join("messages"))
            .map_err(|e| HarnessError(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).map_err(|e| HarnessError(e.to_string()))?;
                serde_json::from_str(&text)
                    .map_err(|e| HarnessError(format!("{}: {e}", p.display())))
            })
            .collect()
    }

    /// Waits until at least `n` messages were accepted, or `timeout` passed;
    /// returns what is there either way.
    pub fn wait_for_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedMail>, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages()?;
            if messages.len() >= n || Instant::now() > deadline {
                return Ok(messages);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: like a crash or a network cut).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port; messages received so far are kept.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Python that can import `aiosmtpd`: `TASKSTREAM_TEST_PYTHON`, else
/// Debian's `/usr/bin/python3` (where `python3-aiosmtpd` installs it, even
/// when another `python3` comes first on `PATH`), else `python3`.
fn find_python() -> Result<PathBuf, HarnessError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("TASKSTREAM_TEST_PYTHON") {
        candidates.push(p.into());
    }
    candidates.push("/usr/bin/python3".into());
    candidates.push("python3".into());
    for python in candidates {
        let imports = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if imports {
            return Ok(python);
        }
    }
    Err(HarnessError(
        "no python3 can import aiosmtpd; install it with `apt-get install python3-aiosmtpd`".into(),
    ))
}
