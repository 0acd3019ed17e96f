//! The container and Kubernetes files, checked offline by `deploy/check.py` (in the clients'
//! venv): the manifests against Kubernetes 1.31's API schemas (strict), their agreement with
//! each other and with steno's flags, and the Dockerfile's COPY sources against a built tree.

use std::process::Command;

use super::common::root;

#[test]
fn manifests_and_dockerfile_pass_the_offline_checks() {
    let python = root().join("tests/clients/.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `tests/clients/provision`",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root().join("deploy/check.py"))
        .args(["--steno", env!("CARGO_BIN_EXE_steno")])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "deploy/check.py failed:\n{stdout}\n{stderr}");
    for resource in [
        "deployment/steno",
        "service/steno",
        "horizontalpodautoscaler/steno",
        "job/steno-batch",
    ] {
        assert!(
            stdout.contains(&format!("passed for resource {resource}")),
            "{resource} not validated:\n{stdout}"
        );
    }
}
