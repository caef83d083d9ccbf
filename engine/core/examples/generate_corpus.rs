//! Writes a benchmark corpus: N runbooks of 20 steps each, with params, local facts, library
//! facts, expressions (preconditions, `when`, `verify`, templates) and `needs` that make a DAG.
//!
//! cargo run --release -p runbook-core --example generate_corpus -- DIR [N]

use std::fmt::Write as _;
use std::path::PathBuf;

fn runbook(index: usize) -> String {
    let mut text = format!(
        "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: generated-{index:04}
spec:
  description: Generated runbook {index} for the validate benchmark.
  owner: bench
  params:
    - name: namespace
      pattern: \"[a-z0-9-]+\"
      from: alert.labels.namespace
    - name: replicas
      type: integer
      default: 3
  triggers:
    - alertName: GeneratedAlert{index}
      matchers: ['severity=~\"critical|page\"', 'namespace=~\"team-.*\"']
      cooldown: 15m
  facts:
    - name: app.deployment
      kubernetes: {{kind: Deployment, name: app-{index}, namespace: \"${{params.namespace}}\"}}
      jsonpath: \"{{.status}}\"
    - name: app.pods
      kubernetes: {{kind: Pod, namespace: \"${{params.namespace}}\", labelSelector: \"app=app-{index}\"}}
      jsonpath: \"{{.items[*].status.phase}}\"
    - name: app.healthy
      expr: (app.deployment.readyReplicas ?? 0) >= params.replicas && bench.cluster.healthy
  preconditions:
    - check: app.healthy
    - check: app.pods.len() > 0
  steps:
"
    );
    for step in 0..20 {
        let needs = match step {
            0 => String::new(),
            s if s % 4 == 1 => format!("      needs: [s{}]\n", s - 1),
            s if s % 4 == 2 => format!("      needs: [s{}]\n", s - 2),
            s if s % 4 == 3 => format!("      needs: [s{}, s{}]\n", s - 1, s - 2),
            _ => String::new(),
        };
        let body = match step % 5 {
            0 => format!(
                "      scale: {{name: app-{index}, namespace: \"${{params.namespace}}\", replicas: \"${{params.replicas + {step}}}\"}}\n"
            ),
            1 => format!(
                "      when: app.deployment.replicas > {step}\n      annotate: {{kind: Deployment, name: app-{index}, namespace: \"${{params.namespace}}\", set: {{step-{step}: \"done\"}}}}\n"
            ),
            2 => format!(
                "      patch: {{kind: Deployment, name: app-{index}, namespace: \"${{params.namespace}}\", patch: {{spec: {{paused: false}}}}}}\n"
            ),
            3 => format!(
                "      run: [kubectl, rollout, status, \"deployment/app-{index}\", -n, \"${{params.namespace}}\"]\n      readonly: true\n"
            ),
            _ => "      verify: app.healthy && app.pods.filter(|phase| phase == \"Running\").len() >= params.replicas\n      timeout: 3m\n".to_owned(),
        };
        let _ = write!(text, "    - id: s{step}\n{needs}{body}");
    }
    text.push_str("  rollback: page-oncall\n");
    text
}

const LIBRARY: &str = "apiVersion: runbook.dev/v1alpha1
kind: FactLibrary
metadata:
  name: bench
spec:
  facts:
    - name: bench.cluster.nodes
      kubernetes: {kind: Node}
      jsonpath: \"{.items[*].metadata.name}\"
    - name: bench.cluster.healthy
      expr: bench.cluster.nodes.len() >= 3
";

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/bench-corpus".to_owned()),
    );
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench-library.yaml"), LIBRARY)?;
    for index in 0..count {
        std::fs::write(
            dir.join(format!("generated-{index:04}.yaml")),
            runbook(index),
        )?;
    }
    eprintln!(
        "wrote {count} runbooks and 1 fact library to {}",
        dir.display()
    );
    Ok(())
}
