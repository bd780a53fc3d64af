//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary
//! directory, `postgres` on a free loopback port, optionally with `ssl=on`
//! and a certificate from a [`TestCa`]; pausable (SIGSTOP: a server that
//! stops answering) and killed on drop.
//!
//! Uses the Debian server binaries (`/usr/lib/postgresql/*/bin`, package
//! `postgresql`). PostgreSQL refuses to run as root, so under root (CI) the
//! cluster belongs to, and runs as, the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::TestCa;
use super::{ended, free_port, on_free_ports, unique, HarnessError};

/// A running throwaway cluster. Its superuser is `postgres` (trust auth on
/// loopback), with the default database `postgres`.
pub struct PostgresServer {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Who runs it: (uid, gid) when we are root.
    user: Option<(u32, u32)>,
    child: Option<Child>,
    /// The server certificate's CA, with `ssl=on`.
    ca: Option<TestCa>,
}

/// The newest installed server's `bin` directory.
fn server_bin() -> Result<PathBuf, HarnessError> {
    let missing = || {
        HarnessError(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql`"
                .into(),
        )
    };
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| missing())?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(missing)
}

/// uid and gid of the `postgres` user.
fn postgres_user() -> Result<(u32, u32), HarnessError> {
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam with a valid C string; the result is read at once,
    // before any other passwd call in this thread.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(HarnessError(
            "running as root needs the `postgres` user (package postgresql) to run the test cluster"
                .into(),
        ));
    }
    // SAFETY: non-null result of getpwnam.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown_all(path: &Path, (uid, gid): (u32, u32)) -> Result<(), HarnessError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| HarnessError(format!("chown {}: {e}", path.display())))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| HarnessError(e.to_string()))? {
            let entry = entry.map_err(|e| HarnessError(e.to_string()))?;
            chown_all(&entry.path(), (uid, gid))?;
        }
    }
    Ok(())
}

/// Pids of the children of `pid` (the postmaster's backends and helpers).
fn children_of(pid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let child: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid …": comm may hold spaces and parentheses.
            let after = stat.rsplit_once(')')?.1;
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

impl PostgresServer {
    /// A cluster without TLS.
    pub fn start() -> Result<Self, HarnessError> {
        Self::launch(false, free_port()?)
    }

    /// A cluster with `ssl=on` and a server certificate for `localhost`,
    /// `127.0.0.1` and `db.test` signed by a fresh [`TestCa`]
    /// ([`PostgresServer::ca`]).
    pub fn start_tls() -> Result<Self, HarnessError> {
        Self::launch(true, free_port()?)
    }

    /// A cluster tried first on `port`.
    fn launch(tls: bool, port: u16) -> Result<Self, HarnessError> {
        let bin = server_bin()?;
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            Some(postgres_user()?)
        } else {
            None
        };
        let dir = std::env::temp_dir().join(unique("taskstream-postgres"));
        std::fs::create_dir_all(dir.join("tls")).map_err(|e| HarnessError(e.to_string()))?;
        let mut server = PostgresServer {
            port,
            dir,
            bin,
            user,
            child: None,
            ca: None,
        };
        if tls {
            let ca = TestCa::new(&server.dir.join("tls"), "taskstream test CA")?;
            ca.issue(
                "server",
                "db.test",
                &["DNS:db.test", "DNS:localhost", "IP:127.0.0.1"],
            )?;
            server.ca = Some(ca);
        }
        if let Some(user) = server.user {
            chown_all(&server.dir, user)?;
        }
        let status = server
            .command("initdb")
            .args(["-D", "data", "-U", "postgres", "-A", "trust", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| HarnessError(format!("cannot run initdb: {e}")))?;
        if !status.success() {
            return Err(HarnessError(format!(
                "initdb failed in {}",
                server.dir.display()
            )));
        }
        on_free_ports(
            &mut server,
            Self::spawn,
            |s| s.child.is_none(),
            |s| {
                s.port = free_port()?;
                Ok(())
            },
        )?;
        Ok(server)
    }

    /// A command from the server's `bin`, run in its directory as its user.
    fn command(&self, name: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(self.bin.join(name));
        c.current_dir(&self.dir);
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let mut c = self.command("postgres");
        c.args(["-D", "data", "-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        if self.ca.is_some() {
            let tls = self.dir.join("tls");
            c.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    tls.join("server.pem").display()
                ))
                .arg("-c")
                .arg(format!("ssl_key_file={}", tls.join("server.key").display()));
        }
        let log = std::fs::File::create(self.dir.join("server.log"))
            .map_err(|e| HarnessError(e.to_string()))?;
        let child = c
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| HarnessError(format!("cannot start postgres: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = ended(&mut self.child) {
                return Err(HarnessError(format!(
                    "postgres on port {} exited ({status}): {}",
                    self.port,
                    self.log()
                )));
            }
            // Ours, not another test's server on a port taken first.
            let ready = self.pid_file_says_ready()
                && self
                    .command("pg_isready")
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                    .status()
                    .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(HarnessError(format!(
            "postgres on port {} did not start: {}",
            self.port,
            self.log()
        )))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, plus `params`
    /// (`sslmode=…&…`) when given.
    pub fn url(&self, params: &str) -> String {
        let base = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if params.is_empty() {
            base
        } else {
            format!("{base}?{params}")
        }
    }

    /// The CA that signed the server's certificate ([`PostgresServer::start_tls`]).
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// Whether `postmaster.pid` names our server and says it accepts
    /// connections (its first line is the pid, its eighth the status).
    fn pid_file_says_ready(&self) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        let Ok(file) = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = file.lines().collect();
        lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(child.id())
            && lines.get(7).is_some_and(|l| l.trim() == "ready")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn signal_all(&self, sig: i32) {
        let Some(child) = &self.child else { return };
        let pid = child.id();
        let mut pids = children_of(pid);
        pids.push(pid as i32);
        for p in pids {
            // SAFETY: kill(2) on the cluster's own processes.
            unsafe { libc::kill(p, sig) };
        }
    }

    /// Stops every process of the cluster (SIGSTOP): connections stay open
    /// and new ones are accepted by the kernel, but nothing answers.
    pub fn pause(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    /// Lets a paused cluster run again (SIGCONT).
    pub fn resume(&self) {
        self.signal_all(libc::SIGCONT);
    }

    /// Stops the cluster at once (immediate shutdown).
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster whose port another server holds starts on another port,
    /// and the harness waits for its own postmaster, not the other one.
    #[test]
    fn a_taken_port_moves_the_cluster_to_another() {
        let first = PostgresServer::start().expect("postgres starts");
        let second = PostgresServer::launch(false, first.port()).expect("starts elsewhere");
        assert_ne!(second.port(), first.port());
        assert!(second.pid_file_says_ready());
        assert!(
            second.log().contains(&second.port().to_string()),
            "{}",
            second.log()
        );
    }
}
