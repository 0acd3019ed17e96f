#!/usr/bin/env python3
"""Offline checks of the container and Kubernetes files (run by tests/suite/deploy.rs).

  tests/clients/.venv/bin/python deploy/check.py [--steno target/release/steno]

1. Every manifest in deploy/*.yaml passes kubernetes-validate --strict (the API schemas of
   Kubernetes 1.31, bundled in the package: no cluster needed).
2. They agree with each other and with steno: probes hit /health on the container port that
   `serve --listen` binds; the Service and HPA point at the Deployment; the Indexed Job's
   `--shard $(SHARD_INDEX)/N` has N == completions and SHARD_INDEX comes from the completion index.
3. Every COPY source of the Dockerfile exists: build-context paths in the repository, build-stage
   paths (/src/...) in the tree a build leaves (the binary: --steno), and none is excluded by
   .dockerignore.
Prints what it checked; exits 1 with the reasons on any failure.
"""

import argparse
import fnmatch
import glob
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUBERNETES = "1.31.0"
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def manifests():
    docs = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def validate():
    files = sorted(glob.glob(os.path.join(ROOT, "deploy", "*.yaml")))
    check(files, "no deploy/*.yaml")
    exe = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    run = subprocess.run([exe, "--strict", "-k", KUBERNETES, *files], capture_output=True, text=True)
    print(run.stdout.strip())
    check(run.returncode == 0, f"kubernetes-validate failed:\n{run.stdout}{run.stderr}")


def consistency(docs):
    deploy = docs.get(("Deployment", "steno"))
    check(deploy is not None, "no Deployment steno")
    if deploy:
        pod = deploy["spec"]["template"]["spec"]
        container = pod["containers"][0]
        args = container["args"]
        check(args[0] == "serve", f"Deployment runs {args[0]}, not serve")
        listen = args[args.index("--listen") + 1]
        port = int(listen.rsplit(":", 1)[1])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        check(port in ports.values(), f"--listen {listen} is not a container port {ports}")
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            check(get["path"] == "/health", f"{probe} path {get['path']}")
            check(ports.get(get["port"], get["port"]) == port, f"{probe} port {get['port']}")
        check(pod["securityContext"]["runAsNonRoot"], "the pod may run as root")
        labels = deploy["spec"]["selector"]["matchLabels"]
        service = docs.get(("Service", "steno"))
        check(service is not None and service["spec"]["selector"] == labels, "Service does not select the pods")
        hpa = docs.get(("HorizontalPodAutoscaler", "steno"))
        check(
            hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "steno"
            and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu",
            "HPA does not scale the Deployment on CPU",
        )
    job = docs.get(("Job", "steno-batch"))
    check(job is not None, "no Job steno-batch")
    if job:
        spec = job["spec"]
        check(spec["completionMode"] == "Indexed", "the Job is not Indexed")
        container = spec["template"]["spec"]["containers"][0]
        args = container["args"]
        check(args[0] == "transcribe", "the Job does not run transcribe")
        shard = args[args.index("--shard") + 1]
        check(shard == f"$(SHARD_INDEX)/{spec['completions']}", f"--shard {shard} vs completions {spec['completions']}")
        env = {e["name"]: e for e in container.get("env", [])}
        path = env.get("SHARD_INDEX", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
        check("job-completion-index" in path, f"SHARD_INDEX comes from {path!r}")


def dockerfile(steno):
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        lines = f.read().replace("\\\n", " ").splitlines()
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ignored = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    copies = 0
    for line in lines:
        words = line.split()
        if not words or words[0] != "COPY":
            continue
        from_build = any(w.startswith("--from=") for w in words)
        sources = [w for w in words[1:-1] if not w.startswith("--")]
        for src in sources:
            copies += 1
            if from_build:
                check(src.startswith("/src/"), f"build-stage COPY from {src}, not /src/")
                rel = src[len("/src/"):]
                local = steno if rel == "target/release/steno" else os.path.join(ROOT, rel)
                check(os.path.exists(local), f"COPY --from=build {src}: {local} does not exist after a build")
            else:
                check(os.path.exists(os.path.join(ROOT, src)), f"COPY {src}: not in the repository")
                hit = [p for p in ignored if fnmatch.fnmatch(src, p) or src.startswith(p.rstrip("/") + "/")]
                check(not hit, f"COPY {src} is excluded by .dockerignore ({hit})")
    check(copies >= 8, f"only {copies} COPY sources found")
    check(any(l.startswith("USER ") and l.split()[1] not in ("root", "0") for l in lines), "no non-root USER")
    check(any(l.startswith("HEALTHCHECK") and "/health" in l for l in lines), "no HEALTHCHECK on /health")
    print(f"Dockerfile: {copies} COPY sources present")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steno", default=os.path.join(ROOT, "target", "release", "steno"))
    args = ap.parse_args()
    validate()
    docs = manifests()
    consistency(docs)
    print(f"manifests: {len(docs)} resources consistent: {sorted(k for k, _ in docs)}")
    dockerfile(args.steno)
    if problems:
        print("\n".join(["deploy/check.py found problems:", *problems]), file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
