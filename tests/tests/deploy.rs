//! `deploy/` against the code: every flag and environment variable the Kubernetes manifests
//! give a container is one its binary accepts (read from the binary's own `--help`), the ports
//! of arguments, containers, probes and Services agree, the agents' grace period outlasts their
//! drain, the sweeps in the ConfigMap are the shipped ones, and the Dockerfiles follow the
//! rules (pinned bases, a non-root user, no secrets, labels, build instructions at the top, a
//! binary without debuginfo).
//! Drift between `deploy/` and the code fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ndhtl_system_tests::{coordinator_binary, ndhtl_binary, workspace_root};
use serde::Deserialize as _;
use serde_yaml::Value;

/// Every YAML document of every manifest under `deploy/k8s` (kustomizations left out).
fn manifests() -> Vec<(PathBuf, Value)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("deploy/k8s") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&workspace_root().join("deploy/k8s"), &mut files);
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        if file.components().any(|c| c.as_os_str() == "sweeps")
            || file.file_name().is_some_and(|n| n == "kustomization.yaml")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("manifest");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                documents.push((file.clone(), value));
            }
        }
    }
    assert!(
        documents.len() >= 8,
        "found only {} manifests",
        documents.len()
    );
    documents
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn kind_and_name(document: &Value) -> (String, String) {
    (text(&document["kind"]), text(&document["metadata"]["name"]))
}

/// The containers (init containers too) of a workload, with the workload's name.
fn containers(documents: &[(PathBuf, Value)]) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    for (_, document) in documents {
        let (kind, name) = kind_and_name(document);
        if !["Deployment", "StatefulSet", "Job"].contains(&kind.as_str()) {
            continue;
        }
        let pod = &document["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            if let Some(containers) = pod[list].as_sequence() {
                for container in containers {
                    out.push((name.clone(), container.clone(), pod.clone()));
                }
            }
        }
    }
    out
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| items.iter().map(text).collect())
        .unwrap_or_default()
}

/// `--help` of a binary's subcommand, as the binary prints it.
fn help(binary: &Path, words: &[String]) -> String {
    let output = Command::new(binary)
        .args(words)
        .arg("--help")
        .output()
        .expect("running --help");
    assert!(
        output.status.success(),
        "{} {} --help failed: {}",
        binary.display(),
        words.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 help")
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {address}"))
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|arg| arg.strip_prefix(&format!("{flag}=")))
}

#[test]
fn every_flag_and_variable_in_the_manifests_is_one_the_binaries_accept() {
    let documents = manifests();
    let mut checked = 0;
    for (workload, container, _) in containers(&documents) {
        let command = strings(&container["command"]);
        let args = strings(&container["args"]);
        let binary_name = Path::new(&command[0])
            .file_name()
            .expect("a command")
            .to_string_lossy()
            .to_string();
        let binary = match binary_name.as_str() {
            "ndhtl" => ndhtl_binary(),
            "ndhtl-coordinator" => coordinator_binary(),
            other => panic!("{workload}: unknown binary {other}"),
        };
        // Subcommands and positionals come first, flags after.
        let words: Vec<String> = args
            .iter()
            .take_while(|arg| !arg.starts_with('-'))
            .cloned()
            .collect();
        let help = help(binary, &words);
        for arg in args.iter().filter(|arg| arg.starts_with("--")) {
            let flag = arg.split('=').next().expect("a flag");
            let listed = [" ", "\n", "=", " <"]
                .iter()
                .any(|end| help.contains(&format!("{flag}{end}")));
            assert!(
                listed,
                "{workload}/{}: `{flag}` is not a flag of `{binary_name} {}`",
                text(&container["name"]),
                words.join(" ")
            );
            checked += 1;
        }
        for variable in container["env"].as_sequence().into_iter().flatten() {
            let name = text(&variable["name"]);
            // Logging is read by every binary's main, not by a flag.
            let read = if name == "NDHTL_LOG" {
                let main = if binary_name == "ndhtl" {
                    "agent/src/main.rs"
                } else {
                    "coordinator/src/main.rs"
                };
                std::fs::read_to_string(workspace_root().join(main))
                    .expect("main.rs")
                    .contains("\"NDHTL_LOG\"")
            } else {
                help.contains(&format!("[env: {name}="))
            };
            assert!(
                read,
                "{workload}: `{name}` is read by no flag of `{binary_name} {}`",
                words.join(" ")
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} flags and variables checked");
}

#[test]
fn ports_probes_and_services_agree() {
    let documents = manifests();
    let services: BTreeMap<String, &Value> = documents
        .iter()
        .filter(|(_, d)| text(&d["kind"]) == "Service")
        .map(|(_, d)| (text(&d["metadata"]["name"]), d))
        .collect();
    let service = services["ndhtl-coordinator"];
    let service_port = |name: &str| -> (u16, String) {
        let port = service["spec"]["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|p| text(&p["name"]) == name)
            .unwrap_or_else(|| panic!("the Service has no {name} port"));
        (
            port["port"].as_u64().expect("port") as u16,
            text(&port["targetPort"]),
        )
    };
    let all = containers(&documents);
    let (_, coordinator, _) = all
        .iter()
        .find(|(workload, ..)| workload == "ndhtl-coordinator")
        .expect("the coordinator");
    let args = strings(&coordinator["args"]);
    let grpc = port_of(flag_value(&args, "--listen").expect("--listen"));
    let http = port_of(flag_value(&args, "--http-listen").expect("--http-listen"));
    let container_port = |name: &str| -> u16 {
        coordinator["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|p| text(&p["name"]) == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}")) as u16
    };
    assert_eq!(
        container_port("grpc"),
        grpc,
        "--listen vs containerPort grpc"
    );
    assert_eq!(
        container_port("http"),
        http,
        "--http-listen vs containerPort http"
    );
    assert_eq!(service_port("grpc").1, "grpc");
    assert_eq!(service_port("http").1, "http");
    for probe in ["startupProbe", "readinessProbe"] {
        assert_eq!(
            coordinator[probe]["grpc"]["port"].as_u64(),
            Some(grpc.into()),
            "{probe} probes the gRPC health service"
        );
    }
    assert_eq!(
        coordinator["livenessProbe"]["httpGet"]["port"].as_u64(),
        Some(http.into())
    );
    assert_eq!(
        text(&coordinator["livenessProbe"]["httpGet"]["path"]),
        "/healthz"
    );
    let state_dir = flag_value(&args, "--state-dir").expect("--state-dir");
    assert!(
        coordinator["volumeMounts"]
            .as_sequence()
            .expect("mounts")
            .iter()
            .any(|m| text(&m["mountPath"]) == state_dir),
        "the state folder is on the volume"
    );

    // Every client of the coordinator points at the Service's gRPC port.
    let expected = format!("http://ndhtl-coordinator:{}", service_port("grpc").0);
    let mut clients = 0;
    for (workload, container, pod) in &all {
        let args = strings(&container["args"]);
        let from_env = container["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| text(&v["name"]) == "NDHTL_COORDINATOR")
            .map(|v| text(&v["value"]));
        let address = flag_value(&args, "--coordinator")
            .map(str::to_string)
            .or(from_env);
        if let Some(address) = address {
            assert_eq!(address, expected, "{workload}");
            clients += 1;
        }
        if args.first().is_some_and(|a| a == "agent") {
            let drain: u64 = flag_value(&args, "--drain-secs")
                .expect("--drain-secs")
                .parse()
                .expect("seconds");
            let grace = pod["terminationGracePeriodSeconds"]
                .as_u64()
                .expect("grace");
            assert!(
                grace > drain,
                "{workload}: grace {grace} s ≤ drain {drain} s"
            );
        }
    }
    assert_eq!(clients, 3, "two agent Deployments and the submit Job");
}

#[test]
fn the_configmap_sweeps_are_the_shipped_ones() {
    let root = workspace_root();
    let copies = std::fs::read_dir(root.join("deploy/k8s/base/sweeps")).expect("sweeps");
    let mut count = 0;
    for entry in copies {
        let copy = entry.expect("entry").path();
        let name = copy.file_name().expect("name");
        let original = root.join("sweeps").join(name);
        assert_eq!(
            std::fs::read_to_string(&copy).expect("copy"),
            std::fs::read_to_string(&original)
                .unwrap_or_else(|_| panic!("{} has no original", copy.display())),
            "{} drifted from {}: copy it again",
            copy.display(),
            original.display()
        );
        count += 1;
    }
    assert!(count >= 2);
    let job = std::fs::read_to_string(root.join("deploy/k8s/submit/submit-job.yaml")).unwrap();
    let sweep = job
        .lines()
        .find_map(|l| l.trim().strip_prefix("- /sweeps/"))
        .expect("the Job submits a sweep file");
    assert!(root.join("deploy/k8s/base/sweeps").join(sweep).exists());
}

#[test]
fn dockerfiles_pin_their_bases_run_as_non_root_and_hold_no_secrets() {
    let dir = workspace_root().join("deploy/docker");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/docker")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".Dockerfile"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "coordinator, CPU agent, GPU agent");
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).expect("Dockerfile");
        assert!(
            text.contains("docker build -f deploy/docker/"),
            "{name}: says how to build it"
        );
        let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        let aliases: Vec<&str> = stages
            .iter()
            .filter_map(|l| l.split(" AS ").nth(1))
            .map(str::trim)
            .collect();
        assert!(stages.len() >= 2, "{name}: multi-stage");
        for stage in &stages {
            let image = stage.split_whitespace().nth(1).expect("an image");
            if aliases.contains(&image) {
                continue;
            }
            let tag = image.rsplit_once(':').map(|(_, tag)| tag);
            assert!(
                image.contains("@sha256:")
                    || tag.is_some_and(|t| t != "latest" && !t.contains('/')),
                "{name}: base image `{image}` is not pinned"
            );
        }
        let last_stage = text.rsplit("\nFROM ").next().expect("a final stage");
        let user = last_stage
            .lines()
            .filter_map(|l| l.strip_prefix("USER "))
            .next_back()
            .unwrap_or_else(|| panic!("{name}: the final stage sets no USER"));
        let uid = user.split(':').next().unwrap().trim();
        assert!(uid != "root" && uid != "0", "{name}: runs as root");
        for line in text.lines().map(str::trim) {
            let upper = line.to_uppercase();
            if upper.starts_with("ENV ") || upper.starts_with("ARG ") {
                for word in ["TOKEN", "PASSWORD", "SECRET", "PRIVATE_KEY", "API_KEY"] {
                    assert!(!upper.contains(word), "{name}: a secret in a layer: {line}");
                }
            }
            if upper.starts_with("COPY ") || upper.starts_with("ADD ") {
                for suffix in [".PEM", ".KEY", "ID_RSA", ".P12"] {
                    assert!(
                        !upper.contains(suffix),
                        "{name}: key material copied: {line}"
                    );
                }
            }
        }
        let builder = text
            .split("\nFROM ")
            .find(|stage| stage.starts_with("chef AS builder"))
            .unwrap_or_else(|| panic!("{name}: no builder stage"));
        assert!(
            builder.contains("ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo"),
            "{name}: the shipped binary keeps the release profile's debuginfo (~290 MB of it)"
        );
        for label in [
            "org.opencontainers.image.version",
            "org.opencontainers.image.source",
        ] {
            assert!(text.contains(label), "{name}: no {label} label");
        }
    }
    let ignore =
        std::fs::read_to_string(workspace_root().join(".dockerignore")).expect(".dockerignore");
    for entry in ["target", ".git", "data"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
}
